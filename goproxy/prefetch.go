package goproxy

import (
	"context"
	"errors"
	"fmt"
	"go/version"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"
	"golang.org/x/time/rate"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/httperr"
)

// Defaults of PrefetchOptions.
const (
	// DefaultPrefetchWorkers: a listing of Caddy's build list (go mod
	// download) has ~860 .info and .mod files to prefetch at once, at a
	// round trip or two each.
	DefaultPrefetchWorkers = 16
	DefaultPrefetchDepth   = 10
	// DefaultPrefetchMaxBytes bounds the prefetched bytes no client asked
	// for yet: how far the prefetch may run ahead of the clients. The
	// zips of the versions a real graph selects come to a few hundred
	// MiB (Caddy v2.11.9's: 386 MB).
	DefaultPrefetchMaxBytes = 1 << 30
	// DefaultPrefetchFanOut bounds the prefetches one requested .mod may
	// cause, through all the levels below it.
	DefaultPrefetchFanOut = 1000
	// DefaultPrefetchRequestsPerMinute bounds the prefetches sent upstream
	// per minute, failed ones included: what 16 workers send at ~80 ms an
	// answer. At 6000, a listing of Caddy's build list waited on it.
	DefaultPrefetchRequestsPerMinute = 12000
	// prefetchTreeFailures is how many prefetches below one requested
	// .mod may fail (not found, or any error) before the rest of them are
	// dropped: a go.mod naming thousands of modules that do not exist
	// costs a few requests, not thousands.
	prefetchTreeFailures = 16
	// prefetchUpstreamFailures is how many prefetches in a row may fail
	// with an upstream error (not a not-found) before prefetching from
	// that upstream pauses, for prefetchPauseMin, doubling up to
	// prefetchPauseMax while it keeps failing.
	prefetchUpstreamFailures = 5
	prefetchPauseMin         = 30 * time.Second
	prefetchPauseMax         = 10 * time.Minute
	// prefetchQueue bounds the zips, and the other artifacts, waiting for
	// a prefetch worker; beyond it, prefetches are dropped.
	prefetchQueue = 4096
	// prefetchUnusedFor is how long a prefetched artifact counts against
	// MaxBytes while no client asked for it, and how long a prefetch may
	// wait for room in MaxBytes (parked) before it is dropped.
	prefetchUnusedFor = 10 * time.Minute
	// prefetchParked bounds the prefetches waiting for room in MaxBytes;
	// beyond it, they are dropped.
	prefetchParked = 4096
	// A client's session (mode "selected") ends after prefetchSessionIdle
	// without a request; at most prefetchSessions are followed at once
	// (the least recently active is dropped), holding at most
	// prefetchSessionPaths module paths between them (a few MiB), and
	// each may cause up to prefetchSessionArtifacts prefetches.
	prefetchSessionIdle      = time.Minute
	prefetchSessions         = 256
	prefetchSessionPaths     = 1 << 16
	prefetchSessionArtifacts = 1 << 14
)

// PrefetchOptions configure dependency-aware prefetch: when a .mod is
// fetched, the .mod files of its requirements that the go command will
// read (those below a module whose graph is not pruned) are fetched in the
// background, through the same collapse as client requests, so that the
// go command finds them cached when it walks the module graph. Mode
// "selected" also fetches the .info and .zip of the version a client
// asks first of each module (see clientAsked); mode "zip" those of every
// requirement.
type PrefetchOptions struct {
	// Mode is "off" (the zero value), "mod", "selected" or "zip".
	Mode string
	// Workers bounds the prefetches running at once; DefaultPrefetchWorkers.
	Workers int
	// Depth bounds how many requirement levels below an artifact a client
	// asked for are prefetched; DefaultPrefetchDepth.
	Depth int
	// MaxBytes bounds the bytes prefetched that no client has asked for
	// yet (each counts for up to ten minutes); DefaultPrefetchMaxBytes.
	MaxBytes int64
	// FanOut bounds the prefetches that one .mod a client asked for may
	// cause, its requirements' and theirs down to Depth;
	// DefaultPrefetchFanOut.
	FanOut int
	// RequestsPerMinute bounds the prefetches sent upstream per minute,
	// failed ones included; DefaultPrefetchRequestsPerMinute.
	RequestsPerMinute int
	// Private allows prefetching private modules (fetched from their own
	// sources as any private fetch is); off by default.
	Private bool
}

