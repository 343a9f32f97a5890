// Command soak runs Caddy with Piraeus (bin/caddy) as its own process, on
// memory, disk and a real redis-server, against an in-process upstream of a
// generated module graph with injected faults; drives it with many
// concurrent clients for a bounded time, checking every byte served;
// kills Redis midway and starts it again; and reports errors by status,
// latency, and the proxy's RSS and goroutines over time.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/module"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

var (
	duration = flag.Duration("d", 60*time.Second, "soak duration")
	clients  = flag.Int("c", 256, "concurrent clients")
	caddyBin = flag.String("caddy", "bin/caddy", "Caddy with Piraeus (make build)")
	modules  = flag.Int("modules", 3000, "distinct healthy modules")
)

// The upstream: a generated graph of healthy modules example.com/soak/mN,
// each with one to six versions (v1.0.0, v1.1.0, ...) whose go.mod files
// require other modules (old versions the most, as real ones shed
// requirements), zips mostly of a few KiB and some of 2 MiB; and faulty
// modules example.com/faulty/mN whose requests fail half the time (500,
// reset mid-body, or a stall past the fetch timeout).
type upstream struct {
	requests atomic.Int64
}

// versions is how many versions module n of the graph has.
func versions(n int) int { return 1 + int(mix(uint64(n))%6) }

// mix is a cheap deterministic hash.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

// graphModule is version k of module n.
func graphModule(n, k int) testenv.Module {
	path := "example.com/soak/m" + strconv.Itoa(n)
	gomod := "module " + path + "\n\ngo 1.21\n"
	if reqs := int(mix(uint64(n*7+k))%4) + 2*(versions(n)-1-k); reqs > 0 {
		gomod += "\nrequire (\n"
		for i := range reqs {
			d := int(mix(uint64(n*131+k*17+i)) % uint64(*modules))
			gomod += fmt.Sprintf("\texample.com/soak/m%d v1.%d.0\n", d, int(mix(uint64(d))%uint64(versions(d))))
		}
		gomod += ")\n"
	}
	return testenv.Module{Path: path, Version: fmt.Sprintf("v1.%d.0", k), GoMod: gomod,
		Files: map[string]string{"x.go": fmt.Sprintf("package x\n\nconst N, K = %d, %d\n", n, k)}}
}

// content is what the upstream serves for mod's rest ("list" or
// "<version>.<kind>"), or false for a module or version that is missing.
func content(mod, rest string) ([]byte, bool) {
	var m testenv.Module
	var n, nv int
	switch {
	case strings.HasPrefix(mod, "example.com/soak/m"):
		var err error
		if n, err = strconv.Atoi(strings.TrimPrefix(mod, "example.com/soak/m")); err != nil || n < 0 || n >= *modules {
			return nil, false
		}
		nv = versions(n)
	case strings.HasPrefix(mod, "example.com/faulty/"):
		nv = 1
	default:
		return nil, false
	}
	if rest == "list" {
		var b strings.Builder
		for k := range nv {
			fmt.Fprintf(&b, "v1.%d.0\n", k)
		}
		return []byte(b.String()), true
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		return nil, false
	}
	v, kind := rest[:dot], rest[dot+1:]
	var k int
	if _, err := fmt.Sscanf(v, "v1.%d.0", &k); err != nil || k < 0 || k >= nv || v != fmt.Sprintf("v1.%d.0", k) {
		return nil, false
	}
	if strings.HasPrefix(mod, "example.com/faulty/") {
		m = testenv.Module{Path: mod, Version: "v1.0.0", Files: map[string]string{"x.go": "package x\n"}}
	} else {
		m = graphModule(n, k)
	}
	switch kind {
	case "info":
		return m.Info(), true
	case "mod":
		return m.Mod(), true
	case "zip":
		var b bytes.Buffer
		if strings.HasPrefix(mod, "example.com/soak/") && n%10 == 0 && k == nv-1 {
			testenv.WriteNoiseZip(&b, m, 2<<20)
		} else {
			m.WriteZip(&b)
		}
		return b.Bytes(), true
	}
	return nil, false
}

// expected is the SHA-256 of what each path must be served as, computed
// once from the same generator the upstream serves.
var expected sync.Map // path -> [32]byte, or nil for a missing one

