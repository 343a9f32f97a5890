package goproxy

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// topologies are the Redis deployments a fleet runs on: one server, a
// Cluster of three masters with a replica each, and a master with a
// replica behind three sentinels.
var topologies = []struct {
	name  string
	start func(t *testing.T) testenv.RedisTarget
}{
	{"single", func(t *testing.T) testenv.RedisTarget { return testenv.StartRedis(t) }},
	{"cluster", func(t *testing.T) testenv.RedisTarget { return testenv.StartRedisCluster(t) }},
	{"sentinel", func(t *testing.T) testenv.RedisTarget { return testenv.StartRedisSentinel(t) }},
}

// The fleet's promises hold on every deployment of Redis: a cold burst
// across three edges costs one upstream fetch per artifact, a large zip
// is handed over, a missing version is asked for once, a purge reaches
// the other edges, and a lock outlives a fetch longer than its TTL.
func TestFleetOnRedisTopologies(t *testing.T) {
	t.Parallel()
	for _, tp := range topologies {
		t.Run(tp.name, func(t *testing.T) {
			t.Parallel()
			target := tp.start(t)
			t.Run("burst", func(t *testing.T) {
				t.Parallel()
				up := testenv.NewUpstream(t, modA, modUp)
				up.SetDelay(300 * time.Millisecond)
				nodes := newFleet(t, up, 3, options{memory: true, redisTarget: target, logger: warnFree(t)})
				want := map[string][]byte{
					path(modA, "zip"):  modA.Zip(t),
					path(modA, "info"): modA.Info(),
					path(modUp, "mod"): modUp.Mod(),
				}
				paths := slices.Collect(maps.Keys(want))
				for _, err := range hammer(nodes, paths, want, 60) {
					t.Error(err)
				}
				for _, p := range paths {
					if n := up.Requests(p); n != 1 {
						t.Errorf("%s: %d upstream requests from three edges; want 1", p, n)
					}
				}
				// A second look is served from the shared tier by an
				// edge that never fetched (its memory is its own).
				late := newEnv(t, up, options{redisTarget: target, memory: true, logger: warnFree(t)})
				for _, err := range hammer([]*env{late}, paths, want, 1) {
					t.Error(err)
				}
				for _, p := range paths {
					if n := up.Requests(p); n != 1 {
						t.Errorf("%s: %d upstream requests after a fourth edge asked; want 1", p, n)
					}
				}
			})
			t.Run("handover", func(t *testing.T) {
				t.Parallel()
				up, big, zipFile := bigZipUpstream(t, 3<<20, 300*time.Millisecond)
				nodes := newFleet(t, up, 3, options{redisTarget: target, redisMax: 256 << 10, redisTimeout: 10 * time.Second, logger: warnFree(t)})
				want, err := os.ReadFile(zipFile)
				if err != nil {
					t.Fatal(err)
				}
				p := path(big, "zip")
				for _, err := range hammer(nodes, []string{p}, map[string][]byte{p: want}, 15) {
					t.Error(err)
				}
				if n := up.Requests(p); n != 1 {
					t.Errorf("a zip larger than redis max_object: %d upstream requests from three edges; want 1", n)
				}
			})
			// A not-found answer is shared too: a burst for a missing
			// version across the fleet costs one upstream request.
			t.Run("notfound", func(t *testing.T) {
				t.Parallel()
				up := testenv.NewUpstream(t, modA)
				up.SetDelay(200 * time.Millisecond)
				nodes := newFleet(t, up, 3, options{memory: true, redisTarget: target, logger: warnFree(t)})
				missing := "example.com/a/@v/v1.7.7.info"
				var wg sync.WaitGroup
				for i := range 30 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						resp, body := nodes[i%3].do("GET", missing)
						if resp.StatusCode != 404 || !strings.Contains(string(body), "v1.7.7") {
							t.Errorf("missing version: %d %q", resp.StatusCode, body)
						}
					}()
				}
				wg.Wait()
				if n := up.Requests(missing); n != 1 {
					t.Errorf("%d upstream requests for a missing version from three edges; want 1", n)
				}
			})
			t.Run("purge", func(t *testing.T) {
				t.Parallel()
				up := testenv.NewUpstream(t, modA)
				nodes := newFleet(t, up, 2, options{memory: true, redisTarget: target, logger: warnFree(t)})
				zip := path(modA, "zip")
				for _, n := range nodes {
					n.get(zip, 200)
				}
				if n := up.Requests(zip); n != 1 {
					t.Fatalf("%d upstream requests before the purge; want 1", n)
				}
				if err := nodes[0].proxy.PurgeVersion(t.Context(), modA.Path, modA.Version); err != nil {
					t.Fatal(err)
				}
				select {
				case <-nodes[1].cache.Purged():
				case <-time.After(time.Minute):
					t.Fatal("the purge did not reach the other edge")
				}
				// Neither its memory nor its disk nor Redis holds the zip:
				// it is fetched again, once.
				nodes[1].get(zip, 200)
				if n := up.Requests(zip); n != 2 {
					t.Errorf("%d upstream requests after the purge; want 2", n)
				}
			})
			t.Run("renewal", func(t *testing.T) {
				t.Parallel()
				up := testenv.NewUpstream(t, modA)
				// The fetch takes three times the lock's TTL: only a
				// renewed lock keeps the other edges waiting. (A TTL
				// long enough that renewals every third of it stay in
				// time on a loaded machine under -race.)
				const ttl = 1500 * time.Millisecond
				up.SetDelay(3 * ttl)
				nodes := newFleet(t, up, 3, options{redisTarget: target, lockTTL: ttl, logger: warnFree(t)})
				p := path(modA, "zip")
				for _, err := range hammer(nodes, []string{p}, map[string][]byte{p: modA.Zip(t)}, 9) {
					t.Error(err)
				}
				if n := up.Requests(p); n != 1 {
					t.Errorf("a fetch longer than the lock's TTL: %d upstream requests; want 1", n)
				}
			})
		})
	}
}

