package goproxy

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/testcache"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

func redisClient(t *testing.T, r *testenv.Redis) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// forgedModA is what an attacker would plant for modA: a zip that runs
// code at init and a go.mod that requires another module.
func forgedModA(t *testing.T) map[string][]byte {
	evil := testenv.Module{Path: modA.Path, Version: modA.Version, Files: map[string]string{"a.go": "package a\n\nfunc init() { panic(\"pwned\") }\n"}}
	return map[string][]byte{
		path(modA, "zip"): evil.Zip(t),
		path(modA, "mod"): []byte("module example.com/a\n\nrequire example.com/evil v1.0.0\n"),
	}
}

// A .mod or .zip that someone with write access to Redis forged, bound to
// its key and with a matching SHA-256, is checked against the checksum
// database before it is served or promoted: it is deleted and the genuine
// one fetched.
func TestFleetForgedRedisValueRejected(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	db := testenv.NewSumDB(t, sumdbName, modA)
	up := testenv.NewUpstream(t, modA)
	forged := forgedModA(t)
	e := newEnv(t, up, options{memory: true, redis: r, sumdb: db})
	rc := redisClient(t, r)
	for key, data := range forged {
		meta := cachetier.MetaFor(data, time.Time{})
		val := append(cachetier.EncodeHeader(e.key(key), meta, e.cache.Key, fleetkey.KindRedisObject), data...)
		if err := rc.Set(context.Background(), e.redisKey("obj", key), val, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]byte{path(modA, "zip"): modA.Zip(t), path(modA, "mod"): modA.Mod()}
	for key := range forged {
		for range 2 {
			if _, body := e.get(key, 200); !bytes.Equal(body, want[key]) {
				t.Fatalf("%s: served the forged value", key)
			}
		}
		if n := up.Requests(key); n != 1 {
			t.Errorf("%s fetched %d times; want 1 (the forged value refused, the genuine one cached)", key, n)
		}
		if val, _ := rc.Get(context.Background(), e.redisKey("obj", key)).Bytes(); bytes.Contains(val, forged[key]) {
			t.Errorf("%s: the forged value is still in redis", key)
		}
	}
	if n := e.proxy.VerifyFailures(); n != 2 {
		t.Errorf("verification failures %d; want 2", n)
	}
}

// A hand-over that someone with write access to Redis planted, with a
// header bound to its key and the forged content's own size and SHA-256,
// is checked like an upstream answer: against the checksum database for a
// public module, and for its form. It is refused and deleted, and the
// genuine object fetched.
func TestFleetForgedHandOverRejected(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	db := testenv.NewSumDB(t, sumdbName, modA)
	up := testenv.NewUpstream(t, modA)
	forged := forgedModA(t)
	e := newEnv(t, up, options{redis: r, redisMax: 16, sumdb: db})
	rc := redisClient(t, r)
	ctx := context.Background()
	for p, data := range forged {
		base := e.redisKey("xfer", p)
		if err := rc.Set(ctx, base+":0", data, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rc.Set(ctx, base, cachetier.EncodeHeader(e.key(p), cachetier.MetaFor(data, time.Time{}), e.cache.Key, fleetkey.KindHandOver), time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]byte{path(modA, "zip"): modA.Zip(t), path(modA, "mod"): modA.Mod()}
	for p := range forged {
		if _, body := e.get(p, 200); !bytes.Equal(body, want[p]) {
			t.Fatalf("%s: served the forged hand-over", p)
		}
		if n := up.Requests(p); n != 1 {
			t.Errorf("%s fetched %d times; want 1 (the forged hand-over refused)", p, n)
		}
		if n, _ := rc.Exists(ctx, e.redisKey("xfer", p)).Result(); n != 0 {
			t.Errorf("%s: the forged hand-over is still in redis", p)
		}
	}
	// Restarted on the same disk, the node serves what it fetched.
	e.close()
	e2 := newEnv(t, up, options{redis: r, redisMax: 16, sumdb: db, diskRoot: e.diskRoot})
	for p := range forged {
		if _, body := e2.get(p, 200); !bytes.Equal(body, want[p]) {
			t.Errorf("%s after a restart: not the genuine object", p)
		}
	}
}

// A shared not-found entry is only ever a 404 or 410: anything else found
// there is deleted and the artifact fetched.
func TestFleetNotFoundEntriesOnlyNotFound(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{redis: r})
	rc := redisClient(t, r)
	for key, val := range map[string]string{
		path(modA, "info"): "500 upstream on fire",
		path(modA, "mod"):  "200 module example.com/evil",
		path(modA, "zip"):  "302 https://evil.example/x.zip",
	} {
		rc.Set(context.Background(), e.redisKey("nf", key), val, time.Minute)
	}
	for _, k := range []string{"info", "mod", "zip"} {
		e.get(path(modA, k), 200)
		if n, _ := rc.Exists(context.Background(), e.redisKey("nf", path(modA, k))).Result(); n != 0 {
			t.Errorf("the forged not-found entry of %s was kept", k)
		}
	}
	// A genuine one is shared.
	e.cache.Fleet.PutNotFound(context.Background(), e.key("example.com/a/@v/v1.9.9.info"), 410, "gone for good\nsecond line", time.Minute)
	if _, body := e.get("example.com/a/@v/v1.9.9.info", 410); string(body) != "gone for good\n" {
		t.Errorf("shared not-found reason %q", body)
	}
}

// A lock set without an expiry (no node sets one) would block its
// artifact forever; it is broken.
func TestFleetLockWithoutTTLBroken(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{redis: r, timeout: 30 * time.Second})
	redisClient(t, r).Set(context.Background(), e.redisKey("lock", path(modA, "info")), "forever", 0)
	e.get(path(modA, "info"), 200)
}

// Large objects are handed over only within the fleet's budget of bytes in
// flight: above it, waiting nodes fetch for themselves and Redis stays
// small.
func TestFleetHandOverBudget(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	const size = 3 << 20
	r := testenv.StartRedis(t)
	up, big, zipFile := bigZipUpstream(t, size, 200*time.Millisecond)
	nodes := newFleet(t, up, 3, options{redis: r, redisMax: 1 << 20, handOverMax: 1 << 20})
	want, _ := os.ReadFile(zipFile)
	p := path(big, "zip")
	for _, err := range hammer(nodes, []string{p}, map[string][]byte{p: want}, 9) {
		t.Error(err)
	}
	if n := up.Requests(p); n != 3 {
		t.Errorf("%d upstream requests; want 3: one per node, nothing handed over beyond the budget", n)
	}
	if keys, _ := redisClient(t, r).Keys(context.Background(), t.Name()+":v3:xfer:*").Result(); len(keys) != 0 {
		t.Errorf("hand-over chunks in redis beyond the budget: %v", keys)
	}
}

// A purge holds in a fleet: the object, its not-found entries and
// hand-overs go everywhere, every node drops its own memory and disk
// copies (a node started later too), and nobody writes an older copy back
// into Redis.
func TestFleetPurge(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, modA)
	o := options{memory: true, redis: r}
	nodes := newFleet(t, up, 2, o)
	zip := path(modA, "zip")
	for _, n := range nodes {
		n.get(zip, 200)
	}
	// node 1 also holds a disk copy of its own, stored before the purge
	data := modA.Zip(t)
	meta := cachetier.MetaFor(data, time.Time{})
	meta.Stored = time.Now().Add(-time.Minute)
	if err := nodes[1].disk.Put(t.Context(), nodes[1].key(zip), meta, data); err != nil {
		t.Fatal(err)
	}
	lateDisk := t.TempDir() // a node that is down during the purge
	late := newEnv(t, up, options{diskRoot: lateDisk})
	late.disk.Put(t.Context(), late.key(zip), meta, data)
	late.close()

	if err := nodes[0].proxy.PurgeVersion(t.Context(), modA.Path, modA.Version); err != nil {
		t.Fatal(err)
	}
	// gone waits for a purge to reach e, and reports whether e dropped
	// its copies.
	gone := func(e *env) bool {
		select {
		case <-e.cache.Purged():
		case <-time.After(time.Minute):
			return false
		}
		_, held := e.disk.File(e.key(zip))
		if m, ok := e.tiers.Tiers()[0].(*cachetier.MemoryTier); ok {
			if obj, err := m.Get(t.Context(), e.key(zip)); err == nil {
				obj.Close()
				held = true
			}
		}
		return !held
	}
	if !gone(nodes[1]) {
		t.Fatal("the other node still holds the purged zip")
	}
	// Node 1's disk copy, promoted, would not go back into Redis either.
	if err := nodes[1].tiers.Tiers()[1].Put(t.Context(), nodes[1].key(zip), meta, data); err != nil {
		t.Fatal(err)
	}
	if n, _ := redisClient(t, r).Exists(t.Context(), nodes[1].redisKey("obj", zip)).Result(); n != 0 {
		t.Error("a copy stored before the purge was written back into redis")
	}
	before := up.Requests(zip)
	nodes[1].get(zip, 200)
	if n := up.Requests(zip) - before; n != 1 {
		t.Errorf("after the purge the zip was fetched %d times; want 1", n)
	}
	// The node that was down catches up when it starts.
	restarted := newEnv(t, up, options{diskRoot: lateDisk, redis: r})
	if !gone(restarted) {
		t.Error("a node started after the purge kept its copy")
	}
}

