package goproxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/internal/testcache"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

var (
	modA   = testenv.Module{Path: "example.com/a", Version: "v1.0.0", Files: map[string]string{"a.go": "package a\n"}}
	modA11 = testenv.Module{Path: "example.com/a", Version: "v1.1.0", Files: map[string]string{"a.go": "package a\n\nconst V = 11\n"}}
	modUp  = testenv.Module{Path: "github.com/Azure/Go-Thing", Version: "v0.3.0-RC1", Files: map[string]string{"t.go": "package thing\n"}}
	modV2  = testenv.Module{Path: "example.com/a/v2", Version: "v2.0.0", Files: map[string]string{"a.go": "package a\n"}}
)

type env struct {
	t        *testing.T
	up       *testenv.Upstream
	proxy    *Proxy
	cache    *testcache.Cache
	tiers    *cachetier.Tiered
	disk     *cachetier.DiskTier
	db       *checksumdb.DB // the verifier, if options.sumdb
	srv      *httptest.Server
	diskRoot string
}

type options struct {
	upstream           string // GOPROXY list; "" means the fixture upstream
	memory             bool
	listTTL            time.Duration
	notFoundVersionTTL time.Duration
	timeout            time.Duration
	diskRoot           string
	maxInMemory        int64
	redis              *testenv.Redis      // shared tier and fleet
	redisTarget        testenv.RedisTarget // a Cluster or Sentinel group in place of redis
	redisMax           int64
	redisTimeout       time.Duration
	redisFailover      time.Duration
	direct             DirectOptions
	sandboxDir         string
	private            string
	logger             *zap.Logger // default: the test's log
	modes              []ModeOption
	sumdb              *testenv.SumDB // verify against and proxy this database; none: sumdb off
	sumdbProbe         bool           // reach it through the upstream's /sumdb/, probing /supported
	sumdbTimeout       time.Duration
	noVerify           string
	maxConnsPerHost    int
	maxFetches         int
	spoolMax           int64
	diskMax            int64
	handOverMax        int64 // fleet-wide bytes of hand-overs in flight
	lockTTL            time.Duration
	sameHost           bool // refuse upstream redirects to other hosts
	allowPrivate       bool // follow upstream redirects to private addresses
	prefetch           PrefetchOptions
	statusPath         string
	privateUpstream    string
	catalogPrivate     bool
}

// newEnv assembles a proxy with New, as the Caddy module does, on real
// tiers, and serves it on loopback.
func newEnv(t *testing.T, up *testenv.Upstream, o options) *env {
	t.Helper()
	if o.upstream == "" {
		o.upstream = up.URL
	}
	if o.diskRoot == "" {
		o.diskRoot = t.TempDir()
	}
	if o.logger == nil {
		o.logger = zaptest.NewLogger(t)
	}
	cache := testcache.New(t, testcache.Options{
		DiskRoot: o.diskRoot, DiskMax: o.diskMax, Memory: o.memory, MemoryMaxObject: o.maxInMemory,
		Redis: o.redis, RedisTarget: o.redisTarget, RedisMax: o.redisMax, RedisTimeout: o.redisTimeout, RedisFailover: o.redisFailover, HandOverMax: o.handOverMax, LockTTL: o.lockTTL, Logger: o.logger,
	})
	opts := Options{
		Upstream: o.upstream, Direct: o.direct, SandboxDir: o.sandboxDir, Modes: o.modes,
		ListTTL: o.listTTL, NotFoundVersionTTL: o.notFoundVersionTTL, FetchTimeout: o.timeout, MaxConnsPerHost: o.maxConnsPerHost, MaxFetches: o.maxFetches, SpoolMax: o.spoolMax,
		SumDBTimeout: o.sumdbTimeout, Cache: cache.Tiers, Fleet: fleetOf(cache), Logger: o.logger,
		SameHostRedirects: o.sameHost, AllowPrivateRedirects: o.allowPrivate, Prefetch: o.prefetch, StatusPath: o.statusPath,
		PrivateUpstream: o.privateUpstream, Catalog: true, CatalogPrivate: o.catalogPrivate,
	}
	if up != nil {
		opts.UpstreamTLS = up.TLS
	}
	if o.private != "" {
		opts.Private = []string{o.private}
	}
	if o.noVerify != "" {
		opts.NoVerify = []string{o.noVerify}
	}
	switch {
	case o.sumdb == nil:
		opts.SumDBOff = true
	case o.sumdbProbe:
		up.ProxySumDB(o.sumdb)
		// Through the upstream's /sumdb/, as by default; the database
		// itself if the upstream says it does not proxy it. Every request
		// after a failed probe probes again.
		opts.SumDBs = []SumDBOptions{{Name: o.sumdb.VKey, DirectURL: o.sumdb.URL}}
	default:
		opts.SumDBs = []SumDBOptions{{Name: o.sumdb.VKey, URL: o.sumdb.URL}}
	}
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	cache.OnPurge(p.ForgetNotFound)
	e := &env{t: t, up: up, proxy: p, cache: cache, tiers: cache.Tiers, disk: cache.Disk, db: p.cfg.SumDB, srv: newServer(t, p), diskRoot: o.diskRoot}
	t.Cleanup(e.close)
	return e
}

