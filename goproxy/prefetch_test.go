package goproxy

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// chain returns modules example.com/chain/m0 .. m<n-1>, each requiring the
// next, and extra requirements of m0.
func chain(n int, extra ...string) []testenv.Module {
	var mods []testenv.Module
	for i := range n {
		m := testenv.Module{Path: "example.com/chain/m" + string(rune('0'+i)), Version: "v1.0.0"}
		m.GoMod = "module " + m.Path + "\n\ngo 1.16\n"
		var req []string
		if i+1 < n {
			req = append(req, "example.com/chain/m"+string(rune('0'+i+1))+" v1.0.0")
		}
		if i == 0 {
			req = append(req, extra...)
		}
		if len(req) > 0 {
			m.GoMod += "\nrequire (\n\t" + strings.Join(req, "\n\t") + "\n)\n"
		}
		mods = append(mods, m)
	}
	return mods
}

// A fetched .mod starts the prefetch of its requirements' .mod files,
// level by level down to the depth limit, in the background: the request
// that triggered it is answered while a prefetch is still blocked; each
// artifact is fetched once, and a client asking later finds it cached and
// counts as a prefetch hit. Private modules (in any letter case) are not
// prefetched.
func TestPrefetchMod(t *testing.T) {
	t.Parallel()
	mods := chain(5, "github.com/Acme/Secret v1.0.0", "example.com/gone v1.0.0")
	up := testenv.NewUpstream(t, mods...)
	up.Add(testenv.Module{Path: "github.com/Acme/Secret", Version: "v1.0.0"})
	release := make(chan struct{})
	m1mod := path(mods[1], "mod")
	up.Override(m1mod, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Write(mods[1].Mod())
	})
	e := newEnv(t, up, options{private: "github.com/acme/*", prefetch: PrefetchOptions{Mode: "mod", Depth: 3}})

	// m0's answer does not wait for the prefetch of m1, which is blocked.
	e.get(path(mods[0], "mod"), 200)
	up.WaitTotal(t, 2) // m0.mod, and m1.mod arrived
	close(release)
	e.proxy.prefetch.quiesce()

	for i, m := range mods {
		want := 0
		if i <= 3 { // m0 asked for; m1..m3 within depth 3
			want = 1
		}
		if n := up.Requests(path(m, "mod")); n != want {
			t.Errorf("%s.mod: %d upstream requests; want %d", m.Path, n, want)
		}
		if n := up.Requests(path(m, "zip")) + up.Requests(path(m, "info")); n != 0 {
			t.Errorf("%s: .info or .zip prefetched in mod mode", m.Path)
		}
	}
	for _, p := range up.Paths() {
		if strings.Contains(strings.ToLower(p), "acme") {
			t.Errorf("a private module reached the public upstream: %s", p)
		}
	}
	st := e.proxy.PrefetchStats()
	if st.Fetched != 3 || st.Used != 0 {
		t.Errorf("prefetch stats %+v; want 3 fetched, none used yet", st)
	}

	// The go command walking the graph finds what was prefetched.
	before := up.Total()
	for _, m := range mods[1:4] {
		e.get(path(m, "mod"), 200)
	}
	if n := up.Total() - before; n != 0 {
		t.Errorf("%d upstream requests for prefetched .mod files", n)
	}
	if st := e.proxy.PrefetchStats(); st.Used != 3 {
		t.Errorf("prefetch stats %+v; want 3 used", st)
	}
	// m3, asked for, was prefetched at depth 3: asking for it starts no
	// new prefetch (it was fetched before), so m4 is still not fetched.
	if n := up.Requests(path(mods[4], "mod")); n != 0 {
		t.Errorf("m4.mod fetched beyond the depth limit")
	}
	// A missing requirement was tried once and is remembered as missing.
	if n := up.Requests(testenv.EscapedPath("example.com/gone", "v1.0.0", "mod")); n != 1 {
		t.Errorf("missing requirement: %d upstream requests; want 1", n)
	}
}

