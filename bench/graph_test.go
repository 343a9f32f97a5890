package bench

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

var (
	graphReps   = flag.Int("graph.reps", 3, "BenchmarkGraph: runs of each client per delay (the median is reported)")
	graphDelays = flag.String("graph.delays", "0ms,50ms", "BenchmarkGraph: upstream delays per request")
	caddyBin    = flag.String("caddy", "../bin/caddy", "Caddy with Piraeus (make build)")
	graphExtra  = flag.String("graph.goproxy", "", "BenchmarkGraph: extra lines for the goproxy block (default: none, the default configuration)")
	cpuProfile  = flag.String("graph.cpuprofile", "", "BenchmarkGraph: write a CPU profile of bin/caddy during the first cold go mod download all to this file, and print its top")
	heapProfile = flag.String("graph.heapprofile", "", "BenchmarkGraph: write the heap profile of bin/caddy after the first cold go mod download all to this file, and print its top")
)

// The generated module graph: levels of modules below the main module,
// each requiring some of the next levels', as a large server's graph does.
var graphLevels = []int{12, 22, 30, 32, 28, 22, 14} // 160 modules, depth 7

// graphLegacy is how many legacy modules the old versions require.
const graphLegacy = 60

// graph is a module graph served by a counting loopback upstream that
// also proxies the checksum database that knows every module.
type graph struct {
	up      *testenv.Upstream
	db      *testenv.SumDB
	app     string // the main module, tidy, with a complete go.sum
	modules int
	files   int   // versions served (each with .info, .mod and .zip)
	bytes   int64 // of the zips of the selected versions
	gocache string
}

// BenchmarkGraph runs the go command (`go mod download all`, then `go
// build` in a separate run) with a fresh module cache against a generated
// graph of 160 modules: straight from the upstream, through a cold
// Piraeus (bin/caddy in its default configuration, a new process with an
// empty cache) and through the same Piraeus warm, interleaved, at each
// upstream delay; it prints the times, their ratios to the direct time,
// upstream requests per artifact and the Caddy process's peak RSS.
// Run it with -benchtime 1x (make bench does).
func BenchmarkGraph(b *testing.B) {
	bin, err := filepath.Abs(*caddyBin)
	if err == nil {
		_, err = os.Stat(bin)
	}
	if err != nil {
		b.Fatalf("%s: %v: run `make build` first (make bench does)", *caddyBin, err)
	}
	var delays []time.Duration
	for _, s := range strings.Split(*graphDelays, ",") {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("-graph.delays: %v", err)
		}
		delays = append(delays, d)
	}
	g := newGraph(b)
	fmt.Printf("graph: %d modules (depth %d), %d module versions, %.0f MiB of zips selected; %s, GOMAXPROCS=%d, %d reps (median)\n",
		g.modules, len(graphLevels), g.files, float64(g.bytes)/(1<<20), runtime.Version(), runtime.GOMAXPROCS(0), *graphReps)
	for b.Loop() {
		for _, delay := range delays {
			g.up.SetDelay(delay)
			g.measure(b, bin, delay)
		}
	}
}