// warnFree is the test's logger, which fails the test at its end if
// anything was logged at warn level or above, but the storage of
// unverified modules: on a healthy Redis of any
// kind, no operation may fail (a command whose keys span two Cluster slots
// would, with CROSSSLOT).
func warnFree(t *testing.T) *zap.Logger {
	core, logs := observer.New(zapcore.WarnLevel)
	t.Cleanup(func() {
		for _, e := range logs.All() {
			if strings.Contains(e.Message, "unverified") || strings.Contains(e.Message, "without checksum verification") {
				continue // these fixtures are in no checksum database
			}
			t.Errorf("logged at %s on a healthy redis: %s %v", e.Level, e.Message, e.ContextMap())
		}
	})
	return zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
}

// waveModules are n new modules of wave w, added to up.
func waveModules(t *testing.T, up *testenv.Upstream, w, n int) map[string][]byte {
	want := map[string][]byte{}
	for i := range n {
		m := testenv.Module{Path: fmt.Sprintf("example.com/wave%d/m%d", w, i), Version: "v1.0.0",
			Files: map[string]string{"m.go": fmt.Sprintf("package m\n\nconst W, I = %d, %d\n", w, i)}}
		up.Add(m)
		want[path(m, "info")], want[path(m, "mod")], want[path(m, "zip")] = m.Info(), m.Mod(), m.Zip(t)
	}
	return want
}

// failoverBurst runs waves of cold requests across three edges while
// failover disturbs Redis (kills a master and waits for its replica to
// take over, or moves slots), and goes on for two waves after: every
// answer must be right, and no artifact may be fetched more than twice.
func failoverBurst(t *testing.T, target testenv.RedisTarget, failover func() time.Duration) {
	up := testenv.NewUpstream(t)
	up.SetDelay(200 * time.Millisecond)
	// The edges wait up to 10 s for a failing Redis: longer than the
	// tests' failovers take.
	nodes := newFleet(t, up, 3, options{memory: true, redisTarget: target, redisFailover: 10 * time.Second})
	done := make(chan time.Duration, 1)
	var all []string
	after := -1
	for w := 0; w < 60; w++ { // bounded: the failover takes a few seconds
		want := waveModules(t, up, w, 8)
		paths := slices.Collect(maps.Keys(want))
		all = append(all, paths...)
		if w == 1 {
			go func() { done <- failover() }()
		}
		for _, err := range hammer(nodes, paths, want, 6) {
			t.Errorf("wave %d: %v", w, err)
		}
		if after < 0 {
			select {
			case took := <-done:
				t.Logf("the failover (or reshard) took %v and ended during wave %d", took.Round(time.Millisecond), w)
				after = w
			default:
			}
		}
		if after >= 0 && w >= after+2 {
			break
		}
	}
	if after < 0 {
		t.Fatal("the failover did not end during 60 waves")
	}
	fetches := 0
	for _, p := range all {
		n := up.Requests(p)
		fetches += n
		if n > 2 {
			t.Errorf("%s: %d upstream requests through a failover; want at most 2", p, n)
		}
	}
	t.Logf("%d artifacts, %d upstream fetches", len(all), fetches)
}

// A master of the cluster killed during a cold burst: its replica is
// promoted, and the clients see nothing of it.
func TestFleetClusterFailover(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	c := testenv.StartRedisCluster(t)
	failoverBurst(t, c, func() time.Duration { return c.KillAndFailover(c.Masters()[0]) })
}

// The slots in use move to another master while edges use them: clients
// get ASK and MOVED, and the fleet follows them.
func TestFleetClusterReshard(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	c := testenv.StartRedisCluster(t)
	failoverBurst(t, c, func() time.Duration {
		start := time.Now()
		ms := c.Masters()
		// All of one master's slots to another: every key it held moves.
		if err := c.Reshard(ms[0], ms[1], 5461); err != nil {
			t.Error(err)
		}
		c.WaitHealthy()
		return time.Since(start)
	})
}

// The sentinels' master killed during a cold burst.
func TestFleetSentinelFailover(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	s := testenv.StartRedisSentinel(t)
	failoverBurst(t, s, s.KillAndFailover)
}