// In zip mode the requirements' .info and .zip come too, verified like any
// fetch, within the budget of bytes no client asked for, and those of the
// version asked for (as in mode "selected").
func TestPrefetchZipAndBudget(t *testing.T) {
	t.Parallel()
	mods := chain(3)
	up := testenv.NewUpstream(t, mods...)
	db := up.VerifiedBy(t)
	e := newEnv(t, up, options{sumdb: db, prefetch: PrefetchOptions{Mode: "zip"}})
	e.get(path(mods[0], "mod"), 200)
	e.proxy.prefetch.quiesce()
	for _, m := range mods[1:] {
		for _, kind := range []string{"mod", "info", "zip"} {
			if n := up.Requests(path(m, kind)); n != 1 {
				t.Errorf("%s.%s: %d upstream requests; want 1", m.Path, kind, n)
			}
		}
	}
	// And, as in mode "selected", the zip of the version the client asked.
	if n := up.Requests(path(mods[0], "zip")); n != 1 {
		t.Errorf("the requested module's own zip: %d upstream requests; want 1, prefetched", n)
	}
	before := up.Total()
	e.get(path(mods[2], "zip"), 200)
	if up.Total() != before {
		t.Error("a prefetched zip was fetched again")
	}

	// A budget that holds what one .mod reserves lets one prefetch run
	// ahead of the client: the next one waits, parked, until the client
	// asks for what was prefetched, and then runs; a budget of a byte,
	// which holds no prefetch, prefetches nothing.
	c4 := chain(4)
	up2 := testenv.NewUpstream(t, c4...)
	e2 := newEnv(t, up2, options{prefetch: PrefetchOptions{Mode: "mod", Workers: 1, MaxBytes: prefetchEstimate(artifact.Mod)}})
	pf := e2.proxy.prefetch
	parked := func() []string {
		pf.mu.Lock()
		defer pf.mu.Unlock()
		var keys []string
		for _, pp := range pf.parked {
			keys = append(keys, pp.it.a.Module)
		}
		return keys
	}
	e2.get(path(c4[0], "mod"), 200)
	pf.quiesce()
	if st, p := e2.proxy.PrefetchStats(), parked(); st.Fetched != 1 || st.Skipped != 0 || !slices.Equal(p, []string{c4[2].Path}) {
		t.Errorf("with a budget of one .mod: %+v, parked %v; want m1 fetched, m2 parked", st, p)
	}
	if n := up2.Requests(path(c4[2], "mod")); n != 0 {
		t.Errorf("a parked prefetch was sent upstream (%d requests)", n)
	}
	e2.get(path(c4[1], "mod"), 200) // the prefetched one: its bytes count no more
	if n := up2.Requests(path(c4[1], "mod")); n != 1 {
		t.Errorf("a prefetched .mod: %d upstream requests; want 1", n)
	}
	pf.quiesce()
	if st, p := e2.proxy.PrefetchStats(), parked(); st.Fetched != 2 || st.Used != 1 || !slices.Equal(p, []string{c4[3].Path}) {
		t.Errorf("after the client asked for the prefetched .mod: %+v, parked %v; want m2 fetched, m3 parked", st, p)
	}
	// A prefetch parked longer than an unused one counts is dropped: its
	// client is long gone.
	pf.mu.Lock()
	pf.parked[0].at = pf.parked[0].at.Add(-prefetchUnusedFor - time.Second)
	pf.unpark(time.Now())
	left, active := len(pf.parked), len(pf.active)
	pf.mu.Unlock()
	if st := e2.proxy.PrefetchStats(); left != 0 || active != 0 || st.Skipped != 1 || up2.Requests(path(c4[3], "mod")) != 0 {
		t.Errorf("a prefetch parked too long: %d parked, %d active, %+v; want it dropped unsent", left, active, st)
	}

	up3 := testenv.NewUpstream(t, chain(4)...)
	e3 := newEnv(t, up3, options{prefetch: PrefetchOptions{Mode: "mod", Workers: 1, MaxBytes: 1}})
	e3.get(path(chain(4)[0], "mod"), 200)
	e3.proxy.prefetch.quiesce()
	if st := e3.proxy.PrefetchStats(); st.Fetched != 0 || st.Skipped == 0 || len(e3.proxy.prefetch.parked) != 0 {
		t.Errorf("prefetch stats with a 1-byte budget: %+v; want nothing fetched or parked, the rest skipped", st)
	}
}

// A fetch that starts just after another one for the same artifact ended
// (the requester looked in the cache before that one stored its result)
// finds the result and asks the upstream nothing: no artifact is fetched
// twice, and no missing one asked for twice.
func TestFetchAfterFetchEndedFindsItsResult(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{})
	e.get(path(modA, "zip"), 200)
	e.get(testenv.EscapedPath("example.com/missing", "v1.0.0", "mod"), 404)
	before := up.Total()
	a := mustArtifact(t, path(modA, "zip"))
	obj, err := e.proxy.collapse(t.Context(), a) // as a requester that missed would
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	if _, err := e.proxy.collapse(t.Context(), mustArtifact(t, testenv.EscapedPath("example.com/missing", "v1.0.0", "mod"))); err == nil {
		t.Error("a remembered missing module was found")
	}
	if n := up.Total() - before; n != 0 {
		t.Errorf("%d upstream requests for what a fetch that had ended already answered", n)
	}
}

func mustArtifact(t *testing.T, p string) artifact.Artifact {
	t.Helper()
	a, err := artifact.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// requiring returns a module path@v1.0.0 whose go.mod requires reqs.
func requiring(path string, reqs []string) testenv.Module {
	m := testenv.Module{Path: path, Version: "v1.0.0"}
	m.GoMod = "module " + path + "\n\ngo 1.16\n"
	if len(reqs) > 0 {
		m.GoMod += "\nrequire (\n\t" + strings.Join(reqs, "\n\t") + "\n)\n"
	}
	return m
}

// modules returns n modules prefix0 .. prefix<n-1> at v1.0.0 and their
// requirement lines.
func modules(prefix string, n int) (mods []testenv.Module, reqs []string) {
	for i := range n {
		m := requiring(fmt.Sprintf("%s%d", prefix, i), nil)
		mods = append(mods, m)
		reqs = append(reqs, m.Path+" "+m.Version)
	}
	return mods, reqs
}

func prefetchedFrom(up *testenv.Upstream, prefix string) int {
	n := 0
	for _, p := range up.Paths() {
		if strings.HasPrefix(p, prefix) {
			n++
		}
	}
	return n
}

// One go.mod naming 3,000 modules that do not exist costs a few upstream
// requests, not 3,000: the prefetches below one requested .mod stop after
// prefetchTreeFailures failures, and at most FanOut are queued.
func TestPrefetchOfHostileGoModBounded(t *testing.T) {
	t.Parallel()
	_, reqs := modules("example.com/nx/m", 3000) // not served
	root := requiring("example.com/hostile", reqs)
	up := testenv.NewUpstream(t, root)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "mod"}})
	e.get(path(root, "mod"), 200)
	e.proxy.prefetch.quiesce()
	if n, most := prefetchedFrom(up, "example.com/nx/"), prefetchTreeFailures+DefaultPrefetchWorkers; n > most || n < prefetchTreeFailures {
		t.Errorf("%d upstream requests for a go.mod's 3000 missing requirements; want %d to %d", n, prefetchTreeFailures, most)
	}
	if st := e.proxy.PrefetchStats(); st.Skipped < 3000-prefetchTreeFailures-DefaultPrefetchWorkers {
		t.Errorf("prefetch stats %+v; want the rest skipped", st)
	}
	// A client asking for one of them still reaches the upstream.
	before := up.Requests(testenv.EscapedPath("example.com/nx/m2999", "v1.0.0", "mod"))
	e.get(testenv.EscapedPath("example.com/nx/m2999", "v1.0.0", "mod"), 404)
	if up.Requests(testenv.EscapedPath("example.com/nx/m2999", "v1.0.0", "mod")) != before+1 {
		t.Error("a client's request for a module prefetch dropped did not reach the upstream")
	}
}