// waitFetch waits for the fetch of path in progress, if any.
func (e *env) waitFetch(path string) {
	e.proxy.mu.Lock()
	fl := e.proxy.fetches[e.key(path)]
	e.proxy.mu.Unlock()
	if fl != nil {
		<-fl.done
	}
}

// key is the cache key of a path in the env's proxy.
func (e *env) key(path string) string { return e.proxy.CacheKey(path) }

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// close stops the mirror as a process that exits does: its disk tier
// too, so that another env may open the same directory.
func (e *env) close() {
	e.srv.Close()
	e.proxy.Close()
	if e.disk != nil {
		e.disk.Close()
	}
}

func (e *env) do(method, path string, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+"/"+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, body
}

func (e *env) get(path string, wantStatus int) (*http.Response, []byte) {
	e.t.Helper()
	resp, body := e.do("GET", path)
	if resp.StatusCode != wantStatus {
		e.t.Fatalf("GET %s: status %d (%q); want %d", path, resp.StatusCode, body, wantStatus)
	}
	return resp, body
}

func path(m testenv.Module, kind string) string { return testenv.EscapedPath(m.Path, m.Version, kind) }

func TestEndpoints(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA, modA11, modUp, modV2)
	for _, memory := range []bool{true, false} {
		t.Run(fmt.Sprintf("memory=%v", memory), func(t *testing.T) {
			e := newEnv(t, up, options{memory: memory})
			type check struct {
				path, ctype, cache string
				body               []byte
			}
			const immutable = "public, max-age=31536000, immutable"
			checks := []check{
				{path(modA, "list"), "text/plain; charset=utf-8", "public, max-age=60", []byte("v1.0.0\nv1.1.0\n")},
				{path(modA, "latest"), "application/json", "public, max-age=60", modA11.Info()},
				{path(modA, "info"), "application/json", immutable, modA.Info()},
				{path(modA, "mod"), "text/plain; charset=utf-8", immutable, modA.Mod()},
				{path(modA, "zip"), "application/zip", immutable, modA.Zip(t)},
				{path(modUp, "info"), "application/json", immutable, modUp.Info()},
				{path(modUp, "zip"), "application/zip", immutable, modUp.Zip(t)},
				{path(modV2, "mod"), "text/plain; charset=utf-8", immutable, modV2.Mod()},
				{"example.com/a/@v/main.info", "application/json", "public, max-age=60", modA11.Info()},
			}
			for round := 0; round < 2; round++ {
				for _, c := range checks {
					resp, body := e.get(c.path, 200)
					if got := resp.Header.Get("Content-Type"); got != c.ctype {
						t.Errorf("%s: Content-Type %q; want %q", c.path, got, c.ctype)
					}
					if got := resp.Header.Get("Cache-Control"); got != c.cache {
						t.Errorf("%s: Cache-Control %q; want %q", c.path, got, c.cache)
					}
					if resp.Header.Get("ETag") == "" {
						t.Errorf("%s: no ETag", c.path)
					}
					if !bytes.Equal(body, c.body) {
						t.Errorf("%s: body %q; want %q", c.path, body, c.body)
					}
					want := 1
					if strings.HasSuffix(c.path, "main.info") && !memory {
						want = round + 1 // queries are cached in memory only
					}
					if n := up.Requests(c.path); n != want {
						t.Errorf("%s: upstream asked %d times after round %d; want %d", c.path, n, round, want)
					}
				}
			}
			// A version query never touches the disk.
			if file, ok := e.disk.File(e.key("example.com/a/@v/main.info")); ok {
				t.Errorf("query answer written to disk: %s", file)
			}
		})
		up = testenv.NewUpstream(t, modA, modA11, modUp, modV2) // fresh counts
	}
}

