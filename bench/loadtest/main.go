// Command loadtest compares Piraeus cache hits with Caddy's own
// file_server serving the same bytes, and with goproxy/goproxy's hits (a
// peer built from bench/peers/goproxy), in one run, over loopback: requests
// per second and p99 latency per artifact, and their ratios.
//
// Every server is a process of its own, as it is deployed: bin/caddy serves
// file_server and Piraeus (memory hit; disk hit with the memory tier off),
// the peer runs beside it, and the load comes from wrk, a process of its
// own too, so that no server shares its runtime with the load generator.
// The targets take turns, in alternating order, for -rounds rounds; the
// figures are the rounds' medians. Machines here are shared and noisy; only
// the ratios are meant to be compared across runs.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

var (
	duration    = flag.Duration("d", 3*time.Second, "load duration per measurement")
	concurrency = flag.Int("c", 32, "concurrent connections")
	threads     = flag.Int("t", 2, "wrk threads")
	rounds      = flag.Int("rounds", 3, "measurements per target, taken in turns (the median is reported)")
	zipSize     = flag.Int64("zip", 5<<20, "approximate zip size in bytes")
	caddyBin    = flag.String("caddy", "bin/caddy", "Caddy with Piraeus (make build)")
	peerBin     = flag.String("peer", "bin/tools/goproxy-peer", "goproxy/goproxy v0.26.1, served beside Piraeus (make bench builds it from bench/peers/goproxy)")
	wrkBin      = flag.String("wrk", "wrk", "the HTTP load generator (Debian: apt-get install wrk)")
)

var mod = testenv.Module{Path: "example.com/bench", Version: "v1.0.0"}

func main() {
	flag.Parse()
	log.SetFlags(0)
	if *rounds < 1 || *rounds > 15 {
		log.Fatal("-rounds: want 1 to 15")
	}
	for _, bin := range []struct{ path, how string }{
		{*caddyBin, "build it with `make build`"},
		{*peerBin, "build goproxy/goproxy with `make bench` (or `make $PWD/bin/tools/goproxy-peer`)"},
	} {
		if _, err := os.Stat(bin.path); err != nil {
			fatalf("%v: %s", err, bin.how)
		}
	}
	if _, err := exec.LookPath(*wrkBin); err != nil {
		fatalf("%v: install wrk (Debian: apt-get install wrk)", err)
	}
	tmp, err := os.MkdirTemp("", "piraeus-loadtest-")
	if err != nil {
		fatalf("%v", err)
	}
	defer os.RemoveAll(tmp)
	stops = append(stops, func() { os.RemoveAll(tmp) })

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

	ports := freePorts(4)
	caddyfile := fmt.Sprintf(`{
	admin off
	persist_config off
	skip_install_trust
}
http://127.0.0.1:%[1]d {
	bind 127.0.0.1
	root * %[4]s
	file_server
}
http://127.0.0.1:%[2]d {
	bind 127.0.0.1
	goproxy http://127.0.0.1:%[1]d {
		sumdb off # the fixture is in no checksum database; hits are measured
		cache {
			memory 128MiB
			memory_max_object 8MiB
			disk %[5]s/mem
		}
	}
}
http://127.0.0.1:%[3]d {
	bind 127.0.0.1
	goproxy http://127.0.0.1:%[1]d {
		sumdb off # the fixture is in no checksum database; hits are measured
		cache {
			memory off
			disk %[5]s/disk
		}
	}
}
`, ports[0], ports[1], ports[2], files, tmp)
	cf := filepath.Join(tmp, "Caddyfile")
	must(os.WriteFile(cf, []byte(caddyfile), 0o644))
	home := filepath.Join(tmp, "home")
	env := append(os.Environ(), "HOME="+home, "XDG_DATA_HOME="+home, "XDG_CONFIG_HOME="+home)
	stopCaddy := start(env, fmt.Sprintf("http://127.0.0.1:%d/", ports[0]), *caddyBin, "run", "--config", cf, "--adapter", "caddyfile")
	defer stopCaddy()
	stopPeer := start(append(env, "GOPROXY="+fmt.Sprintf("http://127.0.0.1:%d", ports[0]), "GOSUMDB=off", "GONOSUMDB=", "GOPRIVATE=",
		"GOFLAGS=-modcacherw", "GOMODCACHE="+filepath.Join(tmp, "peer-modcache")),
		fmt.Sprintf("http://127.0.0.1:%d/example.com/bench/@v/list", ports[3]),
		*peerBin, "server", "--address", fmt.Sprintf("127.0.0.1:%d", ports[3]), "--cacher-dir", filepath.Join(tmp, "peer"))
	defer stopPeer()

	targets := []struct{ name, base string }{
		{"file_server", fmt.Sprintf("http://127.0.0.1:%d/", ports[0])},
		{"piraeus memory hit", fmt.Sprintf("http://127.0.0.1:%d/", ports[1])},
		{"piraeus disk hit", fmt.Sprintf("http://127.0.0.1:%d/", ports[2])},
		{"goproxy/goproxy hit", fmt.Sprintf("http://127.0.0.1:%d/", ports[3])},
	}
	const peer = 3
	fmt.Printf("loopback load (wrk): %d connections, %d threads, %s per measurement, median of %d rounds, zip %.1f MiB\n\n",
		*concurrency, *threads, *duration, *rounds, float64(*zipSize)/(1<<20))
	fmt.Printf("%-6s %-20s %10s %10s %10s %16s %16s\n", "file", "server", "req/s", "p50", "p99",
		"vs file_server", "vs goproxy/gp")
	for _, kind := range []string{"info", "mod", "zip"} {
		p := "example.com/bench/@v/v1.0.0." + kind
		want, err := os.ReadFile(filepath.Join(dir, "v1.0.0."+kind))
		must(err)
		for _, t := range targets { // warm the caches, and check the bytes
			check(t.base+p, want)
		}
		runs := make([][]result, len(targets))
		for round := range *rounds {
			for i := range targets {
				if round%2 == 1 {
					i = len(targets) - 1 - i
				}
				runs[i] = append(runs[i], wrk(targets[i].base+p))
			}
		}
		res := make([]result, len(targets))
		for i := range targets {
			res[i] = median(runs[i])
		}
		for i, t := range targets {
			r := res[i]
			fmt.Printf("%-6s %-20s %10.0f %10s %10s %16s %16s\n", kind, t.name, r.rps,
				r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond),
				ratios(r, res[0]), ratios(r, res[peer]))
			if r.errors > 0 {
				fmt.Printf("       %d errors (non-2xx answers or socket errors)\n", r.errors)
			}
		}
	}
	fmt.Println("\nratios: req/s ratio (p99 ratio); more req/s and less p99 is better")
}