// The prefetches one requested .mod causes, through every level below
// it, are at most FanOut; another requested .mod has a budget of its own.
func TestPrefetchFanOutPerRequestedMod(t *testing.T) {
	t.Parallel()
	wide, reqs := modules("example.com/wide/m", 60)
	root := requiring("example.com/root", reqs)
	root2 := requiring("example.com/root2", reqs)
	up := testenv.NewUpstream(t, append(wide, root, root2)...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "mod", Workers: 2, FanOut: 20}})
	e.get(path(root, "mod"), 200)
	e.proxy.prefetch.quiesce()
	if n := prefetchedFrom(up, "example.com/wide/"); n != 20 {
		t.Errorf("%d requirements prefetched below one requested .mod; want fan_out 20", n)
	}
	e.get(path(root2, "mod"), 200)
	e.proxy.prefetch.quiesce()
	if n := prefetchedFrom(up, "example.com/wide/"); n != 40 {
		t.Errorf("%d requirements prefetched below two requested .mod files; want 40 (each its own 20, none twice)", n)
	}
}

// Prefetches are paced by RequestsPerMinute (failures count like any
// request); a client's own requests are not.
func TestPrefetchRequestRate(t *testing.T) {
	t.Parallel()
	deps, reqs := modules("example.com/paced/m", 5)
	root := requiring("example.com/root", reqs)
	up := testenv.NewUpstream(t, append(deps, root)...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "mod", Workers: 1, RequestsPerMinute: 1}})
	pf := e.proxy.prefetch
	pace := &signallingPacer{pacer: pf.pace, changed: make(chan struct{}, 1)}
	pf.pace = pace // before any prefetch: the request below starts them
	e.get(path(root, "mod"), 200)
	timeout := time.After(time.Minute)
	for pace.waiting.Load() < 1 || prefetchedFrom(up, "example.com/paced/") < 1 {
		select {
		case <-pace.changed:
		case <-up.Arrived():
		case <-timeout:
			t.Fatalf("no prefetch waits for the request rate (%d waiting)", pace.waiting.Load())
		}
	}
	if n := prefetchedFrom(up, "example.com/paced/"); n != 1 {
		t.Errorf("%d prefetches within a minute at requests_per_minute 1; want 1", n)
	}
	for _, m := range deps[1:] {
		e.get(path(m, "mod"), 200)
	}
	if n := prefetchedFrom(up, "example.com/paced/"); n != 5 {
		t.Errorf("%d upstream requests after the client asked for the other 4; want 5", n)
	}
}

// The bytes of prefetched objects no client asked for never exceed
// MaxBytes, even with every worker fetching a zip at once: each reserves
// its share before it starts, and one whose body would not fit is
// dropped when the upstream gives its size, before the body is read. A
// client asking for a dropped zip gets it.
func TestPrefetchReservesBytes(t *testing.T) {
	t.Parallel()
	var deps []testenv.Module
	var reqs []string
	up := testenv.NewUpstream(t)
	dir := t.TempDir()
	for i := range 10 {
		m := requiring(fmt.Sprintf("example.com/big/m%d", i), nil)
		up.AddBigZip(m, testenv.WriteBigZip(t, dir, m, 1536<<10))
		deps, reqs = append(deps, m), append(reqs, m.Path+" "+m.Version)
	}
	root := requiring("example.com/root", reqs)
	up.Add(root)
	const budget = 4 << 20
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "zip", Workers: 8, MaxBytes: budget}})
	e.get(path(root, "mod"), 200)
	pf := e.proxy.prefetch
	pf.quiesce()
	pf.mu.Lock()
	unused, reserved := pf.unusedBytes, pf.reserved
	pf.mu.Unlock()
	if unused > budget || reserved != 0 {
		t.Errorf("%d bytes prefetched unused (%d still reserved); want at most max_bytes %d", unused, reserved, budget)
	}
	if unused < 1536<<10 {
		t.Errorf("%d bytes prefetched; want at least one zip", unused)
	}
	for _, m := range deps {
		if _, body := e.get(path(m, "zip"), 200); len(body) < 1536<<10 {
			t.Errorf("%s.zip: %d bytes", m.Path, len(body))
		}
	}
}

// Prefetching from an upstream that keeps failing pauses after
// prefetchUpstreamFailures errors in a row; clients still reach it.
func TestPrefetchPausesOnFailingUpstream(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t)
	var roots []testenv.Module
	for i := range 10 {
		deps, reqs := modules(fmt.Sprintf("example.com/failing%d/m", i), 3)
		for _, m := range deps {
			up.Add(m)
			up.Override(path(m, "mod"), func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "upstream trouble", http.StatusBadGateway)
			})
		}
		roots = append(roots, requiring(fmt.Sprintf("example.com/root%d", i), reqs))
		up.Add(roots[i])
	}
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "mod", Workers: 1}})
	for _, root := range roots {
		e.get(path(root, "mod"), 200)
		e.proxy.prefetch.quiesce()
	}
	if n := prefetchedFrom(up, "example.com/failing"); n != prefetchUpstreamFailures {
		t.Errorf("%d prefetches sent to an upstream answering 502; want %d, then a pause", n, prefetchUpstreamFailures)
	}
	e.get(testenv.EscapedPath("example.com/failing9/m0", "v1.0.0", "mod"), 502)
	if n := prefetchedFrom(up, "example.com/failing"); n != prefetchUpstreamFailures+1 {
		t.Error("a client's request did not reach the upstream while prefetch paused")
	}
}