func TestHeadRangeConditional(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{memory: true})
	zip := modA.Zip(t)
	p := path(modA, "zip")
	for _, memory := range []string{"cold", "warm"} {
		resp, body := e.do("HEAD", p)
		if resp.StatusCode != 200 || len(body) != 0 || resp.ContentLength != int64(len(zip)) {
			t.Fatalf("%s HEAD: status %d, %d body bytes, Content-Length %d; want 200, 0, %d", memory, resp.StatusCode, len(body), resp.ContentLength, len(zip))
		}
		etag := resp.Header.Get("ETag")
		resp, body = e.do("GET", p, "Range", "bytes=10-19")
		if resp.StatusCode != 206 || !bytes.Equal(body, zip[10:20]) {
			t.Fatalf("%s Range: status %d body %q; want 206 %q", memory, resp.StatusCode, body, zip[10:20])
		}
		if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes 10-19/%d", len(zip)) {
			t.Errorf("Content-Range %q", cr)
		}
		resp, _ = e.do("GET", p, "If-None-Match", etag)
		if resp.StatusCode != 304 {
			t.Fatalf("%s If-None-Match: status %d; want 304", memory, resp.StatusCode)
		}
		resp, _ = e.do("GET", p, "Range", fmt.Sprintf("bytes=%d-", len(zip)+5))
		if resp.StatusCode != 416 {
			t.Fatalf("%s unsatisfiable Range: status %d; want 416", memory, resp.StatusCode)
		}
	}
	if n := up.Requests(p); n != 1 {
		t.Errorf("upstream asked %d times; want 1", n)
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	outside := t.TempDir()
	e := newEnv(t, up, options{memory: true, diskRoot: filepath.Join(outside, "cache")})
	tests := []struct {
		method, path string
		status       int
	}{
		{"POST", path(modA, "zip"), 405},
		{"PUT", path(modA, "mod"), 405},
		{"DELETE", path(modA, "info"), 405},
		{"OPTIONS", "example.com/a/@v/list", 405},
		{"GET", "", 404},
		{"GET", "robots.txt", 404},
		{"GET", "example.com/a/@v/v1.0.0.tgz", 404},
		{"GET", "example.com/A/@v/list", 400},
		{"GET", "example.com/a/@v/1.0.0.zip", 400},
		{"GET", "example.com/a/@v/v1.0.zip", 400},
		{"GET", "example.com/a/@v/v1.0.0-01.mod", 400},
		{"GET", "example.com/a/@v/v2.0.0.mod", 400},
		{"GET", "example.com/a/v2/@v/v1.0.0.mod", 400},
		{"GET", "example.com/a/@v/..%2F..%2F..%2Fetc%2Fpasswd.info", 400},
		{"GET", "example.com%2F..%2F..%2Fx/@v/list", 400},
		{"GET", "..%2F..%2Foutside/@v/list", 400},
		{"GET", "example.com/a/@v/v1.0.0%00.zip", 400},
		{"GET", "example.com/a%00/@v/list", 400},
		{"GET", "example.com/a/@v/v1.0.0%0D%0AX:%20y.info", 400},
		{"GET", "example.com/!!a/@v/list", 400},
		{"GET", "example.com/a!/@v/list", 400},
		{"GET", "example.com/%D0%B0/@v/list", 400},
		{"GET", "example.com/a/@v/" + strings.Repeat("9", 300) + ".info", 400},
		{"GET", strings.Repeat("a/", 2000) + "@v/list", 400},
		{"GET", ".example.com/a/@v/list", 400},
		{"GET", "example.com/a/@v/.info", 400},
	}
	for _, tt := range tests {
		resp, body := e.do(tt.method, tt.path)
		if resp.StatusCode != tt.status {
			t.Errorf("%s /%s: status %d (%q); want %d", tt.method, tt.path, resp.StatusCode, body, tt.status)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("%s /%s: Content-Type %q", tt.method, tt.path, ct)
		}
		if lines := strings.Count(string(body), "\n"); lines != 1 || len(body) > 300 {
			t.Errorf("%s /%s: body is not one short line: %q", tt.method, tt.path, body)
		}
	}
	if n := up.Total(); n != 0 {
		t.Errorf("bad requests reached upstream %d times: %v", n, up.Paths())
	}
	// Nothing was created anywhere: not outside the cache root, and no
	// object inside it.
	assertNoFiles(t, outside)
	e.disk.Flush()
	if objects, _ := e.disk.Usage(); objects != 0 {
		t.Errorf("the disk tier holds %d objects", objects)
	}
}