// newGraph generates the modules, their zips, the upstream and the
// checksum database, and a tidy main module importing all of it.
func newGraph(b *testing.B) *graph {
	rng := rand.New(rand.NewPCG(16, 2026))
	dir := b.TempDir()
	g := &graph{up: testenv.NewUpstream(b), gocache: b.TempDir()}
	g.db = g.up.VerifiedBy(b)

	type node struct {
		path string
		reqs []int
		size int64
	}
	var nodes []node
	var byLevel [][]int
	for l, n := range graphLevels {
		byLevel = append(byLevel, nil)
		for i := range n {
			byLevel[l] = append(byLevel[l], len(nodes))
			nodes = append(nodes, node{path: fmt.Sprintf("example.com/graph/l%d/m%02d", l+1, i)})
		}
	}
	g.modules = len(nodes)
	// Every module is required by one of the level above; most require a
	// few more of the next two levels.
	for l := 1; l < len(byLevel); l++ {
		for _, c := range byLevel[l] {
			p := byLevel[l-1][rng.IntN(len(byLevel[l-1]))]
			nodes[p].reqs = append(nodes[p].reqs, c)
		}
	}
	for l := 0; l < len(byLevel)-1; l++ {
		for _, i := range byLevel[l] {
			for range rng.IntN(4) {
				dl := l + 1 + rng.IntN(min(2, len(byLevel)-1-l))
				c := byLevel[dl][rng.IntN(len(byLevel[dl]))]
				if !slices.Contains(nodes[i].reqs, c) {
					nodes[i].reqs = append(nodes[i].reqs, c)
				}
			}
		}
	}
	// Zips from a few KiB to tens of MiB.
	for i := range nodes {
		switch r := rng.IntN(100); {
		case r < 70:
			nodes[i].size = 4<<10 + rng.Int64N(60<<10)
		case r < 92:
			nodes[i].size = 64<<10 + rng.Int64N(960<<10)
		default:
			nodes[i].size = 1<<20 + rng.Int64N(3<<20)
		}
	}
	for i, size := range []int64{10 << 20, 20 << 20, 30 << 20} {
		nodes[byLevel[2+2*i][0]].size = size
	}

	// Several versions of each (two to five), as real modules have: a
	// version requires versions of its dependencies no newer than its own
	// age allows, so the go command reads go.mod files of versions it will
	// not select. Old versions have long requirement lists: besides their
	// dependencies they require legacy modules that newer versions dropped
	// (as real go.mod files shed dependencies over time), which the go
	// command still reads where the graph is not pruned. The newest version
	// of most modules says go 1.21 (a pruned module: the go command loads
	// only its own requirements); older versions, and the rest, say go
	// 1.16 (unpruned: it walks their whole graph).
	legacy := make([]string, graphLegacy)
	for i := range legacy {
		legacy[i] = fmt.Sprintf("example.com/graph/legacy/m%02d", i)
		m := testenv.Module{Path: legacy[i], Version: "v1.0.0", GoMod: "module " + legacy[i] + "\n\ngo 1.16\n",
			Files: map[string]string{"legacy.go": "package legacy\n"}}
		g.up.AddBigZip(m, testenv.WriteBigZip(b, dir, m, 4<<10+rng.Int64N(60<<10)))
		g.files++
	}
	versions := make([]int, len(nodes))
	for i := range nodes {
		versions[i] = 2 + rng.IntN(4)
	}
	version := func(k int) string { return fmt.Sprintf("v1.%d.0", k) }
	for ni, n := range nodes {
		nv := versions[ni]
		for k := range nv {
			v := version(k)
			var req, imports strings.Builder
			for _, c := range n.reqs {
				// The newest requires a dependency's newest or the one
				// before; an older version, one its age allows.
				ck := versions[c] - 1 - rng.IntN(2)
				if k < nv-1 {
					ck = rng.IntN(max(1, (versions[c]*(k+1))/nv))
				}
				fmt.Fprintf(&req, "\t%s %s\n", nodes[c].path, version(max(ck, 0)))
				fmt.Fprintf(&imports, "import _ %q\n", nodes[c].path)
			}
			goVersion := "1.16"
			if k < nv-1 {
				for range 4 + rng.IntN(12) {
					fmt.Fprintf(&req, "\t%s v1.0.0\n", legacy[rng.IntN(len(legacy))])
				}
			} else if rng.IntN(10) < 6 {
				goVersion = "1.21"
			}
			gomod := "module " + n.path + "\n\ngo " + goVersion + "\n"
			if req.Len() > 0 {
				gomod += "\nrequire (\n" + req.String() + ")\n"
			}
			pkg := filepath.Base(n.path)
			m := testenv.Module{Path: n.path, Version: v, GoMod: gomod, Files: map[string]string{
				pkg + ".go": "package " + pkg + "\n\n" + imports.String() + "\n// Version is the module's version.\nconst Version = " + strconv.Quote(v) + "\n",
			}}
			size := n.size
			if k < nv-1 {
				size /= 8
			}
			g.up.AddBigZip(m, testenv.WriteBigZip(b, dir, m, size))
			g.files++
		}
	}

	// The main module imports the first level; go mod tidy (straight from
	// the upstream, untimed) completes its go.mod and writes its go.sum.
	g.app = filepath.Join(dir, "app")
	var req, imports strings.Builder
	for _, i := range byLevel[0] {
		fmt.Fprintf(&req, "\t%s %s\n", nodes[i].path, version(versions[i]-1))
		fmt.Fprintf(&imports, "import _ %q\n", nodes[i].path)
	}
	must(b, os.MkdirAll(g.app, 0o755))
	must(b, os.WriteFile(filepath.Join(g.app, "go.mod"), []byte("module example.com/app\n\ngo 1.21\n\nrequire (\n"+req.String()+")\n"), 0o644))
	must(b, os.WriteFile(filepath.Join(g.app, "main.go"), []byte("package main\n\n"+imports.String()+"\nfunc main() {}\n"), 0o644))
	g.run(b, g.up.URL, g.app, "mod", "tidy")
	out := g.run(b, g.up.URL, g.app, "list", "-m", "-f", "{{.Path}} {{.Version}}", "all")
	selected := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		p, v, _ := strings.Cut(line, " ")
		if !strings.HasPrefix(p, "example.com/graph/legacy/") { // in the graph, not in the build
			selected[p] = v
		}
	}
	if len(selected) != len(nodes) {
		b.Fatalf("the graph selects %d modules, not %d:\n%s", len(selected), len(nodes), out)
	}
	for p, v := range selected {
		fi, err := os.Stat(g.up.ZipFile(testenv.EscapedPath(p, v, "zip")))
		must(b, err)
		g.bytes += fi.Size()
	}
	// Compile once, so that go build runs below measure fetching and
	// extracting modules, not the compiler.
	g.run(b, g.up.URL, g.app, "build", "-o", os.DevNull, ".")
	return g
}

