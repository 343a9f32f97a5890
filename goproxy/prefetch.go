package goproxy

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/modfile"

	"github.com/piraeus-go/piraeus/artifact"
)

// Defaults of PrefetchOptions.
const (
	DefaultPrefetchWorkers  = 8
	DefaultPrefetchDepth    = 10
	DefaultPrefetchMaxBytes = 256 << 20
	// prefetchQueue bounds the artifacts waiting for a prefetch worker;
	// beyond it, prefetches are dropped.
	prefetchQueue = 4096
	// prefetchUnusedFor is how long a prefetched artifact counts against
	// MaxBytes while no client asked for it.
	prefetchUnusedFor = 10 * time.Minute
)

// PrefetchOptions configure dependency-aware prefetch: when a .mod is
// fetched, the .mod files of its requirements (and with Mode "zip", their
// .info and .zip) are fetched in the background, through the same
// collapse as client requests, so that the go command finds them cached
// when it walks the module graph.
type PrefetchOptions struct {
	// Mode is "off" (the zero value), "mod" or "zip".
	Mode string
	// Workers bounds the prefetches running at once; DefaultPrefetchWorkers.
	Workers int
	// Depth bounds how many requirement levels below an artifact a client
	// asked for are prefetched; DefaultPrefetchDepth.
	Depth int
	// MaxBytes bounds the bytes prefetched that no client has asked for
	// yet (each counts for up to ten minutes); DefaultPrefetchMaxBytes.
	MaxBytes int64
	// Private allows prefetching private modules (fetched from their own
	// sources as any private fetch is); off by default.
	Private bool
}

// prefetchItem is one artifact to prefetch, depth levels below a request.
type prefetchItem struct {
	a     artifact.Artifact
	depth int
}

// prefetchState is an artifact queued or being prefetched.
type prefetchState struct {
	depth     int
	requested bool // a client asked for it meanwhile
}

type unusedPrefetch struct {
	key  string
	size int64
	at   time.Time
}

// prefetcher runs the prefetches of a Proxy.
type prefetcher struct {
	p        *Proxy
	zips     bool
	depth    int
	maxBytes int64
	private  bool
	queue    chan prefetchItem
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu          sync.Mutex
	idle        *sync.Cond                // signalled when active empties
	active      map[string]*prefetchState // queued or running, by cache key
	unused      map[string]unusedPrefetch // prefetched, not asked for yet
	order       []unusedPrefetch          // unused, oldest first (some already used)
	unusedBytes int64

	fetched, used, skipped atomic.Int64
}

