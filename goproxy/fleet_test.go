package goproxy

import (
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// newFleet is several proxies, each with its own memory and disk, sharing one
// real Redis, as Caddy edges behind a load balancer would.
func newFleet(t *testing.T, up *testenv.Upstream, n int, o options) []*env {
	t.Helper()
	nodes := make([]*env, n)
	for i := range nodes {
		nodes[i] = newEnv(t, up, o)
	}
	return nodes
}

// hammer sends each path to the nodes round-robin, all at once, and
// returns the errors: a failed request, a non-200 or wrong bytes.
func hammer(nodes []*env, paths []string, want map[string][]byte, copies int) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	i := 0
	for _, p := range paths {
		for range copies {
			node := nodes[i%len(nodes)]
			i++
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := testenv.GetCheck(node.srv.URL+"/"+p, want[p])
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", p, err))
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	return errs
}

// redisKey is the Redis key of a shared object ("obj"), not-found answer
// ("nf") or lock ("lock") of path, in the env's namespace.
func (e *env) redisKey(kind, path string) string {
	return e.t.Name() + ":v3:" + kind + ":{" + e.key(path) + "}"
}

func TestFleetCollapse(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, modA, modUp)
	up.SetDelay(300 * time.Millisecond)
	nodes := newFleet(t, up, 3, options{memory: true, redis: r})
	want := map[string][]byte{
		path(modA, "zip"):  modA.Zip(t),
		path(modA, "info"): modA.Info(),
		path(modUp, "mod"): modUp.Mod(),
	}
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	// 100 concurrent cold requests per artifact, spread over three nodes.
	for _, err := range hammer(nodes, paths, want, 100) {
		t.Error(err)
	}
	for _, p := range paths {
		if n := up.Requests(p); n != 1 {
			t.Errorf("%s: %d upstream requests from three nodes; want 1", p, n)
		}
	}
	// The shared tier holds what one node fetched, namespaced by prefix
	// and layout version.
	key := nodes[0].redisKey("obj", path(modA, "info"))
	if reply, err := r.Do("EXISTS", key); err != nil || reply != ":1" {
		t.Errorf("EXISTS %s = %q, %v", key, reply, err)
	}
}

func TestFleetLargeObjectsStayOutOfRedis(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, modA)
	nodes := newFleet(t, up, 2, options{redis: r, redisMax: 64})
	p := path(modA, "zip")
	for _, n := range nodes {
		n.get(p, 200)
	}
	if reply, _ := r.Do("EXISTS", nodes[0].redisKey("obj", p)); reply != ":0" {
		t.Errorf("a zip larger than max_object is in redis: EXISTS = %s", reply)
	}
	// Too large for the shared tier, and handed over only to nodes that
	// wait for it: the second node, which asked later, fetched it itself.
	if n := up.Requests(p); n != 2 {
		t.Errorf("upstream requests %d; want 2", n)
	}
	if reply, _ := r.Do("KEYS", t.Name()+":v3:xfer*"); reply != "*0" {
		t.Errorf("a hand-over was left in redis with nobody waiting: KEYS = %s", reply)
	}
}

func TestFleetLargeObjectsHandedOver(t *testing.T) {
	t.Parallel()
	const size = 6 << 20
	r := testenv.StartRedis(t)
	up, big, zipFile := bigZipUpstream(t, size, 200*time.Millisecond)
	// A 1 MiB chunk under -race on a loaded machine can take longer than
	// the default 1s per Redis operation; the count is what is tested.
	nodes := newFleet(t, up, 3, options{redis: r, redisMax: 1 << 20, redisTimeout: 10 * time.Second})
	want, _ := os.ReadFile(zipFile)
	p := path(big, "zip")
	for _, err := range hammer(nodes, []string{p}, map[string][]byte{p: want}, 30) {
		t.Error(err)
	}
	if n := up.Requests(p); n != 1 {
		t.Errorf("a zip larger than redis max_object: %d upstream requests from three nodes; want 1", n)
	}
	if reply, _ := r.Do("EXISTS", nodes[0].redisKey("obj", p)); reply != ":0" {
		t.Errorf("the large zip was stored as a redis object: EXISTS = %s", reply)
	}
}