// assertNoFiles fails for every file below dir but a disk tier's small
// store, made when the tier opens (TestDiskSmallObjectsInOneStore checks
// what it holds).
func assertNoFiles(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "v2-small.db" {
			t.Errorf("file created: %s", p)
		}
		return nil
	})
}

func TestChain(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		list   string // A and B stand for two upstreams
		failA  int    // status A answers everything with; 0: serves modA
		status int
		asksB  bool
	}{
		{"comma falls through on 404", "A,B", 404, 200, true},
		{"comma falls through on 410", "A,B", 410, 200, true},
		{"comma stops on 500", "A,B", 500, 502, false},
		{"comma stops on 403", "A,B", 403, 403, false},
		{"pipe falls through on 500", "A|B", 500, 200, true},
		{"pipe falls through on 404", "A|B", 404, 200, true},
		{"first answer wins", "A,B", 0, 200, false},
		{"off answers 404", "off", 0, 404, false},
		{"off ends the list", "A,off,B", 404, 404, false},
		{"comma falls through to direct on 404", "A,direct", 404, 503, false},
		{"comma does not reach direct on 500", "A,direct", 500, 502, false},
		{"pipe then comma", "A|direct,B", 500, 503, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := testenv.NewUpstream(t, modA)
			b := testenv.NewUpstream(t, modA)
			a.SetFailure(tt.failA)
			list := strings.NewReplacer("A", a.URL, "B", b.URL).Replace(tt.list)
			// direct runs a go command that does not exist: a 503 shows
			// that the chain reached it.
			e := newEnv(t, nil, options{upstream: list, direct: DirectOptions{GoBinary: "/nonexistent/go"}})
			resp, body := e.do("GET", path(modA, "mod"))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%q); want %d", resp.StatusCode, body, tt.status)
			}
			if tt.status == 200 && !bytes.Equal(body, modA.Mod()) {
				t.Errorf("body %q", body)
			}
			if got := b.Total() > 0; got != tt.asksB {
				t.Errorf("B asked: %v; want %v", got, tt.asksB)
			}
		})
	}
}

func TestNotFound(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{memory: true})
	p := "example.com/a/@v/v1.9.9.info"
	for range 3 {
		resp, body := e.get(p, 404)
		if !strings.Contains(string(body), "unknown revision v1.9.9") {
			t.Errorf("404 body %q does not pass on upstream's reason", body)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=5" {
			t.Errorf("404 of a version: Cache-Control %q", cc)
		}
	}
	if n := up.Requests(p); n != 1 {
		t.Errorf("not-found asked upstream %d times; want 1 (negative cache)", n)
	}
	if resp, _ := e.get("example.com/nope/@v/list", 404); resp.Header.Get("Cache-Control") != "public, max-age=30" {
		t.Errorf("404 of a module's list: Cache-Control %q", resp.Header.Get("Cache-Control"))
	}
	up.SetFailure(410)
	e.get("example.com/gone/@latest", 410)
}

// A miss costs one upstream request: the checksum database is asked only
// once the upstream has answered 200, so 200 misses of .mod and .zip
// files that do not exist cost 200 upstream requests and no lookup.
func TestMissCostsOneRequest(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	db := testenv.NewSumDB(t, sumdbName, modA)
	e := newEnv(t, up, options{memory: true, sumdb: db})
	for i := range 100 {
		for _, kind := range []string{"mod", "zip"} {
			e.get(fmt.Sprintf("example.com/missing%d/@v/v1.0.0.%s", i, kind), 404)
		}
	}
	if n := up.Total(); n != 200 {
		t.Errorf("200 misses cost %d upstream requests; want 200", n)
	}
	if n := db.Requests(); n != 0 {
		t.Errorf("200 misses cost %d checksum database requests; want 0", n)
	}
	e.get(path(modA, "mod"), 200) // the lookup still runs for a hit upstream
	if db.Requests() == 0 {
		t.Error("a fetched .mod was not looked up in the checksum database")
	}
}

