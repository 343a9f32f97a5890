// Command soak runs Caddy with Piraeus (bin/caddy) as its own process
// against an in-process upstream with injected faults, drives it with many
// concurrent clients for a bounded time, and reports errors, latency and
// the proxy's peak RSS.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
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

// The upstream: healthy modules example.com/soak/mN, a few with 2 MiB
// zips; faulty modules example.com/faulty/mN whose requests fail half the
// time (500, reset mid-body, or a stall past the fetch timeout).
type upstream struct {
	requests atomic.Int64
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.requests.Add(1)
	p := strings.TrimPrefix(r.URL.Path, "/")
	esc, rest, ok := strings.Cut(p, "/@v/")
	mod, err := module.UnescapePath(esc)
	if !ok || err != nil || !strings.HasPrefix(rest, "v1.0.0.") && rest != "list" {
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
	if !strings.HasPrefix(mod, "example.com/soak/") && !strings.HasPrefix(mod, "example.com/faulty/") {
		http.NotFound(w, r)
		return
	}
	m := testenv.Module{Path: mod, Version: "v1.0.0", Files: map[string]string{"x.go": "package x\n"}}
	switch rest {
	case "list":
		io.WriteString(w, "v1.0.0\n")
	case "v1.0.0.info":
		w.Write(m.Info())
	case "v1.0.0.mod":
		w.Write(m.Mod())
	case "v1.0.0.zip":
		if strings.HasSuffix(mod, "0") && strings.HasPrefix(mod, "example.com/soak/") {
			w.Write(u.big(mod))
			return
		}
		var b bytes.Buffer
		m.WriteZip(&b)
		w.Write(b.Bytes())
	default:
		http.NotFound(w, r)
	}
}

func (u *upstream) big(mod string) []byte {
	var b bytes.Buffer
	testenv.WriteNoiseZip(&b, testenv.Module{Path: mod, Version: "v1.0.0"}, 2<<20)
	return b.Bytes()
}

type stats struct {
	mu       sync.Mutex
	lat      []time.Duration
	ok       int
	expected int // failures of faulty modules, and 404s for missing ones
	errors   int
	examples []string
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
	port := freePort()
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	goproxy http://%s {
		cache {
			memory 128MiB
			disk %s
		}
		fetch_timeout 1s
		not_found_ttl 5s
		# The generated modules are in no checksum database, and the
		# default one (sum.golang.org) is not reachable from here.
		sumdb off
	}
}
`, port, ul.Addr(), filepath.Join(tmp, "cache"))
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
	var st stats
	var peak atomic.Int64
	go func() {
		for ctx.Err() == nil {
			if rss := testenv.ProcStatusKiB(cmd.Process.Pid, "VmHWM:"); rss > 0 {
				peak.Store(rss)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	fmt.Printf("soak: %d clients for %s against bin/caddy (goproxy, memory 128MiB + disk), upstream with injected faults\n", *clients, *duration)
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
	elapsed := time.Since(start)
	slices.Sort(st.lat)
	p := func(q float64) time.Duration {
		if len(st.lat) == 0 {
			return 0
		}
		return st.lat[int(float64(len(st.lat)-1)*q)].Round(time.Microsecond)
	}
	total := st.ok + st.expected + st.errors
	fmt.Printf("requests        %d (%.0f/s)\n", total, float64(total)/elapsed.Seconds())
	fmt.Printf("ok              %d\n", st.ok)
	fmt.Printf("expected fails  %d (injected upstream faults, missing modules)\n", st.expected)
	fmt.Printf("errors          %d\n", st.errors)
	fmt.Printf("latency         p50 %s  p99 %s  max %s\n", p(0.5), p(0.99), p(1))
	fmt.Printf("upstream reqs   %d\n", up.requests.Load())
	fmt.Printf("peak RSS        %.1f MiB (bin/caddy, VmHWM)\n", float64(peak.Load())/1024)
	for _, e := range st.examples {
		fmt.Println("  error:", e)
	}
	if st.errors > 0 {
		os.Exit(1)
	}
}

type outcome struct {
	lat      time.Duration
	ok       bool
	expected bool
	err      string
}

// request makes one request of the mix: mostly a popular artifact (hits),
// some cold modules (misses), some faulty and some missing modules.
func request(ctx context.Context, c *http.Client, base string) outcome {
	kinds := []string{"info", "mod", "zip", "list"}
	kind := kinds[rand.IntN(len(kinds))]
	var mod string
	faulty, missing := false, false
	switch r := rand.IntN(100); {
	case r < 70:
		mod = "example.com/soak/m" + strconv.Itoa(rand.IntN(50))
	case r < 90:
		mod = "example.com/soak/m" + strconv.Itoa(50+rand.IntN(*modules))
	case r < 95:
		mod, faulty = "example.com/faulty/m"+strconv.Itoa(rand.IntN(100)), true
	default:
		mod, missing = "example.com/missing/m"+strconv.Itoa(rand.IntN(1000)), true
	}
	p := mod + "/@v/v1.0.0." + kind
	if kind == "list" {
		p = mod + "/@v/list"
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", base+p, nil)
	t0 := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{expected: true}
		}
		return outcome{err: err.Error()}
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	o := outcome{lat: time.Since(t0)}
	switch {
	case err != nil && ctx.Err() != nil:
		o.expected = true
	case err != nil:
		o.err = fmt.Sprintf("%s: body: %v", p, err)
	case resp.StatusCode == 200 && (resp.ContentLength < 0 || n == resp.ContentLength) && !missing:
		o.ok = true
	case missing && resp.StatusCode == 404:
		o.expected = true
	case faulty && (resp.StatusCode == 502 || resp.StatusCode == 504):
		o.expected = true
	default:
		o.err = fmt.Sprintf("%s: status %d, %d bytes", p, resp.StatusCode, n)
	}
	return o
}

func (s *stats) record(o outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case o.ok:
		s.ok++
		s.lat = append(s.lat, o.lat)
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