// Requests that waited for a fetch are served from the fetched file
// itself, even when eviction removes it at once.
func TestWaitersServedFromFetchedFile(t *testing.T) {
	t.Parallel()
	const size = 2 << 20
	up, big, zipFile := bigZipUpstream(t, size, 300*time.Millisecond)
	// The bound leaves less room than the zip takes: it is evicted as soon
	// as it is stored.
	e := newEnv(t, up, options{diskMax: 256*4096 + size/2})
	want, _ := os.ReadFile(zipFile)
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := testenv.GetCheck(e.srv.URL+"/"+path(big, "zip"), want); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := up.Requests(path(big, "zip")); n != 1 {
		t.Errorf("%d upstream requests; want 1", n)
	}
}

// Upstream answers are read as sent: identity encoding is asked for, and
// a compressed body is not expanded behind the size limits.
func TestUpstreamIdentityEncoding(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	var asked []string
	var mu sync.Mutex
	up.Override(path(modA, "mod"), func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		w.Header().Set("Content-Encoding", "gzip") // sent anyway: a gzip bomb, say
		w.Write([]byte("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"))
	})
	e := newEnv(t, up, options{})
	if resp, body := e.do("GET", path(modA, "mod")); resp.StatusCode != 502 {
		t.Errorf("compressed go.mod: %d %q; want 502", resp.StatusCode, body)
	}
	if len(asked) != 1 || asked[0] != "identity" {
		t.Errorf("Accept-Encoding sent: %q; want identity", asked)
	}
}