// Prefetch reads the module graph as the go command does with a main
// module at go 1.17 or later: below a pruned module (go 1.17 or later)
// it prefetches nothing, below an unpruned one everything. Through the
// mirror, `go list -m all` then costs exactly the .mod files the go
// command reads from the upstream directly, and every prefetch is used.
func TestPrefetchFollowsGraphPruning(t *testing.T) {
	t.Parallel()
	mod := func(path, goLine string, reqs ...string) testenv.Module {
		m := testenv.Module{Path: path, Version: "v1.0.0", GoMod: "module " + path + "\n"}
		if goLine != "" {
			m.GoMod += "\ngo " + goLine + "\n"
		}
		for _, r := range reqs {
			m.GoMod += "\nrequire " + r + " v1.0.0\n"
		}
		return m
	}
	graph := []testenv.Module{
		mod("example.com/p", "1.21", "example.com/p1"), // pruned
		mod("example.com/p1", "1.21", "example.com/p11"),
		mod("example.com/p11", "1.21"),
		mod("example.com/u", "1.16", "example.com/u1", "example.com/u2"), // unpruned
		mod("example.com/u1", "1.21", "example.com/u11"),                 // pruned, but below u
		mod("example.com/u11", "1.21"),
		mod("example.com/u2", "", "example.com/u21"), // no go line: unpruned
		mod("example.com/u21", "1.16", "example.com/u211"),
		mod("example.com/u211", "1.21"),
	}
	main := "module example.com/main\n\ngo 1.21\n\nrequire (\n\texample.com/p v1.0.0\n\texample.com/u v1.0.0\n)\n"
	modsRead := func(goproxy string, up *testenv.Upstream) []string {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(main), 0o644); err != nil {
			t.Fatal(err)
		}
		testenv.RunGo(t, dir, append(testenv.GoEnv(t, goproxy), "GOFLAGS=-mod=mod"), "mod", "graph")
		var mods []string
		for _, p := range up.Paths() {
			if strings.HasSuffix(p, ".mod") {
				mods = append(mods, p)
			}
		}
		slices.Sort(mods)
		return mods
	}
	direct := testenv.NewUpstream(t, graph...)
	want := modsRead(direct.URL, direct)
	if slices.Contains(want, path(graph[1], "mod")) || !slices.Contains(want, path(graph[5], "mod")) {
		t.Fatalf("the go command read %v: not the pruned graph this test models", want)
	}
	up := testenv.NewUpstream(t, graph...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "mod"}})
	modsRead(e.srv.URL, up) // counted once the prefetches have ended
	e.proxy.prefetch.quiesce()
	var got []string
	for _, p := range up.Paths() {
		if strings.HasSuffix(p, ".mod") {
			got = append(got, p)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("through the mirror the upstream was asked for %v; the go command reads %v", got, want)
	}
	if st := e.proxy.PrefetchStats(); st.Fetched < 3 || st.Used != st.Fetched {
		t.Errorf("prefetch stats %+v; want the 5 .mod files below the unpruned module fetched, and all used", st)
	}
}

// signallingPacer counts the prefetches waiting for the request rate and
// signals when one starts to, so a test syncs on that event.
type signallingPacer struct {
	pacer
	waiting atomic.Int32
	changed chan struct{}
}

func (s *signallingPacer) Wait(ctx context.Context) error {
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return s.pacer.Wait(ctx)
}

// A prefetch leaves a version the policy denies alone: nothing denied is
// fetched from upstream, ahead of a client or for one.
func TestPrefetchSkipsDeniedVersions(t *testing.T) {
	t.Parallel()
	mods := chain(3)
	up := testenv.NewUpstream(t, mods...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "mod", Depth: 3}})
	e.proxy.cfg.policy, _ = compilePolicy([]PolicyRule{{Pattern: mods[1].Path, Versions: "v1.0.0", Deny: true, Reason: "held back"}})
	e.get(path(mods[0], "mod"), 200)
	e.proxy.prefetch.quiesce()
	if n := up.Requests(path(mods[1], "mod")); n != 0 {
		t.Errorf("the denied version's .mod was prefetched (%d upstream requests)", n)
	}
	if resp, body := e.do("GET", path(mods[1], "mod")); resp.StatusCode != 403 || !strings.Contains(string(body), "held back") {
		t.Errorf("the denied version: %d %q", resp.StatusCode, body)
	}
}