// A version tagged right after a client asked for it is found when a
// client asks for it again: a version's not-found answer is remembered
// only briefly (NotFoundVersionTTL, 1ns here), a module's for NotFoundTTL.
func TestVersionPublishedSinceNotFound(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{notFoundVersionTTL: time.Nanosecond})
	tagged := testenv.Module{Path: "example.com/a", Version: "v1.2.3", Files: map[string]string{"a.go": "package a\n"}}
	for _, kind := range []string{"info", "mod", "zip"} {
		e.get(path(tagged, kind), 404)
	}
	e.get("example.com/later/@v/list", 404)
	up.Add(tagged)
	up.Add(testenv.Module{Path: "example.com/later", Version: "v1.0.0"})
	out := testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, e.srv.URL), "mod", "download", "-json", "example.com/a@v1.2.3")
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("the version tagged since was not found: %s", out)
	}
	e.get("example.com/later/@v/list", 404) // a module's not-found is remembered
	if n := up.Requests("example.com/later/@v/list"); n != 1 {
		t.Errorf("a module's remembered not-found asked upstream %d times; want 1", n)
	}
}

func TestStaleOnError(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	// Lists expire as soon as they are stored.
	e := newEnv(t, up, options{memory: true, listTTL: time.Nanosecond})
	p := path(modA, "list")
	_, body := e.get(p, 200)
	if string(body) != "v1.0.0\n" {
		t.Fatalf("list %q", body)
	}
	up.SetFailure(500)
	resp, body := e.get(p, 200)
	if string(body) != "v1.0.0\n" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("stale list: %q, Cache-Control %q", body, resp.Header.Get("Cache-Control"))
	}
	if n := up.Requests(p); n != 2 {
		t.Errorf("upstream asked %d times; want 2 (one failed refresh)", n)
	}
	// Upstream back with a new version: the list refreshes.
	up.SetFailure(0)
	up.Add(modA11)
	_, body = e.get(p, 200)
	if string(body) != "v1.0.0\nv1.1.0\n" {
		t.Fatalf("refreshed list %q", body)
	}
	// A stale @latest survives an unreachable upstream too.
	lp := path(modA, "latest")
	e.get(lp, 200)
	e.up.SetDelay(0)
	up.SetFailure(502)
	_, body = e.get(lp, 200)
	if !bytes.Equal(body, modA11.Info()) {
		t.Fatalf("stale @latest %q", body)
	}
	// Without a stale copy an upstream failure is a 502.
	resp, body = e.do("GET", path(modV2, "list"))
	if resp.StatusCode != 502 || !strings.Contains(string(body), "answered 502") {
		t.Fatalf("no stale copy: %d %q", resp.StatusCode, body)
	}
}