// Fetches read their bodies within a byte budget: beyond it they wait.
func TestSpoolBudget(t *testing.T) {
	t.Parallel()
	const size = 600 << 10
	var mods []testenv.Module
	up := testenv.NewUpstream(t)
	dir := t.TempDir()
	for i := range 3 {
		m := testenv.Module{Path: "example.com/big" + string(rune('a'+i)), Version: "v1.0.0"}
		up.AddBigZip(m, testenv.WriteBigZip(t, dir, m, size))
		mods = append(mods, m)
	}
	release := make(chan struct{})
	for _, m := range mods {
		file := up.ZipFile(path(m, "zip"))
		up.Override(path(m, "zip"), func(w http.ResponseWriter, r *http.Request) {
			data, _ := os.ReadFile(file)
			w.Header().Set("Content-Length", strconvItoa(len(data)))
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			<-release
			w.Write(data)
		})
	}
	e := newEnv(t, up, options{spoolMax: 1 << 20})
	var wg sync.WaitGroup
	for _, m := range mods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.get(path(m, "zip"), 200)
		}()
	}
	// Every answer's headers are in: one fetch reads its body, the other
	// two wait for the budget.
	for timeout := time.After(time.Minute); ; {
		if _, waiting := e.proxy.Spooling(); waiting == 2 {
			break
		}
		select {
		case <-e.proxy.budget.changed:
		case <-timeout:
			t.Fatal("the fetches never waited for the budget")
		}
	}
	used, waiting := e.proxy.Spooling()
	if waiting != 2 || used > 1<<20 {
		t.Errorf("%d bytes reserved, %d fetches waiting; want at most 1 MiB and 2 waiting", used, waiting)
	}
	close(release)
	wg.Wait()
	if used, _ := e.proxy.Spooling(); used != 0 {
		t.Errorf("%d bytes still reserved after the fetches", used)
	}
}