// In mode "selected" (the default), the .info and .zip of the version a
// client asks first of each module are prefetched: the go command asks
// first for the go.mod of every requirement of the main module (at go
// 1.17 or later, the whole build list at its selected versions), and
// later for older versions only to walk the graph. `go mod graph` reads
// .mod files alone; once it has, the zips the build will download are
// cached, that of the older version read for the graph is not fetched,
// and `go mod download all` then costs no upstream request.
func TestPrefetchSelectedVersions(t *testing.T) {
	t.Parallel()
	mod := func(path, version, goLine string, reqs ...string) testenv.Module {
		m := testenv.Module{Path: path, Version: version, GoMod: "module " + path + "\n\ngo " + goLine + "\n"}
		for _, r := range reqs {
			m.GoMod += "\nrequire " + r + "\n"
		}
		return m
	}
	aOld := mod("example.com/a", "v1.0.0", "1.21")
	graph := []testenv.Module{
		aOld,
		mod("example.com/a", "v1.2.0", "1.21"),
		mod("example.com/b", "v1.1.0", "1.21"),
		// Unpruned: the go command reads its requirements' go.mod files,
		// a's older one among them.
		mod("example.com/u", "v1.0.0", "1.16", "example.com/a v1.0.0", "example.com/b v1.1.0"),
	}
	main := "module example.com/main\n\ngo 1.21\n\nrequire (\n\texample.com/a v1.2.0\n\texample.com/b v1.1.0\n\texample.com/u v1.0.0\n)\n"
	up := testenv.NewUpstream(t, graph...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "selected"}})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(testenv.GoEnv(t, e.srv.URL), "GOFLAGS=-mod=mod")
	testenv.RunGo(t, dir, env, "mod", "graph")
	e.proxy.prefetch.quiesce()
	if n := up.Requests(path(aOld, "mod")); n != 1 {
		t.Fatalf("the older version's go.mod was fetched %d times: not the graph this test models", n)
	}
	for _, m := range graph[1:] {
		for _, k := range []string{"info", "zip"} {
			if n := up.Requests(path(m, k)); n != 1 {
				t.Errorf("%s fetched %d times after `go mod graph`; want 1, prefetched", path(m, k), n)
			}
		}
	}
	if n := up.Requests(path(aOld, "zip")); n != 0 {
		t.Errorf("the zip of a version only read for the graph was prefetched")
	}
	before := up.Total()
	testenv.RunGo(t, dir, env, "mod", "download", "all")
	if n := up.Total() - before; n != 0 {
		t.Errorf("`go mod download all` cost %d upstream requests after the prefetch: %v", n, up.Paths()[before:])
	}
	// The 6, and the go.mod files below the unpruned module not yet asked for.
	if st := e.proxy.PrefetchStats(); st.Fetched < 6 || st.Used != st.Fetched {
		t.Errorf("prefetch stats %+v; want the .info and .zip of the 3 selected versions fetched, and all used", st)
	}
}

// A download of the whole graph asks the zips of modules the main go.mod
// does not list, at the highest version whose go.mod the walk read (MVS's
// choice): the first zip a client asks of a version other than the first
// it asked of that module shows such a download, and the highest versions'
// .info and .zip are prefetched then; a build, which asks only the zips
// of the first versions, gets none of them.
func TestPrefetchSelectedWholeGraph(t *testing.T) {
	t.Parallel()
	v := func(path, version string) testenv.Module {
		return testenv.Module{Path: path, Version: version}
	}
	a, c1, c2, d1, d2 := v("example.com/a", "v1.2.0"), v("example.com/c", "v1.0.0"), v("example.com/c", "v1.1.0"),
		v("example.com/d", "v1.0.0"), v("example.com/d", "v1.3.0")
	up := testenv.NewUpstream(t, a, c1, c2, d1, d2)
	// Modules whose go.mod the upstream has and whose zip it lacks (as a
	// mirror holding only what the go command read has): more failed
	// prefetches than a requested .mod's tree may have, which do not end
	// the session's, as long as the failures are not all in a row.
	var gone, ok []testenv.Module
	for i := range prefetchTreeFailures / 4 {
		m := v(fmt.Sprintf("example.com/ok%d", i), "v1.0.0")
		up.Add(m)
		ok = append(ok, m)
	}
	for i := range 4 * len(ok) {
		m := v(fmt.Sprintf("example.com/gone%d", i), "v1.0.0")
		up.Add(m)
		for _, k := range []string{"info", "zip"} {
			up.Override(path(m, k), func(w http.ResponseWriter, r *http.Request) { http.Error(w, "not found", http.StatusNotFound) })
		}
		gone = append(gone, m)
	}
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "selected"}})
	e.get(path(a, "mod"), 200)
	for i, m := range gone {
		e.get(path(m, "mod"), 200)
		if i%4 == 3 { // a prefetch that works after every 8 that fail
			e.proxy.prefetch.quiesce()
			e.get(path(ok[i/4], "mod"), 200)
			e.proxy.prefetch.quiesce()
		}
	}
	if n := up.Requests(path(ok[len(ok)-1], "zip")); n != 1 {
		t.Fatalf("after %d failed prefetches, with some that worked among them, the session's prefetch stopped (%d requests of the last zip)", 2*len(gone), n)
	}
	// The walk: a (listed by the main go.mod), then c and d at an older
	// version first (an unpruned requirement's), then at a newer one.
	for _, m := range []testenv.Module{c1, d1, c2, d2} {
		e.get(path(m, "mod"), 200)
	}
	e.proxy.prefetch.quiesce()
	// A build: the zips of the first versions, prefetched.
	e.get(path(a, "zip"), 200)
	e.proxy.prefetch.quiesce()
	for _, m := range []testenv.Module{c2, d2} {
		if n := up.Requests(path(m, "zip")); n != 0 {
			t.Errorf("%s.zip fetched %d times before a download of the whole graph", m.Path+"@"+m.Version, n)
		}
	}
	// The download of the whole graph: its first zip beyond the first
	// versions brings the rest.
	e.get(path(c2, "zip"), 200)
	e.proxy.prefetch.quiesce()
	for _, k := range []string{"info", "zip"} {
		if n := up.Requests(path(d2, k)); n != 1 {
			t.Errorf("%s.%s: %d upstream requests after the download began; want 1, prefetched", d2.Path+"@"+d2.Version, k, n)
		}
	}
	before := up.Total()
	e.get(path(d2, "zip"), 200)
	e.get(path(d2, "info"), 200)
	if up.Total() != before {
		t.Error("a prefetched zip was fetched again")
	}
	if n := up.Requests(path(c2, "zip")); n != 1 {
		t.Errorf("the zip the client asked for: %d upstream requests; want 1", n)
	}
}