// prefetchTree is what the prefetches below one .mod a client asked for
// may still cost. Under prefetcher.mu.
type prefetchTree struct {
	left     int // prefetches it may still queue
	failures int
	// inARow: failures counts those since the last prefetch that worked.
	// A client's session (mode "selected") spends its tree on versions
	// whose .mod the client got, across a whole graph, where a few
	// missing zips are no sign of a hostile go.mod.
	inARow bool
}

// spent reports whether the tree may queue or run no more prefetches.
func (t *prefetchTree) spent() bool { return t.left <= 0 || t.failures >= prefetchTreeFailures }

// upstreamHealth is how prefetches from one source (the public or the
// private one) fared lately. Under prefetcher.mu.
type upstreamHealth struct {
	failures int       // upstream errors in a row
	until    time.Time // prefetching from it pauses until then
	pause    time.Duration
}

// errPrefetchBudget ends a fetch that a prefetch started, and no client
// has asked for yet, when its body would not fit the bytes left to
// prefetch: it is dropped before its body is read.
var errPrefetchBudget = errors.New("prefetch budget spent")

// prefetchEstimate is what a prefetch of the kind reserves of MaxBytes
// before it starts; once the upstream gives the body's size, the
// reservation grows to it, or the fetch is dropped.
func prefetchEstimate(k artifact.Kind) int64 {
	switch k {
	case artifact.Zip:
		return 1 << 20
	case artifact.Mod:
		return 16 << 10
	}
	return 1 << 10
}

// prefetchItem is one artifact to prefetch, depth levels below a request.
type prefetchItem struct {
	a     artifact.Artifact
	depth int
	tree  *prefetchTree
}

// unprunedBelow reports whether the go command, having loaded the go.mod
// f with the graph pruning given (unpruned: it was reached through a
// module whose graph is not pruned), loads its requirements' go.mod files
// too, as cmd/go's readModGraph does with the main module at go 1.17 or
// later: a module whose go.mod says go 1.17 or later is pruned (its
// requirements count in the graph but their go.mod files are not read),
// an older one is not, and below an unpruned one nothing is.
func unprunedBelow(f *modfile.File, unpruned bool) bool {
	return unpruned || f.Go == nil || version.Compare("go"+f.Go.Version, "go1.17") < 0
}

// prefetchState is an artifact queued, parked or being prefetched.
type prefetchState struct {
	depth     int
	tree      *prefetchTree
	requested bool  // a client asked for it meanwhile
	reserved  int64 // of MaxBytes, while it is fetched (or queued, once unparked)
}

// parkedPrefetch is a prefetch waiting for room in MaxBytes, which the
// clients make by asking for what was prefetched: the prefetch runs at
// most MaxBytes ahead of them instead of stopping once it got that far.
type parkedPrefetch struct {
	it  prefetchItem
	key string
	at  time.Time
}

type unusedPrefetch struct {
	key  string
	size int64
	at   time.Time
}

// prefetcher runs the prefetches of a Proxy.
type prefetcher struct {
	p        *Proxy
	zips     bool // of every requirement (mode "zip")
	selected bool // of the versions clients select (mode "selected")
	depth    int
	maxBytes int64
	fanOut   int
	private  bool
	pace     pacer             // the upstream request rate
	queue    chan prefetchItem // .info and .mod files
	zipQueue chan prefetchItem // zips, which half the workers at most fetch
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu          sync.Mutex
	idle        *sync.Cond                // signalled when active empties
	active      map[string]*prefetchState // queued or running, by cache key
	unused      map[string]unusedPrefetch // prefetched, not asked for yet
	order       []unusedPrefetch          // unused, oldest first (some already used)
	unusedBytes int64
	reserved    int64                       // of MaxBytes, by the prefetches running
	health      map[bool]*upstreamHealth    // by whether the source is the private one
	sessions    map[string]*prefetchSession // by client address (mode "selected")
	paths       int                         // the module paths the sessions hold
	parked      []parkedPrefetch            // waiting for room in MaxBytes, oldest first (in active too)

	fetched, used, skipped atomic.Int64
}

// pacer paces the prefetches' upstream requests: a *rate.Limiter.
type pacer interface {
	Wait(ctx context.Context) error
	Limit() rate.Limit
}