func newPrefetcher(p *Proxy, o PrefetchOptions) (*prefetcher, error) {
	switch o.Mode {
	case "", "off":
		return nil, nil
	case "mod", "zip":
	default:
		return nil, fmt.Errorf("prefetch %q: want off, mod or zip", o.Mode)
	}
	if o.Workers < 0 || o.Depth < 0 || o.MaxBytes < 0 {
		return nil, fmt.Errorf("prefetch limits must not be negative")
	}
	ctx, cancel := context.WithCancel(context.Background())
	pf := &prefetcher{
		p: p, zips: o.Mode == "zip", depth: orDefault(o.Depth, DefaultPrefetchDepth),
		maxBytes: orDefault(o.MaxBytes, DefaultPrefetchMaxBytes), private: o.Private,
		queue: make(chan prefetchItem, prefetchQueue), ctx: ctx, cancel: cancel,
		active: map[string]*prefetchState{}, unused: map[string]unusedPrefetch{},
	}
	pf.idle = sync.NewCond(&pf.mu)
	for range orDefault(o.Workers, DefaultPrefetchWorkers) {
		pf.wg.Add(1)
		go pf.work()
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
	depth := 0
	if st, ok := pf.active[pf.p.key(a)]; ok {
		depth = st.depth
	}
	pf.mu.Unlock()
	if depth >= pf.depth {
		return
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil {
		return
	}
	kinds := []artifact.Kind{artifact.Mod}
	if pf.zips {
		kinds = append(kinds, artifact.Info, artifact.Zip)
	}
	for _, r := range f.Require {
		if !pf.private && pf.p.private(r.Mod.Path) || pf.p.mode(r.Mod.Path) != Sync {
			continue
		}
		for _, k := range kinds {
			ra, err := artifact.New(k, r.Mod.Path, r.Mod.Version)
			if err != nil || !ra.Immutable() {
				break // not a canonical version: nothing to prefetch
			}
			pf.enqueue(prefetchItem{a: ra, depth: depth + 1})
		}
	}
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
	select {
	case pf.queue <- it:
		pf.active[key] = &prefetchState{depth: it.depth}
	default:
		pf.skip(it.a, "queue_full")
	}
}

func (pf *prefetcher) skip(a artifact.Artifact, reason string) {
	pf.skipped.Add(1)
	pf.p.cfg.Metrics.prefetch(a, reason)
}

func (pf *prefetcher) work() {
	defer pf.wg.Done()
	for {
		select {
		case <-pf.ctx.Done():
			return
		case it := <-pf.queue:
			pf.prefetch(it)
		}
	}
}

// prefetch fetches one artifact unless it is cached, known missing, or
// the budget of unused prefetched bytes is spent.
func (pf *prefetcher) prefetch(it prefetchItem) {
	a, key := it.a, pf.p.key(it.a)
	var size int64
	outcome := "fetched"
	defer func() {
		pf.mu.Lock()
		st := pf.active[key]
		delete(pf.active, key)
		if len(pf.active) == 0 {
			pf.idle.Broadcast()
		}
		if outcome == "fetched" {
			pf.fetched.Add(1)
			if st != nil && st.requested {
				pf.used.Add(1)
				pf.p.cfg.Metrics.prefetchUsed(a)
			} else {
				pf.addUnused(key, size)
			}
		} else {
			pf.skipped.Add(1)
		}
		pf.mu.Unlock()
		pf.p.cfg.Metrics.prefetch(a, outcome)
	}()
	pf.mu.Lock()
	full := pf.unusedBytes >= pf.maxBytes
	pf.mu.Unlock()
	if full {
		outcome = "budget"
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
	obj, err := pf.p.collapse(pf.ctx, a)
	if err != nil {
		outcome = "failed"
		if pf.ctx.Err() == nil {
			pf.p.log.Debug("prefetch failed", zap.Stringer("artifact", a), zap.Error(err))
		}
		return
	}
	size = obj.Size
	obj.Close()
}

// addUnused records a prefetched artifact no client asked for yet, and
// forgets those older than prefetchUnusedFor. Under pf.mu.
func (pf *prefetcher) addUnused(key string, size int64) {
	now := time.Now()
	for len(pf.order) > 0 && now.Sub(pf.order[0].at) > prefetchUnusedFor {
		old := pf.order[0]
		pf.order = pf.order[1:]
		if u, ok := pf.unused[old.key]; ok && u.at == old.at {
			delete(pf.unused, old.key)
			pf.unusedBytes -= u.size
		}
	}
	u := unusedPrefetch{key: key, size: size, at: now}
	pf.unused[key] = u
	pf.order = append(pf.order, u)
	pf.unusedBytes += size
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
		pf.p.cfg.Metrics.prefetchUsed(a)
		return
	}
	if st, ok := pf.active[key]; ok {
		st.requested = true
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
	if pf.zips {
		mode = "zip"
	}
	s := fmt.Sprintf("%s (depth %d, %s unused at most", mode, pf.depth, humanBytes(pf.maxBytes))
	if pf.private {
		s += ", private modules too"
	}
	return s + ")"
}

// quiesce waits until no prefetch is queued or running (for tests and
// for warming: a prefetch started by what was fetched so far has ended).
func (pf *prefetcher) quiesce() {
	if pf == nil {
		return
	}
	pf.mu.Lock()
	for len(pf.active) > 0 {
		pf.idle.Wait()
	}
	pf.mu.Unlock()
}