// What the selected-version prefetch remembers of its clients is bounded
// however many clients and modules ask: at most prefetchSessions
// sessions, prefetchSessionPaths module paths between them.
func TestPrefetchSessionsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.NewUpstream(t), options{prefetch: PrefetchOptions{Mode: "selected"}})
	pf := e.proxy.prefetch
	for c := range prefetchSessions + 44 {
		for m := range 300 {
			a := mustArtifact(t, testenv.EscapedPath(fmt.Sprintf("example.com/c%d/m%d", c, m), "v1.0.0", "mod"))
			pf.clientAsked(a, fmt.Sprintf("10.0.%d.%d:40000", c/256, c%256))
		}
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	held := 0
	for _, s := range pf.sessions {
		held += len(s.paths)
	}
	if len(pf.sessions) > prefetchSessions || pf.paths > prefetchSessionPaths || held != pf.paths {
		t.Errorf("%d sessions holding %d paths (counted %d); bounds %d and %d", len(pf.sessions), held, pf.paths, prefetchSessions, prefetchSessionPaths)
	}
	if held < prefetchSessionPaths/2 {
		t.Errorf("the sessions hold %d paths: the bound is not what limits them", held)
	}
}

// listingGraph is a module graph whose build list holds modules the main
// go.mod does not list, at versions whose go.mod the walk does not read:
// a pruned module's requirements (b, c at the version r requires, u),
// besides those below an unpruned one (d, e), which it reads.
func listingGraph() (graph []testenv.Module, main string) {
	mod := func(path, version, goLine string, reqs ...string) testenv.Module {
		m := testenv.Module{Path: path, Version: version, GoMod: "module " + path + "\n\ngo " + goLine + "\n"}
		for _, r := range reqs {
			m.GoMod += "\nrequire " + r + "\n"
		}
		return m
	}
	graph = []testenv.Module{
		mod("example.com/a", "v1.0.0", "1.21", "example.com/b v1.2.0", "example.com/c v1.0.0"),
		mod("example.com/r", "v1.0.0", "1.21", "example.com/c v1.1.0", "example.com/u v1.0.0"),
		mod("example.com/w", "v1.0.0", "1.16", "example.com/d v1.0.0"), // unpruned
		mod("example.com/d", "v1.0.0", "1.21", "example.com/e v1.3.0"),
		mod("example.com/e", "v1.3.0", "1.21"),
		mod("example.com/b", "v1.1.0", "1.21"),
		mod("example.com/b", "v1.2.0", "1.21"),
		mod("example.com/c", "v1.0.0", "1.21"),
		mod("example.com/c", "v1.1.0", "1.21"),
		mod("example.com/u", "v1.0.0", "1.16", "example.com/b v1.1.0"),
	}
	main = "module example.com/main\n\ngo 1.21\n\nrequire (\n\texample.com/a v1.0.0\n\texample.com/r v1.0.0\n\texample.com/w v1.0.0\n)\n"
	return graph, main
}

// What a session keeps of the go.mod files its client got gives the
// versions minimal version selection picks, as the go command's own `go
// list -m all` shows them, and its `go mod download` lists the build list
// (its .info requests of versions the walk did not read first) once the
// walk is over.
func TestSessionSelectsAsTheGoCommand(t *testing.T) {
	t.Parallel()
	graph, main := listingGraph()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	direct := testenv.NewUpstream(t, graph...)
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(testenv.RunGo(t, dir, append(testenv.GoEnv(t, direct.URL), "GOFLAGS=-mod=mod"), "list", "-m", "all")), "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			want[f[0]] = f[1]
		}
	}
	if len(want) != 8 || want["example.com/c"] != "v1.1.0" || want["example.com/u"] != "v1.0.0" {
		t.Fatalf("the go command selects %v: not the graph this test models", want)
	}
	up := testenv.NewUpstream(t, graph...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "selected"}})
	testenv.RunGo(t, dir, append(testenv.GoEnv(t, e.srv.URL), "GOFLAGS=-mod=mod"), "mod", "download", "-json", "all")
	e.proxy.prefetch.quiesce()
	pf := e.proxy.prefetch
	pf.mu.Lock()
	defer pf.mu.Unlock()
	s := pf.sessions["127.0.0.1"]
	if s == nil {
		t.Fatal("no session of the go command's address")
	}
	if !s.listing {
		t.Error("`go mod download` did not show as a listing of the build list")
	}
	for path, v := range want {
		if got := s.paths[path].selected(); got != v {
			t.Errorf("%s: the session selects %q; the go command %s", path, got, v)
		}
	}
	for path, sp := range s.paths {
		if _, ok := want[path]; !ok {
			t.Errorf("%s (%+v) in the session, not in the build list", path, sp)
		}
	}
}