// run runs the go command with a fresh module cache, removed afterwards,
// and returns its output.
func (g *graph) run(b *testing.B, goproxy, dir string, args ...string) string {
	out, _ := g.runCPU(b, goproxy, dir, args...)
	return out
}

// runCPU is run, also returning the CPU time the go command used.
func (g *graph) runCPU(b *testing.B, goproxy, dir string, args ...string) (string, time.Duration) {
	b.Helper()
	modcache, err := os.MkdirTemp("", "piraeus-graph-modcache-")
	must(b, err)
	defer os.RemoveAll(modcache)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GO") {
			env = append(env, kv)
		}
	}
	env = append(env, "GOPROXY="+goproxy, "GOSUMDB="+g.db.VKey, "GOMODCACHE="+modcache, "GOCACHE="+g.gocache,
		"GOPATH="+filepath.Join(modcache, "gopath"), "GOFLAGS=-modcacherw", "GOTOOLCHAIN=local", "GOWORK=off", "GO111MODULE=on",
		"GONOSUMDB=", "GOPRIVATE=", "GONOPROXY=")
	cmd := exec.Command(testenv.GoBin(b), args...)
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("go %s (GOPROXY=%s): %v\n%s", strings.Join(args, " "), goproxy, err, out)
	}
	return string(out), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// timed runs the go command in a copy of the main module and returns how
// long it took.
func (g *graph) timed(b *testing.B, goproxy string, args ...string) time.Duration {
	d, _ := g.timedCPU(b, goproxy, args...)
	return d
}

// timedCPU is timed, also returning the CPU time the go command used.
func (g *graph) timedCPU(b *testing.B, goproxy string, args ...string) (time.Duration, time.Duration) {
	b.Helper()
	dir := b.TempDir()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		data, err := os.ReadFile(filepath.Join(g.app, f))
		must(b, err)
		must(b, os.WriteFile(filepath.Join(dir, f), data, 0o644))
	}
	start := time.Now()
	_, cpu := g.runCPU(b, goproxy, dir, args...)
	return time.Since(start), cpu
}