// newPrefetcher makes the prefetcher of o, which Options.Check has
// checked; nil when off.
func newPrefetcher(p *Proxy, o PrefetchOptions) (*prefetcher, error) {
	if o.Mode == "" || o.Mode == "off" {
		return nil, nil
	}
	perMinute := orDefault(o.RequestsPerMinute, DefaultPrefetchRequestsPerMinute)
	ctx, cancel := context.WithCancel(context.Background())
	pf := &prefetcher{
		p: p, zips: o.Mode == "zip", selected: o.Mode == "selected" || o.Mode == "zip", depth: orDefault(o.Depth, DefaultPrefetchDepth),
		maxBytes: orDefault(o.MaxBytes, DefaultPrefetchMaxBytes), fanOut: orDefault(o.FanOut, DefaultPrefetchFanOut),
		private: o.Private,
		// A burst of a tenth of a minute's requests: a go.mod's
		// requirements go out at once, a graph's walk is paced.
		pace:  rate.NewLimiter(rate.Limit(float64(perMinute)/60), max(1, perMinute/10)),
		queue: make(chan prefetchItem, prefetchQueue), zipQueue: make(chan prefetchItem, prefetchQueue), ctx: ctx, cancel: cancel,
		active: map[string]*prefetchState{}, unused: map[string]unusedPrefetch{},
		health:   map[bool]*upstreamHealth{false: {pause: prefetchPauseMin}, true: {pause: prefetchPauseMin}},
		sessions: map[string]*prefetchSession{},
	}
	pf.idle = sync.NewCond(&pf.mu)
	// Half the workers (at least one) fetch zips too, which cost a
	// hash of their files and a buffer each; the others fetch .info and
	// .mod files alone, so that those a listing or a walk is about to
	// ask for do not wait behind a graph's zips.
	workers := orDefault(o.Workers, DefaultPrefetchWorkers)
	for i := range workers {
		pf.wg.Add(1)
		go pf.work(i < max(1, workers/2))
	}
	return pf, nil
}

// close stops the workers; prefetches in flight are abandoned (their
// fetches, detached, still finish and are stored).
func (pf *prefetcher) close() {
	if pf == nil {
		return
	}
	pf.cancel()
	pf.wg.Wait()
}