// Once a client's walk is over, its first .info request of a module at
// the version the walk selects, other than the first it asked, brings the
// .info and .mod of every module of the build list at its selected
// version; zips wait for a download of the whole graph, and an .info of
// another version (a query's) brings nothing.
func TestPrefetchListingOfTheBuildList(t *testing.T) {
	t.Parallel()
	graph, _ := listingGraph()
	v := func(path, version string) testenv.Module { return testenv.Module{Path: path, Version: version} }
	b11, b12, c10, c11, u := v("example.com/b", "v1.1.0"), v("example.com/b", "v1.2.0"), v("example.com/c", "v1.0.0"),
		v("example.com/c", "v1.1.0"), v("example.com/u", "v1.0.0")
	// The walk of the graph's go.mod files, as the go command makes it:
	// the main go.mod's requirements, and those below the unpruned w.
	walk := func(e *env) {
		for _, m := range []testenv.Module{v("example.com/a", "v1.0.0"), v("example.com/r", "v1.0.0"), v("example.com/w", "v1.0.0"),
			v("example.com/d", "v1.0.0"), v("example.com/e", "v1.3.0")} {
			e.get(path(m, "mod"), 200)
		}
		e.proxy.prefetch.quiesce()
		e.get(path(graph[0], "info"), 200) // a root's, at the version asked first
		e.proxy.prefetch.quiesce()
	}
	up := testenv.NewUpstream(t, graph...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "selected"}})
	walk(e)
	for _, m := range []testenv.Module{b12, c11, u} {
		for _, k := range []string{"info", "mod"} {
			if n := up.Requests(path(m, k)); n != 0 {
				t.Fatalf("%s fetched %d times during the walk", path(m, k), n)
			}
		}
	}
	e.get(path(b12, "info"), 200)
	e.proxy.prefetch.quiesce()
	for _, p := range []string{path(b12, "mod"), path(c11, "info"), path(c11, "mod"), path(u, "info"), path(u, "mod")} {
		if n := up.Requests(p); n != 1 {
			t.Errorf("%s: %d upstream requests once the listing began; want 1, prefetched", p, n)
		}
	}
	for _, p := range []string{path(b11, "mod"), path(c10, "info"), path(c10, "mod"), path(b12, "zip"), path(c11, "zip"), path(u, "zip")} {
		if n := up.Requests(p); n != 0 {
			t.Errorf("%s: %d upstream requests; want none (not selected, or a zip)", p, n)
		}
	}
	before := up.Total()
	for _, m := range []testenv.Module{b12, c11, u} {
		e.get(path(m, "info"), 200)
		e.get(path(m, "mod"), 200)
	}
	for _, p := range up.Paths()[before:] {
		if !strings.HasSuffix(p, ".zip") { // a first-asked version's, prefetched
			t.Errorf("the listing asked upstream for %s after the prefetch", p)
		}
	}

	// An .info of a version the walk does not select brings nothing.
	up2 := testenv.NewUpstream(t, graph...)
	e2 := newEnv(t, up2, options{prefetch: PrefetchOptions{Mode: "selected"}})
	walk(e2)
	e2.get(path(b11, "info"), 200)
	e2.proxy.prefetch.quiesce()
	if n := up2.Requests(path(c11, "info")); n != 0 {
		t.Errorf("an .info of a version not selected brought the build list's (%d requests of %s)", n, path(c11, "info"))
	}
}

// At most half the prefetch workers fetch zips: while a graph's zips are
// slow to come, the .mod files a walk is about to ask for are still
// prefetched.
func TestPrefetchZipsLeaveWorkersForMods(t *testing.T) {
	t.Parallel()
	const workers = 4
	up := testenv.NewUpstream(t)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	var inFlight, most atomic.Int32
	var zips []testenv.Module
	for i := range 3 * workers {
		m := testenv.Module{Path: fmt.Sprintf("example.com/z%d", i), Version: "v1.0.0"}
		up.Add(m)
		up.Override(path(m, "zip"), func(w http.ResponseWriter, r *http.Request) {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for old := most.Load(); n > old && !most.CompareAndSwap(old, n); old = most.Load() {
			}
			select {
			case <-release:
			case <-r.Context().Done():
			}
			http.Error(w, "gone", http.StatusNotFound)
		})
		zips = append(zips, m)
	}
	// An unpruned module's requirements: their go.mod files are
	// prefetched when its own is asked for.
	u := testenv.Module{Path: "example.com/u", Version: "v1.0.0", GoMod: "module example.com/u\n\ngo 1.16\n"}
	var reqs []testenv.Module
	for i := range workers {
		m := testenv.Module{Path: fmt.Sprintf("example.com/m%d", i), Version: "v1.0.0"}
		u.GoMod += "\nrequire " + m.Path + " " + m.Version + "\n"
		reqs = append(reqs, m)
	}
	up.Add(u)
	modsDone := make(chan struct{}, len(reqs))
	for _, m := range reqs {
		up.Add(m)
		up.Override(path(m, "mod"), func(w http.ResponseWriter, r *http.Request) {
			w.Write(m.Mod())
			modsDone <- struct{}{}
		})
	}
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "selected", Workers: workers}})
	for _, m := range zips {
		e.get(path(m, "mod"), 200) // its .info and .zip are prefetched
	}
	e.get(path(u, "mod"), 200)
	for range reqs {
		select {
		case <-modsDone:
		case <-time.After(30 * time.Second):
			t.Fatalf("the go.mod files below u were not prefetched while zips were in flight (%d zips at once)", inFlight.Load())
		}
	}
	if n := most.Load(); n > workers/2 {
		t.Errorf("%d zips prefetched at once by %d workers; want at most %d", n, workers, workers/2)
	}
	once.Do(func() { close(release) })
	e.proxy.prefetch.quiesce()
}