func expectedSum(mod, rest string) ([32]byte, bool) {
	key := mod + "/@v/" + rest
	if v, ok := expected.Load(key); ok {
		if v == nil {
			return [32]byte{}, false
		}
		return v.([32]byte), true
	}
	data, ok := content(mod, rest)
	if !ok {
		expected.Store(key, nil)
		return [32]byte{}, false
	}
	sum := sha256.Sum256(data)
	expected.Store(key, sum)
	return sum, true
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	p := strings.TrimPrefix(r.URL.Path, "/")
	esc, rest, ok := strings.Cut(p, "/@v/")
	mod, err := module.UnescapePath(esc)
	if !ok || err != nil {
		http.NotFound(w, r)
		return
	}
	if strings.HasPrefix(mod, "example.com/faulty/") && rand.IntN(2) == 0 {
		switch rand.IntN(3) {
		case 0:
			http.Error(w, "injected", 500)
		case 1:
			conn, buf, _ := w.(http.Hijacker).Hijack()
			buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nPK")
			buf.Flush()
			conn.Close()
		case 2:
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}
		return
	}
	data, ok := content(mod, rest)
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(data)
}

type stats struct {
	mu       sync.Mutex
	lat      []time.Duration
	ok       int
	expected int // failures of faulty modules, and 404s for missing ones
	errors   int
	wrong    int // 200s whose bytes are not the artifact's
	// documented counts healthy modules' 502/503/504 with their one-line
	// reason (upstream trouble under load)
	documented map[string]int
	statuses   map[int]int
	examples   []string
}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if _, err := os.Stat(*caddyBin); err != nil {
		log.Fatalf("%s not found: run `make build` first", *caddyBin)
	}
	up := &upstream{}
	ul, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go http.Serve(ul, up)

	tmp, err := os.MkdirTemp("", "piraeus-soak-")
	must(err)
	defer os.RemoveAll(tmp)
	redis := startRedis()
	defer redis.kill()
	port, admin := freePort(), freePort()
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	persist_config off
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	goproxy http://%s {
		fleet_key %s
		cache {
			memory 128MiB
			redis redis://%s/0
			disk %s
		}
		fetch_timeout 1s
		not_found_ttl 5s
		# The generated modules are in no checksum database, and the
		# default one (sum.golang.org) is not reachable from here.
		sumdb off
	}
}
`, admin, port, ul.Addr(), testenv.FleetKey, redis.addr, filepath.Join(tmp, "cache"))
	cf := filepath.Join(tmp, "Caddyfile")
	must(os.WriteFile(cf, []byte(caddyfile), 0o644))
	cmd := exec.Command(*caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+tmp, "XDG_CONFIG_HOME="+tmp)
	must(cmd.Start())
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	base := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitUp(base)

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *clients, DisableCompression: true}}
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	st := stats{statuses: map[int]int{}, documented: map[string]int{}}
	var samples []sample
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for ctx.Err() == nil {
			samples = append(samples, sample{
				at:         time.Now(),
				rss:        testenv.ProcStatusKiB(cmd.Process.Pid, "VmRSS:"),
				goroutines: goroutines(admin),
			})
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		}
	}()
	// Redis is killed halfway and started again, empty, 2 s later.
	var outage struct{ from, to time.Time }
	go func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(*duration / 2):
		}
		outage.from = time.Now()
		redis.kill()
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		redis.start()
		outage.to = time.Now()
	}()
	fmt.Printf("soak: %d clients for %s against bin/caddy (goproxy, memory 128MiB + redis + disk), a graph of %d modules, upstream with injected faults, redis killed at %s\n",
		*clients, *duration, *modules, *duration/2)
	start := time.Now()
	var wg sync.WaitGroup
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				st.record(request(ctx, client, base))
			}
		}()
	}
	wg.Wait()
	sampling.Wait()
	elapsed := time.Since(start)
	slices.Sort(st.lat)
	p := func(q float64) time.Duration {
		if len(st.lat) == 0 {
			return 0
		}
		return st.lat[int(float64(len(st.lat)-1)*q)].Round(time.Microsecond)
	}
	docs := 0
	for _, n := range st.documented {
		docs += n
	}
	total := st.ok + st.expected + st.errors + st.wrong + docs
	fmt.Printf("requests        %d (%.0f/s)\n", total, float64(total)/elapsed.Seconds())
	fmt.Printf("ok              %d (every body's SHA-256 checked)\n", st.ok)
	fmt.Printf("wrong bytes     %d\n", st.wrong)
	fmt.Printf("expected fails  %d (injected upstream faults: 502/504; missing modules and versions: 404/410)\n", st.expected)
	fmt.Printf("healthy 5xx     %d (documented statuses with their reason:", docs)
	for _, r := range slices.Sorted(maps.Keys(st.documented)) {
		fmt.Printf(" %s ×%d;", r, st.documented[r])
	}
	fmt.Println(")")
	fmt.Printf("errors          %d (anything else)\n", st.errors)
	var codes []string
	for _, c := range slices.Sorted(maps.Keys(st.statuses)) {
		codes = append(codes, fmt.Sprintf("%d: %d", c, st.statuses[c]))
	}
	fmt.Printf("statuses        %s\n", strings.Join(codes, ", "))
	fmt.Printf("latency         p50 %s  p99 %s  max %s\n", p(0.5), p(0.99), p(1))
	fmt.Printf("upstream reqs   %d\n", up.requests.Load())
	if !outage.to.IsZero() {
		fmt.Printf("redis outage    %s from %s\n", outage.to.Sub(outage.from).Round(time.Millisecond), outage.from.Sub(start).Round(time.Second))
	}
	flat := report(samples)
	for _, e := range st.examples {
		fmt.Println("  error:", e)
	}
	if st.errors > 0 || st.wrong > 0 || !flat {
		os.Exit(1)
	}
}

type sample struct {
	at         time.Time
	rss        int64 // KiB
	goroutines int
}

// report prints RSS and goroutines by quarter of the run, the first being
// warm-up, and says whether they stayed flat after it: the last quarter's
// mean no more than 25% (RSS) or 50% plus 50 (goroutines) above the
// second's.
func report(samples []sample) bool {
	if len(samples) < 8 {
		fmt.Println("rss/goroutines  too few samples")
		return true
	}
	q := len(samples) / 4
	mean := func(ss []sample) (float64, float64) {
		var r, g float64
		for _, s := range ss {
			r += float64(s.rss)
			g += float64(s.goroutines)
		}
		return r / float64(len(ss)) / 1024, g / float64(len(ss))
	}
	var parts []string
	var r2, g2, r4, g4 float64
	for i := range 4 {
		ss := samples[i*q : min((i+1)*q, len(samples))]
		if i == 3 {
			ss = samples[3*q:]
		}
		r, g := mean(ss)
		parts = append(parts, fmt.Sprintf("Q%d %.0f MiB, %.0f", i+1, r, g))
		if i == 1 {
			r2, g2 = r, g
		}
		if i == 3 {
			r4, g4 = r, g
		}
	}
	var peak sample
	for _, s := range samples {
		peak.rss, peak.goroutines = max(peak.rss, s.rss), max(peak.goroutines, s.goroutines)
	}
	fmt.Printf("rss, goroutines %s (Q1 is warm-up); peak %.1f MiB, %d\n", strings.Join(parts, "; "), float64(peak.rss)/1024, peak.goroutines)
	flat := r4 <= 1.25*r2 && g4 <= 1.5*g2+50
	if !flat {
		fmt.Println("  not flat after warm-up")
	}
	return flat
}

// goroutines reads Caddy's goroutine count from its admin endpoint's
// pprof; -1 when it cannot.
func goroutines(admin int) int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/goroutine?debug=1", admin))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	var n int
	if _, err := fmt.Sscanf(line, "goroutine profile: total %d", &n); err != nil {
		return -1
	}
	return n
}

// redisServer is a redis-server on a loopback port, without persistence.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
}

func startRedis() *redisServer {
	if _, err := exec.LookPath("redis-server"); err != nil {
		log.Fatal("redis-server is needed by the soak: install it with `apt-get install redis-server` (Debian)")
	}
	r := &redisServer{addr: "127.0.0.1:" + strconv.Itoa(freePort())}
	r.start()
	return r
}

func (r *redisServer) start() {
	_, port, _ := net.SplitHostPort(r.addr)
	r.cmd = exec.Command("redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "warning")
	must(r.cmd.Start())
	for range 250 { // up to 5 s
		if c, err := net.Dial("tcp", r.addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Fatal("redis-server did not start")
}

// kill kills it as a crash would (SIGKILL).
func (r *redisServer) kill() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
}

type outcome struct {
	lat      time.Duration
	ok       bool
	expected bool
	wrong    bool
	// documented: a healthy module's 502/503/504 with a one-line reason
	documented bool
	status     int
	err        string
}

// request makes one request of the mix: mostly popular modules (hits),
// some of the whole graph (misses), some faulty modules and some missing
// ones; a version is any of the module's, or one it does not have.
func request(ctx context.Context, c *http.Client, base string) outcome {
	kinds := []string{"info", "mod", "zip", "list"}
	kind := kinds[rand.IntN(len(kinds))]
	var mod string
	faulty := false
	version := func(n int) string { return fmt.Sprintf("v1.%d.0", rand.IntN(versions(n))) }
	var v string
	switch r := rand.IntN(100); {
	case r < 70:
		n := rand.IntN(50)
		mod, v = "example.com/soak/m"+strconv.Itoa(n), version(n)
	case r < 90:
		n := 50 + rand.IntN(*modules-50)
		mod, v = "example.com/soak/m"+strconv.Itoa(n), version(n)
	case r < 95:
		mod, v, faulty = "example.com/faulty/m"+strconv.Itoa(rand.IntN(100)), "v1.0.0", true
	case r < 97:
		mod, v = "example.com/soak/m"+strconv.Itoa(rand.IntN(50)), "v1.9.0" // a version it lacks
	default:
		mod, v = "example.com/missing/m"+strconv.Itoa(rand.IntN(1000)), "v1.0.0"
	}
	rest := v + "." + kind
	if kind == "list" {
		rest = "list"
	}
	want, exists := expectedSum(mod, rest)
	p := mod + "/@v/" + rest
	req, _ := http.NewRequestWithContext(ctx, "GET", base+p, nil)
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{expected: true}
		}
		return outcome{err: err.Error()}
	}
	// A 200's body is hashed; another's first bytes are kept for the
	// report (an error's reason is one short line).
	h := sha256.New()
	var head bytes.Buffer
	var n int64
	if resp.StatusCode == 200 {
		n, err = io.Copy(h, resp.Body)
	} else if n, err = io.Copy(&head, io.LimitReader(resp.Body, 4096)); err == nil {
		var rest int64
		rest, err = io.Copy(io.Discard, resp.Body)
		n += rest
	}
	resp.Body.Close()
	o := outcome{lat: time.Since(t0), status: resp.StatusCode}
	switch {
	case err != nil && ctx.Err() != nil:
		o.expected = true
	case err != nil:
		o.err = fmt.Sprintf("%s: body: %v", p, err)
	case resp.StatusCode == 200 && exists:
		if [32]byte(h.Sum(nil)) != want {
			o.wrong, o.err = true, fmt.Sprintf("%s: WRONG BYTES (%d)", p, n)
		} else {
			o.ok = true
		}
	case !exists && !faulty && (resp.StatusCode == 404 || resp.StatusCode == 410):
		o.expected = true
	case faulty && (resp.StatusCode == 502 || resp.StatusCode == 504):
		o.expected = true
	case exists && (resp.StatusCode == 502 || resp.StatusCode == 503 || resp.StatusCode == 504) &&
		n == int64(head.Len()) && strings.Count(head.String(), "\n") == 1 && strings.HasSuffix(head.String(), "\n"):
		// Upstream trouble under load (the harness's upstream builds each
		// zip as it is asked): a documented status with its one-line
		// reason.
		o.documented, o.err = true, fmt.Sprintf("%s: %d %q", p, resp.StatusCode, head.String())
	default:
		o.err = fmt.Sprintf("%s: status %d, %d bytes: %q", p, resp.StatusCode, n, head.String())
	}
	return o
}

func (s *stats) record(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.status != 0 {
		s.statuses[o.status]++
	}
	switch {
	case o.wrong:
		s.wrong++
		if len(s.examples) < 10 {
			s.examples = append(s.examples, o.err)
		}
	case o.ok:
		s.ok++
		s.lat = append(s.lat, o.lat)
	case o.documented:
		_, reason, _ := strings.Cut(o.err, ": ")
		s.documented[reason]++
	case o.expected:
		s.expected++
	default:
		s.errors++
		if len(s.examples) < 10 {
			s.examples = append(s.examples, o.err)
		}
	}
}

func waitUp(base string) {
	for range 200 { // up to 20 s
		if resp, err := http.Get(base + "x"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Fatal("caddy did not start")
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