// measure runs each client interleaved at one delay and prints a table:
// straight from the upstream, through a cold Piraeus in its default
// configuration and the same one warm, and through a cold Piraeus with
// prefetch zip.
func (g *graph) measure(b *testing.B, bin string, delay time.Duration) {
	ops := []struct {
		name string
		args []string
	}{
		{"go mod download all", []string{"mod", "download", "all"}},
		{"go build", []string{"build", "-o", os.DevNull, "."}},
	}
	type figures struct {
		direct, cold, warm, coldZip []time.Duration
		// CPU time of the go command straight from the upstream, and of
		// the go command and of bin/caddy through a cold Piraeus.
		directCPU, coldGoCPU, coldCaddyCPU []time.Duration
	}
	results := make([]figures, len(ops))
	var peak, peakAnon int64
	perArtifact, maxPerArtifact := 0.0, 0
	// Requests to the checksum database per run of go mod download all:
	// the go command's straight from the upstream, and a cold Piraeus's
	// (its own lookups, whose answers also serve the go command's).
	var sumdbDirect, sumdbCold []int
	sumdbSince := func(before int) int {
		n := 0
		for _, p := range g.up.Paths()[before:] {
			if strings.HasPrefix(p, "sumdb/") {
				n++
			}
		}
		return n
	}
	var prefetched, used [2]float64 // default, prefetch zip
	cold := func(i int, extra string, profile bool) (*caddy, time.Duration) {
		c := startCaddy(b, bin, g.up.URL, g.db.VKey, extra)
		caddyCPU := testenv.ProcCPU(c.cmd.Process.Pid)
		before := len(g.up.Paths())
		var profiled <-chan []byte
		if profile {
			profiled = c.startCPUProfile()
		}
		d, goCPU := g.timedCPU(b, c.url, ops[i].args...)
		if extra == "" {
			results[i].coldGoCPU = append(results[i].coldGoCPU, goCPU)
			results[i].coldCaddyCPU = append(results[i].coldCaddyCPU, testenv.ProcCPU(c.cmd.Process.Pid)-caddyCPU)
		}
		if profiled != nil {
			data := <-profiled
			must(b, os.WriteFile(*cpuProfile, data, 0o644))
			out, err := exec.Command(testenv.GoBin(b), "tool", "pprof", "-top", "-cum", "-nodecount=40", *cpuProfile).CombinedOutput()
			must(b, err)
			fmt.Printf("CPU profile of bin/caddy during a cold go mod download all (%s):\n%s", *cpuProfile, out)
		}
		counts := map[string]int{}
		if i == 0 && extra == "" {
			sumdbCold = append(sumdbCold, sumdbSince(before))
		}
		for _, p := range g.up.Paths()[before:] {
			if !strings.HasPrefix(p, "sumdb/") {
				counts[p]++
			}
		}
		total := 0
		for _, n := range counts {
			total += n
			maxPerArtifact = max(maxPerArtifact, n)
		}
		if len(counts) > 0 {
			perArtifact = max(perArtifact, float64(total)/float64(len(counts)))
		}
		return c, d
	}
	stop := func(c *caddy, k int) {
		f, u := c.prefetchCounts(b)
		prefetched[k] += f
		used[k] += u
		hwm, anon := c.stop(b)
		peak, peakAnon = max(peak, hwm), max(peakAnon, anon)
	}
	for range *graphReps {
		for i := range ops {
			before := len(g.up.Paths())
			d, cpu := g.timedCPU(b, g.up.URL, ops[i].args...)
			if i == 0 {
				sumdbDirect = append(sumdbDirect, sumdbSince(before))
			}
			results[i].direct = append(results[i].direct, d)
			results[i].directCPU = append(results[i].directCPU, cpu)
			c, d := cold(i, "", *cpuProfile != "" && i == 0 && delay == 0 && len(results[i].cold) == 0)
			results[i].cold = append(results[i].cold, d)
			if *heapProfile != "" && i == 0 && delay == 0 && len(results[i].warm) == 0 {
				c.writeHeapProfile(b, *heapProfile)
			}
			results[i].warm = append(results[i].warm, g.timed(b, c.url, ops[i].args...))
			stop(c, 0)
			c, d = cold(i, "prefetch zip", false)
			results[i].coldZip = append(results[i].coldZip, d)
			stop(c, 1)
		}
	}
	fmt.Printf("\nupstream delay %s per request\n", delay)
	fmt.Printf("%-20s %8s %8s %8s %8s | %8s %8s %8s\n", "", "direct", "cold", "warm", "cold-zip", "cold", "warm", "cold-zip")
	for i, op := range ops {
		d, c, w, z := median(results[i].direct), median(results[i].cold), median(results[i].warm), median(results[i].coldZip)
		r := func(x time.Duration) float64 { return x.Seconds() / d.Seconds() }
		round := func(x time.Duration) time.Duration { return x.Round(10 * time.Millisecond) }
		fmt.Printf("%-20s %8s %8s %8s %8s | %7.2fx %7.2fx %7.2fx\n", op.name, round(d), round(c), round(w), round(z), r(c), r(w), r(z))
		verb := strings.Fields(op.name)[1]
		b.ReportMetric(r(c), fmt.Sprintf("cold/direct-%s-%s", verb, delay))
		b.ReportMetric(r(z), fmt.Sprintf("coldzip/direct-%s-%s", verb, delay))
	}
	fmt.Printf("(cold: default configuration, prefetch selected; cold-zip: prefetch zip; ratios to direct)\n")
	for i, op := range ops {
		d, g, c := median(results[i].directCPU), median(results[i].coldGoCPU), median(results[i].coldCaddyCPU)
		fmt.Printf("CPU time, %s: go command direct %.2fs; cold: go command %.2fs + bin/caddy %.2fs = %.2fx direct\n",
			op.name, d.Seconds(), g.Seconds(), c.Seconds(), (g+c).Seconds()/d.Seconds())
	}
	fmt.Printf("upstream requests per artifact (cold): %.2f, at most %d for one\n", perArtifact, maxPerArtifact)
	fmt.Printf("checksum-database requests per go mod download all: %d straight from the upstream, %d through a cold Piraeus\n",
		median(sumdbDirect), median(sumdbCold))
	for k, name := range []string{"prefetch selected (the default)", "prefetch zip"} {
		if prefetched[k] > 0 {
			fmt.Printf("%s: %.0f artifacts prefetched per cold run, %.0f%% of them asked for by the go command\n",
				name, prefetched[k]/float64(2**graphReps), 100*used[k]/prefetched[k])
		}
	}
	fmt.Printf("peak RSS of bin/caddy: %.1f MiB (VmHWM), of which anonymous at most %.1f MiB (sampled); the rest is Caddy's executable, mapped\n",
		float64(peak)/1024, float64(peakAnon)/1024)
	b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB-"+delay.String())
}