// Upstream fetches, and connections to one upstream host, are capped:
// excess requests wait, and all are answered.
func TestUpstreamConcurrencyCapped(t *testing.T) {
	t.Parallel()
	var mods []testenv.Module
	for i := range 12 {
		mods = append(mods, testenv.Module{Path: "example.com/m", Version: "v1.0." + strconvItoa(i)})
	}
	for _, tt := range []struct {
		name string
		o    options
		max  int
	}{
		{"fetches", options{maxFetches: 3}, 3},
		{"connections per host", options{maxConnsPerHost: 2}, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := testenv.NewUpstream(t, mods...)
			up.SetDelay(100 * time.Millisecond)
			e := newEnv(t, up, tt.o)
			var wg sync.WaitGroup
			for _, m := range mods {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := testenv.GetCheck(e.srv.URL+"/"+path(m, "info"), m.Info()); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if n := up.MaxInFlight(); n > tt.max || n < 2 {
				t.Errorf("upstream answered %d requests at once; want at most %d", n, tt.max)
			}
		})
	}
}

// In redirect mode a known not-found is answered from the cache, not
// redirected again.
func TestRedirectHonoursNotFound(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{modes: []ModeOption{{Pattern: "*", Mode: "redirect"}}})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	missing := "example.com/a/@v/v1.9.9.info"
	resp, err := client.Get(e.srv.URL + "/" + missing)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("first request: %d; want 302", resp.StatusCode)
	}
	// The background fill learns that it does not exist.
	e.waitFetch(missing)
	resp, err = client.Get(e.srv.URL + "/" + missing)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("a known not-found in redirect mode: %d; want 404 from the cache", resp.StatusCode)
	}
}

// A reload storm: proxies on the same tiers (as Caddy's configs share
// them) are closed while cold misses and missing versions are in flight.
// Nothing panics, Close waits for its fetches, every answer is the right
// bytes, a 404 or a one-line 503 asking for a retry, and what is cached
// afterwards is whole.
func TestCloseWithFetchesInFlight(t *testing.T) {
	t.Parallel()
	const rounds, perRound = 20, 6
	var mods []testenv.Module
	for i := range rounds * perRound {
		mods = append(mods, testenv.Module{Path: "example.com/storm", Version: fmt.Sprintf("v1.0.%d", i)})
	}
	up := testenv.NewUpstream(t, mods...)
	up.SetDelay(5 * time.Millisecond)
	cache := testcache.New(t, testcache.Options{Memory: true, Logger: zaptest.NewLogger(t)})
	want := map[string][]byte{}
	for _, m := range mods {
		want[path(m, "info")], want[path(m, "mod")] = m.Info(), m.Mod()
	}
	for round := range rounds {
		p, err := New(Options{Upstream: up.URL, Cache: cache.Tiers, SumDBOff: true, Logger: zaptest.NewLogger(t),
			Prefetch: PrefetchOptions{Mode: "mod"}})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(p)
		var wg sync.WaitGroup
		errs := make(chan error, 3*perRound)
		get := func(path string) {
			defer wg.Done()
			if err := testenv.GetDuringShutdown(http.DefaultClient, srv.URL+"/"+path, want[path]); err != nil {
				errs <- fmt.Errorf("round %d: %w", round, err)
			}
		}
		before := up.Total()
		for _, m := range mods[round*perRound : (round+1)*perRound] {
			wg.Add(3)
			go get(path(m, "info"))
			go get(path(m, "mod"))
			go get(fmt.Sprintf("example.com/storm/@v/v1.9.%d.info", round)) // missing
		}
		up.WaitTotal(t, before+1) // fetches are under way
		p.Close()
		p.mu.Lock()
		running, inFlight := p.running, len(p.fetches)
		p.mu.Unlock()
		if running != 0 || inFlight != 0 {
			t.Errorf("round %d: Close returned with %d fetches running", round, running+inFlight)
		}
		wg.Wait()
		srv.Close()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	// What the closed proxies stored is whole: a fresh proxy serves it all.
	p, err := New(Options{Upstream: up.URL, Cache: cache.Tiers, SumDBOff: true, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	srv := httptest.NewServer(p)
	defer srv.Close()
	for path, body := range want {
		if err := testenv.GetCheck(srv.URL+"/"+path, body); err != nil {
			t.Error(err)
		}
	}
}