func ratios(r, ref result) string {
	return fmt.Sprintf("%.2f (%.2f)", r.rps/ref.rps, float64(r.p99)/float64(ref.p99))
}

// start runs a server and waits until ready answers.
func start(env []string, ready string, bin string, args ...string) (stop func()) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	must(cmd.Start())
	stop = func() { cmd.Process.Kill(); cmd.Wait() }
	stops = append(stops, stop)
	for range 100 { // up to 10 s
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			return stop
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	fatalf("%s did not start: %s", bin, lastLines(stderr.String(), 5))
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// check GETs url and insists on a 200 with the bytes of the file.
func check(url string, want []byte) {
	resp, err := http.Get(url)
	must(err)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(err)
	if resp.StatusCode != 200 || !bytes.Equal(got, want) {
		fatalf("%s: status %d, %d bytes (want 200, the file's %d bytes)", url, resp.StatusCode, len(got), len(want))
	}
}

type result struct {
	rps      float64
	p50, p99 time.Duration
	errors   int
}

var (
	rpsRE    = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	pctRE    = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	non2xxRE = regexp.MustCompile(`(?m)^\s*Non-2xx or 3xx responses:\s+(\d+)`)
	sockRE   = regexp.MustCompile(`(?m)^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// wrk loads url for -d with -c connections and reads wrk's report.
func wrk(url string) result {
	out, err := exec.Command(*wrkBin, "-t", strconv.Itoa(*threads), "-c", strconv.Itoa(*concurrency),
		"-d", fmt.Sprintf("%ds", max(1, int(duration.Round(time.Second).Seconds()))), "--latency", url).CombinedOutput()
	if err != nil {
		fatalf("wrk %s: %v: %s", url, err, out)
	}
	s := string(out)
	var r result
	m := rpsRE.FindStringSubmatch(s)
	if m == nil {
		fatalf("wrk %s: no Requests/sec in its report:\n%s", url, s)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, m := range pctRE.FindAllStringSubmatch(s, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		d := time.Duration(v * float64(map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute}[m[3]]))
		if m[1] == "50" {
			r.p50 = d
		} else {
			r.p99 = d
		}
	}
	if r.p50 == 0 || r.p99 == 0 {
		fatalf("wrk %s: no latency distribution in its report:\n%s", url, s)
	}
	if m := non2xxRE.FindStringSubmatch(s); m != nil {
		n, _ := strconv.Atoi(m[1])
		r.errors += n
	}
	if m := sockRE.FindStringSubmatch(s); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.Atoi(v)
			r.errors += n
		}
	}
	return r
}

// median takes each figure's median over the rounds, and the errors of
// all of them.
func median(rs []result) result {
	pick := func(f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	m := result{
		rps: pick(func(r result) float64 { return r.rps }),
		p50: time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99: time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
	}
	for _, r := range rs {
		m.errors += r.errors
	}
	return m
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

// stops stops the servers started, for fatalf: a load test that fails
// leaves no server behind.
var stops []func()

func fatalf(format string, args ...any) {
	for _, stop := range slices.Backward(stops) {
		stop()
	}
	log.Fatalf(format, args...)
}

func must(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}