func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// caddy is bin/caddy serving Piraeus in its default configuration (memory
// and disk tiers in a fresh data directory) in front of the upstream.
type caddy struct {
	url   string
	admin string
	cmd   *exec.Cmd
	tmp   string

	stopSampling chan struct{}
	sampled      chan int64 // the peak of RssAnon, KiB
}

// writeHeapProfile saves the process's heap profile (through Caddy's admin
// endpoint) to file and prints its top entries and the runtime's figures.
func (c *caddy) writeHeapProfile(b *testing.B, file string) {
	b.Helper()
	resp, err := http.Get(c.admin + "/debug/pprof/heap?gc=1")
	must(b, err)
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(b, err)
	must(b, os.WriteFile(file, data, 0o644))
	out, err := exec.Command(testenv.GoBin(b), "tool", "pprof", "-top", "-nodecount=15", "-sample_index=inuse_space", file).CombinedOutput()
	must(b, err)
	fmt.Printf("heap profile of bin/caddy after a cold go mod download all (%s):\n%s", file, out)
	resp, err = http.Get(c.admin + "/debug/vars")
	must(b, err)
	var vars struct {
		Memstats runtime.MemStats `json:"memstats"`
	}
	err = json.NewDecoder(resp.Body).Decode(&vars)
	resp.Body.Close()
	must(b, err)
	m := vars.Memstats
	fmt.Printf("runtime: heap in use %.1f MiB, heap idle %.1f MiB (released %.1f), stacks %.1f MiB, other runtime %.1f MiB, total from the OS %.1f MiB, %d GCs\n",
		mib(m.HeapInuse), mib(m.HeapIdle), mib(m.HeapReleased), mib(m.StackSys), mib(m.MSpanSys+m.MCacheSys+m.BuckHashSys+m.GCSys+m.OtherSys), mib(m.Sys), m.NumGC)
	fmt.Printf("RSS now %.1f MiB\n", float64(testenv.ProcStatusKiB(c.cmd.Process.Pid, "VmRSS:"))/1024)
}

