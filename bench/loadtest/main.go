// Command loadtest compares Piraeus cache hits with Caddy's own
// file_server serving the same bytes, and with goproxy/goproxy's hits (a
// peer built from bench/peers/goproxy), in one run, over loopback: requests per second and p99 latency per artifact, and their
// ratio. Machines here are shared and noisy; only the ratios are meant to
// be compared across runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/piraeus-go/piraeus"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

var (
	duration    = flag.Duration("d", 3*time.Second, "load duration per measurement")
	concurrency = flag.Int("c", 32, "concurrent clients")
	zipSize     = flag.Int64("zip", 5<<20, "approximate zip size in bytes")
	peerBin     = flag.String("peer", "bin/tools/goproxy-peer", "goproxy/goproxy v0.26.1, served beside Piraeus (make bench builds it from bench/peers/goproxy)")
)

var mod = testenv.Module{Path: "example.com/bench", Version: "v1.0.0"}

func main() {
	flag.Parse()
	log.SetFlags(0)
	tmp, err := os.MkdirTemp("", "piraeus-loadtest-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	// The same bytes as static files: a GOPROXY is a file tree, so this
	// directory is both the upstream and what file_server serves.
	files := filepath.Join(tmp, "files")
	dir := filepath.Join(files, "example.com", "bench", "@v")
	must(os.MkdirAll(dir, 0o755))
	must(os.WriteFile(filepath.Join(dir, "v1.0.0.info"), mod.Info(), 0o644))
	must(os.WriteFile(filepath.Join(dir, "v1.0.0.mod"), mod.Mod(), 0o644))
	f, err := os.Create(filepath.Join(dir, "v1.0.0.zip"))
	must(err)
	must(testenv.WriteNoiseZip(f, mod, *zipSize))
	must(f.Close())

	if _, err := os.Stat(*peerBin); err != nil {
		log.Fatalf("%s: %v: build goproxy/goproxy with `make bench` (or `make $PWD/bin/tools/goproxy-peer`)", *peerBin, err)
	}
	ports := freePorts(5)
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
}
http://127.0.0.1:%[1]d {
	bind 127.0.0.1
	root * %[5]s
	file_server
}
http://127.0.0.1:%[2]d {
	bind 127.0.0.1
	goproxy http://127.0.0.1:%[1]d {
		sumdb off # the fixture is in no checksum database; hits are measured
		cache {
			memory 128MiB
			memory_max_object 8MiB
			disk %[6]s/mem
		}
	}
}
http://127.0.0.1:%[3]d {
	bind 127.0.0.1
	goproxy http://127.0.0.1:%[1]d {
		sumdb off # the fixture is in no checksum database; hits are measured
		cache {
			memory off
			disk %[6]s/disk
		}
	}
}
`, ports[0], ports[1], ports[2], ports[3], files, tmp)
	cfg, warn, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
	must(err)
	for _, w := range warn {
		log.Println("caddyfile:", w.Message)
	}
	must(caddy.Load(cfg, true))
	defer caddy.Stop()

	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        *concurrency * 4,
		MaxIdleConnsPerHost: *concurrency,
		DisableCompression:  true,
	}}
	stopPeer := startPeer(tmp, ports[4], fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
	defer stopPeer()
	targets := []struct{ name, base string }{
		{"file_server", fmt.Sprintf("http://127.0.0.1:%d/", ports[0])},
		{"piraeus memory hit", fmt.Sprintf("http://127.0.0.1:%d/", ports[1])},
		{"piraeus disk hit", fmt.Sprintf("http://127.0.0.1:%d/", ports[2])},
		{"goproxy/goproxy hit", fmt.Sprintf("http://127.0.0.1:%d/", ports[4])},
	}
	fmt.Printf("loopback load: %d clients, %s per measurement, zip %.1f MiB\n\n", *concurrency, *duration, float64(*zipSize)/(1<<20))
	fmt.Printf("%-6s %-20s %12s %10s %10s %14s %12s\n", "file", "server", "req/s", "p50", "p99", "req/s ratio", "p99 ratio")
	for _, kind := range []string{"info", "mod", "zip"} {
		p := "example.com/bench/@v/v1.0.0." + kind
		for _, t := range targets[1:] { // warm the caches
			warm(client, t.base+p)
		}
		var ref result
		for i, t := range targets {
			r := load(client, t.base+p)
			if i == 0 {
				ref = r
			}
			fmt.Printf("%-6s %-20s %12.0f %10s %10s %14.2f %12.2f\n", kind, t.name, r.rps,
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.rps/ref.rps, float64(r.p99)/float64(ref.p99))
			if r.errors > 0 {
				fmt.Printf("       %d errors\n", r.errors)
			}
		}
	}
}

// startPeer runs goproxy/goproxy in front of upstream (file_server), its
// cache in a dir under tmp, and waits until it answers.
func startPeer(tmp string, port int, upstream string) (stop func()) {
	cmd := exec.Command(*peerBin, "server", "--address", fmt.Sprintf("127.0.0.1:%d", port), "--cacher-dir", filepath.Join(tmp, "peer"))
	cmd.Env = append(os.Environ(), "GOPROXY="+upstream, "GOSUMDB=off", "GONOSUMDB=", "GOPRIVATE=", "GOFLAGS=-modcacherw",
		"GOMODCACHE="+filepath.Join(tmp, "peer-modcache"))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	must(cmd.Start())
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	for range 100 { // up to 10 s
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/example.com/bench/@v/list", port)); err == nil {
			resp.Body.Close()
			return stop
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	log.Fatal("goproxy/goproxy did not start")
	return nil
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
}

func warm(c *http.Client, url string) {
	resp, err := c.Get(url)
	must(err)
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		log.Fatalf("warming %s: status %d", url, resp.StatusCode)
	}
}

func load(c *http.Client, url string) result {
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var (
		mu     sync.Mutex
		lat    []time.Duration
		errors int
		wg     sync.WaitGroup
	)
	start := time.Now()
	for range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			bad := 0
			for ctx.Err() == nil {
				t0 := time.Now()
				resp, err := c.Get(url)
				if err != nil {
					bad++
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					bad++
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			errors += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	r := result{rps: float64(len(lat)) / elapsed.Seconds(), errors: errors}
	if len(lat) > 0 {
		r.p50 = lat[len(lat)/2]
		r.p99 = lat[len(lat)*99/100]
	}
	return r
}

func freePorts(n int) []int {
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(err)
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