// A go.mod the session was to read whose answer was an error (its
// upstream failing) is read when the client asks for it again: what it
// requires reaches the session's selection.
func TestSessionReadsAGoModAgainAfterAnError(t *testing.T) {
	t.Parallel()
	graph, _ := listingGraph()
	up := testenv.NewUpstream(t, graph...)
	e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "selected"}})
	pf := e.proxy.prefetch
	req := func(module string) string {
		pf.mu.Lock()
		defer pf.mu.Unlock()
		for _, s := range pf.sessions {
			return s.paths[module].req
		}
		return ""
	}
	a := path(graph[0], "mod") // example.com/a v1.0.0: requires b v1.2.0, c v1.0.0
	up.SetFailure(http.StatusInternalServerError)
	if resp, _ := e.do("GET", a); resp.StatusCode < 500 {
		t.Fatalf("GET %s with the upstream failing: %d", a, resp.StatusCode)
	}
	if got := req("example.com/b"); got != "" {
		t.Fatalf("a failed go.mod was read into the session: b requires %q", got)
	}
	up.SetFailure(0)
	e.get(a, http.StatusOK)
	if got, got2 := req("example.com/b"), req("example.com/c"); got != "v1.2.0" || got2 != "v1.0.0" {
		t.Errorf("after the go.mod was asked again: b at %q, c at %q in the session; want v1.2.0, v1.0.0", got, got2)
	}
}

// A session reads what a go.mod requires once: for the first version a
// client asks of a module and those beyond the lowest and highest it
// asked, not when the same go.mod is asked for again (a hit costs no
// parse), and not once the walk is over.
func TestSessionReadsEachGoModOnce(t *testing.T) {
	t.Parallel()
	graph, _ := listingGraph()
	e := newEnv(t, testenv.NewUpstream(t, graph...), options{prefetch: PrefetchOptions{Mode: "selected"}})
	pf := e.proxy.prefetch
	const client = "10.1.2.3:4000"
	asks := []struct {
		path string
		read bool
	}{
		{testenv.EscapedPath("example.com/b", "v1.1.0", "mod"), true},
		{testenv.EscapedPath("example.com/b", "v1.1.0", "mod"), false},
		{testenv.EscapedPath("example.com/b", "v1.2.0", "mod"), true}, // beyond the highest
		{testenv.EscapedPath("example.com/b", "v1.0.0", "mod"), true}, // below the lowest
		{testenv.EscapedPath("example.com/b", "v1.1.0", "mod"), false},
		{testenv.EscapedPath("example.com/b", "v1.2.0", "mod"), false},
	}
	for _, ask := range asks {
		if _, read := pf.clientAsked(mustArtifact(t, ask.path), client); read != ask.read {
			t.Errorf("%s: read %v; want %v", ask.path, read, ask.read)
		}
	}
	pf.clientGot(mustArtifact(t, asks[0].path), client, false, nil, nil) // a .mod found: the walk works
	pf.clientAsked(mustArtifact(t, testenv.EscapedPath("example.com/b", "v1.2.0", "info")), client)
	pf.mu.Lock()
	listing := pf.sessions["10.1.2.3"].listing
	pf.mu.Unlock()
	if !listing {
		t.Fatal("the .info of the selected version did not start the listing")
	}
	if _, read := pf.clientAsked(mustArtifact(t, testenv.EscapedPath("example.com/c", "v1.0.0", "mod")), client); read {
		t.Error("a go.mod asked for once the listing began was read into the walk")
	}
}

// A prefetch and a client's fetch of the same artifact make one upstream
// request, and the prefetch counts as one only when it made that request:
// a prefetch of what a client is fetching is left to the client (not a
// fetched prefetch no one used), and a client joining a prefetch's fetch
// makes it a used one, even when the prefetcher had not heard of the
// client before the prefetch began.
func TestPrefetchAndAClientFetchCountOnce(t *testing.T) {
	t.Parallel()
	for _, clientFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("clientFirst=%v", clientFirst), func(t *testing.T) {
			t.Parallel()
			m := requiring("example.com/held", nil)
			up := testenv.NewUpstream(t, m)
			started, release := make(chan struct{}), make(chan struct{})
			up.Override(path(m, "mod"), func(w http.ResponseWriter, r *http.Request) {
				close(started) // one request only: a second panics
				<-release
				w.Write(m.Mod())
			})
			e := newEnv(t, up, options{prefetch: PrefetchOptions{Mode: "mod"}})
			a := mustArtifact(t, path(m, "mod"))
			pf := e.proxy.prefetch
			enqueue := func() { pf.enqueue(prefetchItem{a: a, depth: 1, tree: &prefetchTree{left: 10}}) }
			client := make(chan error, 1)
			if clientFirst {
				go func() {
					obj, err := e.proxy.collapse(t.Context(), a)
					if err == nil {
						obj.Close()
					}
					client <- err
				}()
				<-started
				enqueue()
				quiet := make(chan struct{})
				go func() { pf.quiesce(); close(quiet) }()
				select {
				case <-quiet:
				case <-time.After(30 * time.Second):
					t.Error("the prefetch waits for the client's fetch")
				}
				close(release)
				<-quiet
			} else {
				enqueue()
				<-started
				// The client's join, as when Get told the prefetcher of
				// the request before the prefetch was queued.
				fl := e.proxy.join(a, false, false)
				close(release)
				obj, err := e.proxy.await(t.Context(), fl)
				if err == nil {
					obj.Close()
				}
				client <- err
				pf.quiesce()
			}
			if err := <-client; err != nil {
				t.Fatal(err)
			}
			st := e.proxy.PrefetchStats()
			want := PrefetchStats{Fetched: 1, Used: 1}
			if clientFirst {
				want = PrefetchStats{Skipped: 1}
			}
			if st != want {
				t.Errorf("prefetch stats %+v; want %+v", st, want)
			}
			if n := up.Requests(path(m, "mod")); n != 1 {
				t.Errorf("%d upstream requests; want 1", n)
			}
		})
	}
}