func TestFleetSurvivesRedisFailure(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	r := testenv.StartRedis(t)
	mods := make([]testenv.Module, 60)
	for i := range mods {
		mods[i] = testenv.Module{Path: "example.com/m", Version: fmt.Sprintf("v1.0.%d", i)}
	}
	up := testenv.NewUpstream(t, mods...)
	nodes := newFleet(t, up, 3, options{memory: true, redis: r, redisTimeout: 200 * time.Millisecond})
	want := map[string][]byte{}
	paths := func(from, to int) []string {
		var ps []string
		for _, m := range mods[from:to] {
			for _, k := range []string{"info", "mod"} {
				ps = append(ps, path(m, k))
				want[path(m, k)] = map[string][]byte{"info": m.Info(), "mod": m.Mod()}[k]
			}
		}
		return ps
	}
	check := func(phase string, ps []string) {
		t.Helper()
		for _, err := range hammer(nodes, ps, want, 3) {
			t.Errorf("%s: %v", phase, err)
		}
	}
	check("redis up", paths(0, 15))

	// Killed while requests are in flight (upstream answers slowly, so
	// fetches, lock waits and tier writes are under way), then refused.
	up.SetDelay(100 * time.Millisecond)
	done := make(chan struct{})
	before := up.Total()
	go func() {
		defer close(done)
		check("redis killed mid-run", append(paths(0, 15), paths(15, 25)...))
	}()
	up.WaitTotal(t, before+5) // fetches are under way
	r.Stop()
	<-done
	up.SetDelay(0)
	check("redis down", paths(25, 30))

	r.Start() // back, empty (a restart or a flush loses everything)
	check("redis restarted", paths(30, 40))
	// The tier is used again once the breaker lets a probe through: each
	// miss waits for the breaker's next probe.
	recovered := false
	for i := 40; i < 60 && !recovered; i++ {
		p := path(mods[i], "info")
		nodes[0].get(p, 200)
		reply, _ := r.Do("EXISTS", nodes[0].redisKey("obj", p))
		if recovered = reply == ":1"; !recovered {
			<-time.After(time.Until(nodes[0].cache.Conn.ProbeAt()))
		}
	}
	if !recovered {
		t.Error("redis tier not used again after redis came back")
	}
}

func TestFleetSurvivesSlowRedis(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, modA, modA11)
	nodes := newFleet(t, up, 2, options{memory: true, redis: r, redisTimeout: 100 * time.Millisecond})
	nodes[0].get(path(modA, "info"), 200)
	// A stopped process accepts connections but never answers: every
	// operation runs into its timeout until the breaker opens.
	r.Pause()
	defer r.Resume()
	start := time.Now()
	want := map[string][]byte{path(modA, "mod"): modA.Mod(), path(modA11, "info"): modA11.Info(), path(modA, "info"): modA.Info()}
	for _, err := range hammer(nodes, []string{path(modA, "mod"), path(modA11, "info"), path(modA, "info")}, want, 4) {
		t.Error(err)
	}
	// Bounded: a handful of 100ms timeouts, not a hang.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("requests with a hung redis took %v", d)
	}
}

// A request waits about one timeout for a stalled Redis, not one per
// operation (tier read, not-found lookup, lock): the first operation that
// times out opens the breaker, and the request goes on without Redis.
func TestStalledRedisCostsOneTimeout(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, modA, modA11)
	const timeout = time.Second
	e := newEnv(t, up, options{memory: true, redis: r, redisTimeout: timeout})
	e.get(path(modA, "info"), 200)
	r.Pause()
	defer r.Resume()
	start := time.Now()
	e.get(path(modA11, "info"), 200)
	if d := time.Since(start); d >= 2*timeout {
		t.Errorf("a cold request with a stalled redis took %v; want about one timeout (%v)", d, timeout)
	}
	if !e.cache.Conn.ProbeAt().After(time.Now()) {
		t.Error("the breaker did not open on the first stalled operation")
	}
}