// afterMod queues the requirements of a .mod just fetched and verified.
// It never blocks: what does not fit the queue is dropped.
func (pf *prefetcher) afterMod(a artifact.Artifact, data []byte) {
	if pf == nil || a.Kind != artifact.Mod {
		return
	}
	pf.mu.Lock()
	// What is queued was reached through a module whose graph is not
	// pruned: only those are prefetched.
	depth, tree, unpruned := 0, (*prefetchTree)(nil), false
	if st, ok := pf.active[pf.p.key(a)]; ok {
		depth, tree, unpruned = st.depth, st.tree, true
	} else {
		// A .mod a client asked for: the root of a tree of its own,
		// read as a requirement of a main module at go 1.17 or later
		// (pruned), as nearly all are.
		tree = &prefetchTree{left: pf.fanOut}
	}
	spent := tree.spent()
	pf.mu.Unlock()
	if depth >= pf.depth || spent {
		return
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil || !unprunedBelow(f, unpruned) {
		// A pruned module: the go command reads none of its
		// requirements' go.mod files, so none is prefetched.
		return
	}
	kinds := []artifact.Kind{artifact.Mod}
	if pf.zips {
		kinds = append(kinds, artifact.Info, artifact.Zip)
	}
	for _, r := range f.Require {
		if pf.leavesAlone(r.Mod.Path) {
			continue
		}
		for _, k := range kinds {
			ra, err := artifact.New(k, r.Mod.Path, r.Mod.Version)
			if err != nil || !ra.Immutable() {
				break // not a canonical version: nothing to prefetch
			}
			pf.enqueue(prefetchItem{a: ra, depth: depth + 1, tree: tree}) // unpruned below
		}
	}
}

// prefetchSession is what one client asked for lately. Under
// prefetcher.mu.
type prefetchSession struct {
	paths map[string]sessionPath // module paths of its walk of the module graph
	tree  *prefetchTree          // the session's prefetches
	last  time.Time              // its latest request
	whole bool                   // it asked for a zip of a version it did not ask first: a download of the whole graph
	// listing: it asked for the .info of a module at the version its
	// walk selects, other than the first it asked: the walk of the
	// module graph is over, and the go command lists the build list (go
	// mod download, go list -m -json all).
	listing bool
	// Its .mod requests answered, and those not found since the last
	// one that was (see earlyLookup).
	modsFound, modsMissing int
}

// sessionPath is what a session's walk of the module graph holds of one
// module path: the version whose .mod it asked first, the lowest and the
// highest ("" when it asked none), the highest version that the
// requirements of the go.mod files it got name, and the version of a .mod
// it asked to be read whose answer was an error, so that the client asking
// for it again has it read.
type sessionPath struct{ first, min, max, req, unread string }

// selected is the version the go command's minimal version selection
// picks for the path, as far as the walk so far shows: the highest
// version the graph holds, that is, the highest of those it read the
// go.mod of and those their requirements name (in a pruned module's go.mod
// too, whose requirements' go.mod files it does not read).
func (sp sessionPath) selected() string {
	if semver.Compare(sp.req, sp.max) > 0 {
		return sp.req
	}
	return sp.max
}

// clientAsked follows the .mod, .info and .zip requests of a client (by
// its address). In mode "selected", the .info and .zip of the first
// version it asks of each module are prefetched. The go command asks first
// for the go.mod of every requirement of the main module, which at go 1.17
// or later lists every module that provides a package of the build at the
// version selected; the versions it asks later of the same modules are
// older ones, read for the graph alone (a build never asks their zips).
//
// Once its walk of the module graph is over, a listing of the build list
// (go mod download, go list -m -json all) asks the .info and .mod of every
// module in it at the version minimal version selection picks: for the
// modules the main go.mod does not list, a version whose go.mod the walk
// did not read (a pruned module's requirement) or not first. The session
// keeps what the go.mod files the client got require (see clientGot), so
// it knows those versions too (sessionPath.selected); the first .info a
// client asks of a module at its selected version, other than the first
// it asked, shows such a listing, and the .info and .mod of every
// module's selected version are prefetched then. A download of the whole
// graph (go mod download all) also asks their zips: the first zip a
// client asks of a version other than the first it asked of that module
// shows it, and the .info and .zip of every module's selected version are
// prefetched too. A session ends when the client is idle for
// prefetchSessionIdle. For a .mod, clientAsked reports whether a miss may
// be looked up early (see earlyLookup), and whether what the go.mod
// requires is to be read into the session (see clientGot): it is while the
// client walks the graph, for the first version it asks of a module and
// for any beyond the lowest and the highest it asked (those between are
// older than one read already, and require no more of the graph), and for
// one whose last answer was an error, so that a client asking for the same
// go.mod again and again costs no parse.
func (pf *prefetcher) clientAsked(a artifact.Artifact, remoteAddr string) (early, read bool) {
	if pf == nil || !pf.selected || (a.Kind != artifact.Mod && a.Kind != artifact.Zip && a.Kind != artifact.Info) || !a.Immutable() {
		return false, false
	}
	if pf.leavesAlone(a.Module) {
		return false, false
	}
	client := clientOf(remoteAddr)
	now := time.Now()
	pf.mu.Lock()
	s := pf.sessions[client]
	if s == nil || now.Sub(s.last) > prefetchSessionIdle {
		if s != nil {
			pf.paths -= len(s.paths)
		} else if len(pf.sessions) >= prefetchSessions {
			pf.dropIdlestSession(client)
		}
		s = &prefetchSession{paths: map[string]sessionPath{}, tree: &prefetchTree{left: prefetchSessionArtifacts, inARow: true}}
		pf.sessions[client] = s
	}
	s.last = now
	tree := s.tree
	if a.Kind != artifact.Mod {
		var kinds []artifact.Kind
		sp, ok := s.paths[a.Module]
		switch beyond := ok && a.Version != sp.first; {
		case a.Kind == artifact.Zip && beyond && !s.whole:
			s.whole = true
			kinds = []artifact.Kind{artifact.Info, artifact.Zip}
		case a.Kind == artifact.Info && beyond && a.Version == sp.selected() && !s.listing && s.modsFound > 0:
			s.listing = true
			kinds = []artifact.Kind{artifact.Info, artifact.Mod}
		}
		var list []artifact.Artifact
		if kinds != nil {
			for path, sp := range s.paths {
				if v := sp.selected(); v != sp.first {
					list = append(list, artifact.Artifact{Module: path, Version: v})
				}
			}
		}
		pf.mu.Unlock()
		// In the order of the module paths, as the go command lists
		// the build list.
		slices.SortFunc(list, func(x, y artifact.Artifact) int { return strings.Compare(x.Module, y.Module) })
		for _, m := range list {
			for _, k := range kinds {
				if m.Module == a.Module && k == a.Kind {
					continue // the client's own request
				}
				if ra, err := artifact.New(k, m.Module, m.Version); err == nil {
					// At the depth bound: nothing is prefetched below.
					pf.enqueue(prefetchItem{a: ra, depth: pf.depth, tree: tree})
				}
			}
		}
		return false, false
	}
	for pf.paths >= prefetchSessionPaths && len(pf.sessions) > 1 {
		pf.dropIdlestSession(client) // the others' paths make room
	}
	sp, seen := s.paths[a.Module]
	first := sp.first == "" && (seen || pf.paths < prefetchSessionPaths)
	switch {
	case first:
		if !seen {
			pf.paths++
		}
		sp.first, sp.min, sp.max = a.Version, a.Version, a.Version
		s.paths[a.Module] = sp
		read = true
	case seen && a.Version == sp.unread:
		read = true
	case seen && semver.Compare(a.Version, sp.max) > 0:
		sp.max = a.Version
		s.paths[a.Module] = sp
		read = true
	case seen && semver.Compare(a.Version, sp.min) < 0:
		sp.min = a.Version
		s.paths[a.Module] = sp
		read = true
	}
	early, read = s.earlyLookup(), read && !s.listing
	pf.mu.Unlock()
	if first {
		pf.enqueueSelected(a.Module, a.Version, tree)
	}
	return early, read
}

// sessionOf returns the client's session, nil if it has none or it
// ended. Under pf.mu.
func (pf *prefetcher) sessionOf(remoteAddr string) *prefetchSession {
	if s := pf.sessions[clientOf(remoteAddr)]; s != nil && time.Since(s.last) <= prefetchSessionIdle {
		return s
	}
	return nil
}

// clientOf is the client a session follows: the request's address
// without its port.
func clientOf(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// earlyLookup reports whether a .mod the client asks for, if it is a
// miss, may have its checksum-database lookup start with its upstream
// fetch rather than once the upstream has found it: the client's .mod
// requests are being found (one was, and fewer than 16 since have not).
// A miss of a module that does not exist then costs a lookup too, which a
// client asking for modules that do not exist soon stops causing.
func (pf *prefetcher) earlyLookup(remoteAddr string) bool {
	if pf == nil || !pf.selected {
		return false
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	s := pf.sessionOf(remoteAddr)
	return s != nil && s.earlyLookup()
}

// earlyLookup is the session's part of prefetcher.earlyLookup. Under
// prefetcher.mu.
func (s *prefetchSession) earlyLookup() bool {
	return s.modsFound > 0 && s.modsMissing < prefetchTreeFailures
}

// clientGot notes how a client's .mod request was answered, for
// earlyLookup, and, if read (clientAsked said so), what the go.mod it got
// (obj, when err is nil) requires, for sessionPath.selected.
func (pf *prefetcher) clientGot(a artifact.Artifact, remoteAddr string, read bool, obj *cachetier.Object, err error) {
	if pf == nil || !pf.selected || a.Kind != artifact.Mod || !a.Immutable() {
		return
	}
	pf.mu.Lock()
	s := pf.sessionOf(remoteAddr)
	switch {
	case s == nil:
	case err == nil:
		s.modsFound++
		s.modsMissing = 0
	case httperr.IsNotFound(err):
		s.modsMissing++
	}
	walking := read && s != nil && !s.listing
	pf.mu.Unlock()
	if !walking {
		return
	}
	got := err == nil && obj != nil // a go.mod, not an error
	var reqs []*modfile.Require
	if got {
		data, err := obj.Content()
		if got = err == nil; got {
			if f, err := modfile.ParseLax("go.mod", data, nil); err == nil {
				reqs = f.Require
			}
		}
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if pf.sessionOf(remoteAddr) != s || s.listing {
		return
	}
	if sp, seen := s.paths[a.Module]; seen && (!got || sp.unread == a.Version) {
		// An answer that was no go.mod: read it when asked again.
		sp.unread = ""
		if !got {
			sp.unread = a.Version
		}
		s.paths[a.Module] = sp
	}
	for _, r := range reqs {
		path, v := r.Mod.Path, r.Mod.Version
		if semver.Canonical(v) != v || pf.leavesAlone(path) {
			continue
		}
		sp, seen := s.paths[path]
		switch {
		case !seen && pf.paths >= prefetchSessionPaths:
			continue
		case !seen:
			pf.paths++
		case semver.Compare(v, sp.req) <= 0:
			continue
		}
		sp.req = v
		s.paths[path] = sp
	}
}

// enqueueSelected queues the .info and .zip of a version a client
// selects.
func (pf *prefetcher) enqueueSelected(mod, version string, tree *prefetchTree) {
	for _, k := range []artifact.Kind{artifact.Info, artifact.Zip} {
		if za, err := artifact.New(k, mod, version); err == nil {
			// At the depth bound: a zip leads to no further prefetch.
			pf.enqueue(prefetchItem{a: za, depth: pf.depth, tree: tree})
		}
	}
}

// dropIdlestSession forgets the session, other than the client's, whose
// latest request is the oldest. Under pf.mu.
func (pf *prefetcher) dropIdlestSession(client string) {
	var idlest string
	var at time.Time
	for c, s := range pf.sessions {
		if c != client && (idlest == "" || s.last.Before(at)) {
			idlest, at = c, s.last
		}
	}
	if s := pf.sessions[idlest]; s != nil {
		pf.paths -= len(s.paths)
		delete(pf.sessions, idlest)
	}
}

// leavesAlone reports whether modules of path are never prefetched:
// private ones (unless Private), and those in a mode other than sync.
func (pf *prefetcher) leavesAlone(path string) bool {
	return !pf.private && pf.p.private(path) || pf.p.mode(path) != Sync
}

func (pf *prefetcher) enqueue(it prefetchItem) {
	key := pf.p.key(it.a)
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if _, ok := pf.active[key]; ok {
		return
	}
	if _, ok := pf.unused[key]; ok {
		return
	}
	if it.tree.spent() {
		pf.skip(it.a, "fan_out")
		return
	}
	select {
	case pf.queueOf(it.a) <- it:
		it.tree.left--
		pf.active[key] = &prefetchState{depth: it.depth, tree: it.tree}
	default:
		pf.skip(it.a, "queue_full")
	}
}

func (pf *prefetcher) skip(a artifact.Artifact, reason string) {
	pf.skipped.Add(1)
	pf.p.obs.prefetched(a, reason)
}

// work runs prefetches: of .info and .mod files, and zips too if zips.
func (pf *prefetcher) work(zips bool) {
	defer pf.wg.Done()
	zipQueue := pf.zipQueue
	if !zips {
		zipQueue = nil // never ready
	}
	for {
		select {
		case <-pf.ctx.Done():
			return
		case it := <-pf.queue:
			pf.prefetch(it)
		case it := <-zipQueue:
			pf.prefetch(it)
		}
	}
}

// queueOf is the queue a prefetch of a waits in.
func (pf *prefetcher) queueOf(a artifact.Artifact) chan prefetchItem {
	if a.Kind == artifact.Zip {
		return pf.zipQueue
	}
	return pf.queue
}

// prefetch fetches one artifact unless it is cached or known missing, a
// client's fetch of it is running, its tree's budget is spent, its upstream keeps failing, or the bytes left to
// prefetch would not hold it. It waits for the request rate.
func (pf *prefetcher) prefetch(it prefetchItem) {
	a, key := it.a, pf.p.key(it.a)
	private := pf.p.private(a.Module)
	var size int64
	outcome, sent, parked := "fetched", false, false
	defer func() {
		if parked {
			return // it stays in active, and runs when unparked
		}
		pf.mu.Lock()
		st := pf.active[key] // there until this prefetch ends
		delete(pf.active, key)
		pf.reserved -= st.reserved
		switch outcome {
		case "fetched":
			pf.fetched.Add(1)
			if st.requested {
				pf.used.Add(1)
				pf.p.obs.prefetchUsed(a)
			} else {
				pf.addUnused(key, size)
			}
		default:
			if !sent {
				// No upstream request was made: its place in the
				// tree is given back.
				it.tree.left++
			}
			pf.skipped.Add(1)
		}
		pf.unpark(time.Now()) // what it reserved and did not keep is free again
		pf.mu.Unlock()
		if outcome != "closed" {
			pf.p.obs.prefetched(a, outcome)
		}
	}()
	pf.mu.Lock()
	st := pf.active[key]
	h := pf.health[private]
	switch now := time.Now(); {
	case it.tree.failures >= prefetchTreeFailures:
		outcome = "fan_out"
	case pf.p.heldBack(a):
		outcome = "denied" // a gate refuses it: not fetched ahead of anyone
	case now.Before(h.until):
		outcome = "upstream_failing"
	case st.reserved > 0 || st.requested:
		// Reserved when it was unparked, or asked for by a client: it
		// counts against MaxBytes no more.
	default:
		est := prefetchEstimate(a.Kind)
		pf.expireUnused(now)
		switch {
		case pf.unusedBytes+pf.reserved+est <= pf.maxBytes:
			st.reserved = est
			pf.reserved += est
		case est <= pf.maxBytes && len(pf.parked) < prefetchParked:
			pf.parked = append(pf.parked, parkedPrefetch{it: it, key: key, at: now})
			parked = true
			pf.signalIdle()
		default:
			outcome = "budget"
		}
	}
	pf.mu.Unlock()
	if parked {
		return
	}
	if outcome != "fetched" {
		return
	}
	if obj, err := pf.p.cfg.Tiers.Get(pf.ctx, key, pf.p.checkShared(a)); err == nil {
		fresh := obj.Fresh(time.Now())
		obj.Close()
		if fresh {
			outcome = "cached"
			return
		}
	}
	if _, ok := pf.p.knownNotFound(pf.ctx, a); ok {
		outcome = "not_found"
		return
	}
	if err := pf.pace.Wait(pf.ctx); err != nil {
		outcome = "closed"
		return
	}
	fl := pf.p.join(a, true, false)
	if fl == nil {
		outcome = "in_flight" // a client's fetch of it is running
		return
	}
	sent = true
	obj, err := pf.p.await(pf.ctx, fl)
	if err != nil {
		outcome = pf.failed(a, it.tree, private, err)
		return
	}
	pf.mu.Lock()
	if it.tree.inARow {
		it.tree.failures = 0
	}
	if h.failures = 0; h.pause > prefetchPauseMin && time.Now().After(h.until) {
		h.pause = prefetchPauseMin
	}
	pf.mu.Unlock()
	size = obj.Size
	obj.Close()
}

// failed counts a failed prefetch against its tree and, for an upstream
// error, against its source, and returns its outcome.
func (pf *prefetcher) failed(a artifact.Artifact, tree *prefetchTree, private bool, err error) string {
	switch {
	case pf.ctx.Err() != nil:
		return "closed"
	case errors.Is(err, errPrefetchBudget):
		return "budget"
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	tree.failures++
	if httperr.IsNotFound(err) {
		return "not_found"
	}
	pf.p.log.Debug("prefetch failed", zap.Stringer("artifact", a), zap.Error(err))
	h := pf.health[private]
	if h.failures++; h.failures >= prefetchUpstreamFailures && !time.Now().Before(h.until) {
		h.until = time.Now().Add(h.pause)
		pf.p.log.Warn("prefetch paused: the upstream keeps failing", zap.Bool("private", private),
			zap.Int("failures", h.failures), zap.Duration("pause", h.pause), zap.Error(err))
		h.pause = min(2*h.pause, prefetchPauseMax)
		h.failures = 0
	}
	return "failed"
}

// admit is asked, when the upstream has answered a fetch that a prefetch
// started, whether its body of size bytes (-1: unknown) fits the bytes
// left to prefetch. It does when a client asked for the artifact
// meanwhile, or when the reservation can grow to the size.
func (pf *prefetcher) admit(a artifact.Artifact, key string, size int64) error {
	if pf == nil {
		return nil
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	st := pf.active[key]
	switch {
	case st == nil:
		return errPrefetchBudget // abandoned: the prefetcher closed
	case st.requested:
		return nil
	}
	if size < 0 || size > a.Kind.MaxSize() {
		size = a.Kind.MaxSize()
	}
	if need := size - st.reserved; need > 0 {
		pf.expireUnused(time.Now())
		if pf.unusedBytes+pf.reserved+need > pf.maxBytes {
			return errPrefetchBudget
		}
		st.reserved += need
		pf.reserved += need
	}
	return nil
}

// addUnused records a prefetched artifact no client asked for yet, and
// forgets those older than prefetchUnusedFor. Under pf.mu.
func (pf *prefetcher) addUnused(key string, size int64) {
	now := time.Now()
	pf.expireUnused(now)
	u := unusedPrefetch{key: key, size: size, at: now}
	pf.unused[key] = u
	pf.order = append(pf.order, u)
	pf.unusedBytes += size
}

// expireUnused forgets the unused prefetches older than
// prefetchUnusedFor. Under pf.mu.
func (pf *prefetcher) expireUnused(now time.Time) {
	for len(pf.order) > 0 && now.Sub(pf.order[0].at) > prefetchUnusedFor {
		old := pf.order[0]
		pf.order = pf.order[1:]
		if u, ok := pf.unused[old.key]; ok && u.at == old.at {
			delete(pf.unused, old.key)
			pf.unusedBytes -= u.size
		}
	}
}

// requested notes that a client asked for a, stored under key: a
// prefetch of it was useful.
func (pf *prefetcher) requested(a artifact.Artifact, key string) {
	if pf == nil || !a.Immutable() {
		return
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	if u, ok := pf.unused[key]; ok {
		delete(pf.unused, key)
		pf.unusedBytes -= u.size
		pf.used.Add(1)
		pf.p.obs.prefetchUsed(a)
		pf.unpark(time.Now())
		return
	}
	if st, ok := pf.active[key]; ok {
		// A client's fetch: it no longer counts against MaxBytes.
		st.requested = true
		if st.reserved > 0 {
			pf.reserved -= st.reserved
			st.reserved = 0
			pf.unpark(time.Now())
		}
	}
}

// unpark queues the parked prefetches, oldest first, while MaxBytes has
// room for what each reserves (reserved now, so that those queued
// together fit together); those parked longer than prefetchUnusedFor are
// dropped, their client long gone. Under pf.mu.
func (pf *prefetcher) unpark(now time.Time) {
	pf.expireUnused(now)
	for len(pf.parked) > 0 {
		pp := pf.parked[0]
		st := pf.active[pp.key]
		if now.Sub(pp.at) > prefetchUnusedFor || pf.ctx.Err() != nil {
			pf.parked = pf.parked[1:]
			delete(pf.active, pp.key)
			pp.it.tree.left++ // no upstream request was made
			pf.skip(pp.it.a, "budget")
			continue
		}
		est := prefetchEstimate(pp.it.a.Kind)
		if pf.unusedBytes+pf.reserved+est > pf.maxBytes {
			break
		}
		select {
		case pf.queueOf(pp.it.a) <- pp.it:
			pf.parked = pf.parked[1:]
			st.reserved = est
			pf.reserved += est
		default:
			return // the queue is full: the next prefetch to end unparks it
		}
	}
	pf.signalIdle()
}

// signalIdle wakes quiesce when no prefetch is queued or running (parked
// ones wait for clients, not for the prefetcher). Under pf.mu.
func (pf *prefetcher) signalIdle() {
	if len(pf.active) == len(pf.parked) {
		pf.idle.Broadcast()
	}
}

// PrefetchStats are the prefetcher's counts: artifacts fetched ahead of
// demand, how many of them a client asked for later, and prefetches
// skipped (cached, not found, failed, over budget, queue full).
type PrefetchStats struct {
	Fetched int64 `json:"fetched"`
	Used    int64 `json:"used"`
	Skipped int64 `json:"skipped"`
}

// PrefetchStats reports the prefetcher's counts (zero when it is off).
func (p *Proxy) PrefetchStats() PrefetchStats {
	if p.prefetch == nil {
		return PrefetchStats{}
	}
	return PrefetchStats{Fetched: p.prefetch.fetched.Load(), Used: p.prefetch.used.Load(), Skipped: p.prefetch.skipped.Load()}
}

// describe says how prefetch is set, for the start-up log.
func (pf *prefetcher) describe() string {
	if pf == nil {
		return "off"
	}
	mode := "mod"
	switch {
	case pf.zips:
		mode = "zip"
	case pf.selected:
		mode = "selected"
	}
	s := fmt.Sprintf("%s (depth %d, %d per requested .mod, %.0f requests a minute, %s unused at most",
		mode, pf.depth, pf.fanOut, float64(pf.pace.Limit())*60, humanBytes(pf.maxBytes))
	if pf.private {
		s += ", private modules too"
	}
	return s + ")"
}

// quiesce waits until no prefetch is queued or running (for tests and
// for warming: a prefetch started by what was fetched so far has ended,
// or waits, parked, for clients to make room in MaxBytes).
func (pf *prefetcher) quiesce() {
	if pf == nil {
		return
	}
	pf.mu.Lock()
	for len(pf.active) > len(pf.parked) {
		pf.idle.Wait()
	}
	pf.mu.Unlock()
}