// startCPUProfile starts a 5 s CPU profile of the process; the channel
// gets it when it ends.
func (c *caddy) startCPUProfile() <-chan []byte {
	return testenv.GetAsync(c.admin + "/debug/pprof/profile?seconds=5")
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

func startCaddy(b *testing.B, bin, upstream, vkey, extra string) *caddy {
	b.Helper()
	tmp, err := os.MkdirTemp("", "piraeus-graph-caddy-")
	must(b, err)
	port, admin := testenv.FreePort(b), testenv.FreePort(b)
	cf := filepath.Join(tmp, "Caddyfile")
	must(b, os.WriteFile(cf, fmt.Appendf(nil, `{
	admin 127.0.0.1:%d
	persist_config off
}
http://127.0.0.1:%d {
	bind 127.0.0.1
	goproxy %s {
		sumdb %s
		%s
	}
}
`, admin, port, upstream, vkey, *graphExtra+"\n\t\t"+extra), 0o644))
	cmd := exec.Command(bin, "run", "--config", cf, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+tmp, "XDG_CONFIG_HOME="+tmp, "HOME="+tmp)
	must(b, cmd.Start())
	c := &caddy{url: fmt.Sprintf("http://127.0.0.1:%d", port), admin: fmt.Sprintf("http://127.0.0.1:%d", admin), cmd: cmd, tmp: tmp}
	for range 200 { // up to 20 s
		if conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			conn.Close()
			if resp, err := http.Get(c.url + "/healthz-none"); err == nil {
				resp.Body.Close()
				c.sampleAnon()
				return c
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.stop(b)
	b.Fatal("bin/caddy did not start")
	return nil
}

// sampleAnon samples the process's anonymous RSS every 20 ms until stop.
func (c *caddy) sampleAnon() {
	c.stopSampling, c.sampled = make(chan struct{}), make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			peak = max(peak, testenv.ProcStatusKiB(c.cmd.Process.Pid, "RssAnon:"))
			select {
			case <-c.stopSampling:
				c.sampled <- peak
				return
			case <-t.C:
			}
		}
	}()
}

// prefetchCounts reads the prefetched artifacts and those asked for later
// from the process's metrics.
func (c *caddy) prefetchCounts(b *testing.B) (fetched, used float64) {
	resp, err := http.Get(c.admin + "/metrics")
	must(b, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	must(b, err)
	for _, line := range strings.Split(string(data), "\n") {
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(value, 64)
		switch {
		case strings.HasPrefix(name, "goproxy_prefetches_total{") && strings.Contains(name, `outcome="fetched"`):
			fetched += v
		case strings.HasPrefix(name, "goproxy_prefetch_used_total{"):
			used += v
		}
	}
	return fetched, used
}

// stop ends the process, removes its data and returns its peak RSS and
// peak anonymous RSS in KiB.
func (c *caddy) stop(b *testing.B) (hwm, anon int64) {
	hwm = testenv.ProcStatusKiB(c.cmd.Process.Pid, "VmHWM:")
	if c.stopSampling != nil {
		close(c.stopSampling)
		anon = <-c.sampled
	}
	c.cmd.Process.Kill()
	c.cmd.Wait()
	os.RemoveAll(c.tmp)
	return hwm, anon
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}