func TestCollapse(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	up.SetDelay(200 * time.Millisecond)
	e := newEnv(t, up, options{memory: true})
	zip := modA.Zip(t)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, want := path(modA, "zip"), zip
			if i%2 == 1 {
				p, want = path(modA, "info"), modA.Info()
			}
			resp, err := http.Get(e.srv.URL + "/" + p)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err == nil && (resp.StatusCode != 200 || !bytes.Equal(body, want)) {
				err = fmt.Errorf("%s: status %d, %d bytes", p, resp.StatusCode, len(body))
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, kind := range []string{"zip", "info"} {
		if got := up.Requests(path(modA, kind)); got != 1 {
			t.Errorf("%d concurrent requests for the %s caused %d upstream requests; want 1", n/2, kind, got)
		}
	}
}

// bigZipUpstream serves example.com/big@v1.0.0 with a zip of about size
// bytes, each answer delayed by delay; it returns the upstream, the module
// and the zip's file.
func bigZipUpstream(t *testing.T, size int64, delay time.Duration) (*testenv.Upstream, testenv.Module, string) {
	t.Helper()
	big := testenv.Module{Path: "example.com/big", Version: "v1.0.0"}
	zipFile := testenv.WriteBigZip(t, t.TempDir(), big, size)
	up := testenv.NewUpstream(t)
	up.AddBigZip(big, zipFile)
	up.SetDelay(delay)
	return up, big, zipFile
}

func TestLargeZipStreamed(t *testing.T) {
	testenv.Slow(t)
	const size = 48 << 20
	up, big, zipFile := bigZipUpstream(t, size, 100*time.Millisecond)
	e := newEnv(t, up, options{memory: true, maxInMemory: 1 << 20})
	want, err := os.ReadFile(zipFile)
	if err != nil {
		t.Fatal(err)
	}
	wantSum := sha256.Sum256(want)
	want = nil

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	const clients = 8
	var wg sync.WaitGroup
	sums := make([][32]byte, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(e.srv.URL + "/" + path(big, "zip"))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			h := sha256.New()
			io.Copy(h, resp.Body)
			h.Sum(sums[i][:0])
		}()
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	for i, s := range sums {
		if s != wantSum {
			t.Errorf("client %d got different bytes", i)
		}
	}
	if n := up.Requests(path(big, "zip")); n != 1 {
		t.Errorf("upstream asked %d times; want 1", n)
	}
	// Fetching once and serving 8 clients must not allocate anything like
	// the zip's size: it is streamed to disk and from disk.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size/4 {
		t.Errorf("allocated %d MiB while serving a %d MiB zip to %d clients; want far less", alloc>>20, size>>20, clients)
	}
}

func TestDiskSurvivesRestart(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	root := t.TempDir()
	e := newEnv(t, up, options{memory: true, diskRoot: root, listTTL: time.Nanosecond})
	for _, k := range []string{"info", "mod", "zip", "list"} {
		e.get(path(modA, k), 200)
	}
	e.close()
	up.SetFailure(500)
	e2 := newEnv(t, up, options{memory: true, diskRoot: root})
	for _, k := range []string{"info", "mod", "zip"} {
		_, body := e2.get(path(modA, k), 200)
		if k == "zip" && !bytes.Equal(body, modA.Zip(t)) {
			t.Errorf("zip differs after restart")
		}
	}
	// The list expired; upstream is down, so the stale copy from disk is served.
	_, body := e2.get(path(modA, "list"), 200)
	if string(body) != "v1.0.0\n" {
		t.Errorf("stale list after restart %q", body)
	}
	if n := up.Total(); n != 5 {
		t.Errorf("upstream asked %d times; want 4 fetches and 1 failed list refresh", n)
	}
}

func TestCorruptDiskFile(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	for _, damage := range []string{"flip", "truncate", "header"} {
		t.Run(damage, func(t *testing.T) {
			root := t.TempDir()
			e := newEnv(t, up, options{diskRoot: root})
			p := path(modA, "zip")
			before := up.Requests(p)
			e.get(p, 200)
			file, _ := e.disk.File(e.key(p))
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			switch damage {
			case "flip":
				data[len(data)-10] ^= 0xff
			case "truncate":
				data = data[:len(data)-1]
			case "header":
				data[9] ^= 1
			}
			if err := os.WriteFile(file, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, body := e.get(p, 200)
			if !bytes.Equal(body, modA.Zip(t)) {
				t.Fatal("served damaged bytes")
			}
			if n := up.Requests(p) - before; n != 2 {
				t.Errorf("upstream asked %d times; want 2 (fetch, refetch after damage)", n)
			}
			e.get(p, 200)
			if n := up.Requests(p) - before; n != 2 {
				t.Errorf("refetched copy not cached: %d upstream requests", n)
			}
		})
	}
}

// A list keeps only the versions valid for its module path: canonical,
// of the path's major version (module.Check), once each.
func TestListKeepsOnlyValidVersions(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA, modV2)
	up.Override(path(modA, "list"), func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1.0.0\n../../etc\nv1.1\nv2.0.0\nv1.0.0\nv3.0.0+incompatible\n v1.2.0 2024-01-01\nlatest\n")
	})
	up.Override(path(modV2, "list"), func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "v1.0.0\nv2.0.0\nv2.1.0-pre\n")
	})
	e := newEnv(t, up, options{memory: true})
	for p, want := range map[string]string{
		path(modA, "list"):  "v1.0.0\nv3.0.0+incompatible\nv1.2.0\n",
		path(modV2, "list"): "v2.0.0\nv2.1.0-pre\n",
	} {
		for range 2 { // fetched, then cached
			if _, body := e.get(p, 200); string(body) != want {
				t.Errorf("%s: %q; want %q", p, body, want)
			}
		}
	}
}

func TestRejectsBadUpstreamContent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path string
		handler    http.HandlerFunc
	}{
		{"go.mod that does not parse", path(modA, "mod"), func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "module example.com/a\nrequire (\n")
		}},
		{"info for another version", path(modA, "info"), func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"Version":"v6.6.6"}`)
		}},
		{"info not JSON", path(modA, "info"), func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `<html>`)
		}},
		{"zip not a zip", path(modA, "zip"), func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "PK but not really")
		}},
		{"zip of another module", path(modA, "zip"), func(w http.ResponseWriter, r *http.Request) {
			w.Write(testenv.Module{Path: "example.com/evil", Version: "v1.0.0"}.Zip(t))
		}},
		{"list not text", path(modA, "list"), func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("v1.0.0\n\xff\xfe\n"))
		}},
		{"truncated body", path(modA, "zip"), func(w http.ResponseWriter, r *http.Request) {
			zip := modA.Zip(t)
			w.Header().Set("Content-Length", fmt.Sprint(len(zip)))
			w.Write(zip[:len(zip)/2])
		}},
		// A private upstream's single sign-on page behind a 200.
		{"HTML login page as a go.mod", path(modA, "mod"), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, "<html><body>Sign in to continue</body></html>\n")
		}},
		{"HTML page as a list", path(modA, "list"), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "TEXT/HTML")
			io.WriteString(w, "v1.0.0\n")
		}},
		{"HTML page as a zip", path(modA, "zip"), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write(modA.Zip(t))
		}},
		{"unverified go.mod without a module line", path(modA, "mod"), func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "<!DOCTYPE html>\n<title>Sign in</title>\n")
		}},
		{"go.mod too large", path(modA, "mod"), func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "module example.com/a\n")
			io.CopyN(w, strings.NewReader(strings.Repeat("// x\n", 4<<20)), 17<<20)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := testenv.NewUpstream(t, modA)
			up.Override(tt.path, tt.handler)
			e := newEnv(t, up, options{memory: true})
			resp, body := e.do("GET", tt.path)
			if resp.StatusCode != 502 {
				t.Fatalf("status %d (%q); want 502", resp.StatusCode, body)
			}
			if strings.Count(string(body), "\n") != 1 || strings.Contains(string(body), "127.0.0.1") {
				t.Errorf("body is not one line, or names the internal upstream: %q", body)
			}
			assertNotCached(t, e, tt.path)
			// Once upstream is fixed, the next request succeeds.
			up.Override(tt.path, nil)
			e.get(tt.path, 200)
		})
	}
}

func assertNotCached(t *testing.T, e *env, key string) {
	t.Helper()
	for _, tier := range e.tiers.Tiers() {
		if m, ok := tier.(*cachetier.MemoryTier); ok {
			m.Wait()
		}
		if obj, err := tier.Get(t.Context(), e.key(key)); err == nil {
			obj.Close()
			t.Errorf("%s tier holds %s", tier.Name(), key)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(e.diskRoot, "tmp"))
	if len(entries) != 0 {
		t.Errorf("temp files left behind: %v", entries)
	}
}

func TestFetchTimeout(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	up.SetDelay(2 * time.Second)
	e := newEnv(t, up, options{timeout: 100 * time.Millisecond})
	resp, body := e.do("GET", path(modA, "info"))
	if resp.StatusCode != 504 || !strings.Contains(string(body), "timed out") {
		t.Fatalf("status %d %q; want 504 timed out", resp.StatusCode, body)
	}
	assertNotCached(t, e, path(modA, "info"))
}

func strconvItoa(i int) string { return fmt.Sprint(i) }

// fleetOf is the cache's fleet as Options.Fleet, nil when it has none (a
// nil *fleet.Fleet in the interface would not be).
func fleetOf(c *testcache.Cache) Fleet {
	if c.Fleet == nil {
		return nil
	}
	return c.Fleet
}
