// Command realworld checks Piraeus on real module graphs, where the
// hermetic suite's fixtures are kinder than the world (zip64 archives, a
// checksum database that grows between clients, long requirement lists,
// graph pruning). It needs the module proxy that this machine's go
// command reaches (`go env GOPROXY`), so it is `make realworld`, not part
// of `make test`.
//
// For each graph (a module at a version: its go.mod is the main module,
// without its go.sum, so that every module is looked up in the checksum
// database) it fetches the graph once into a local fixture, a module
// cache, served on loopback as a GOPROXY that counts requests and passes
// /sumdb/ to the machine's proxy (the real sum.golang.org). Then it runs
// the go command with fresh module caches straight from the fixture, through
// a cold bin/caddy and through the same one warm, and compares every Sum
// and GoModSum of `go mod download -json all`, the output of `go list -m -u
// all` and `go mod verify`, and the errors: what the source refuses must be
// refused the same way.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/piraeus-go/piraeus/goproxy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

var (
	caddyBin = flag.String("caddy", "bin/caddy", "Caddy with Piraeus (make build)")
	graphs   = flag.String("graphs", "caddy=github.com/caddyserver/caddy/v2@v2.11.9,prometheus=github.com/prometheus/prometheus@latest,terraform=github.com/hashicorp/terraform@latest,istio=istio.io/istio@latest",
		"comma-separated name=module@version graphs")
	workDir      = flag.String("work", "", "directory for fixtures and module caches (default: a temp dir, removed at the end)")
	timeout      = flag.Duration("timeout", 30*time.Minute, "bound on each go command")
	cacheBlock   = flag.String("cache", "", "the goproxy cache block's lines, separated by ';' (default: none, the default tiers)")
	cpuProfile   = flag.String("cpuprofile", "", "write CPU profiles of bin/caddy during each graph's cold and warm runs to this file (graph name, and .warm, appended)")
	delay        = flag.Duration("delay", 0, "latency the fixture adds to each module request (as a distant upstream has), e.g. 50ms")
	heapProfile  = flag.String("heapprofile", "", "write a heap profile of bin/caddy after each graph's cold run to this file (graph name appended)")
	clientCaches = flag.String("modcaches", "", "directory for the clients' module caches (default: the work directory); on a tmpfs such as /dev/shm, the go command's own extraction (1.5 GB on Caddy's graph) leaves the disk the mirror uses alone")
	traceFile    = flag.String("trace", "", "write every request of each client run's go mod download to this file (graph name and run appended): start, end, status, Cache-Status, path")
	again        = flag.Bool("again", false, "run the direct client once more after the warm one, to tell the machine's drift over the runs from the mirror's cost")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if _, err := os.Stat(*caddyBin); err != nil {
		log.Fatalf("%s not found: run `make build` first", *caddyBin)
	}
	source := networkProxy()
	if source == nil {
		log.Fatal("go env GOPROXY names no proxy to fetch the graphs from")
	}
	work := *workDir
	if work == "" {
		dir, err := os.MkdirTemp("", "piraeus-realworld-")
		must(err)
		defer removeAll(dir)
		work = dir
	}
	var rows []row
	for _, g := range strings.Split(*graphs, ",") {
		name, mv, ok := strings.Cut(strings.TrimSpace(g), "=")
		if !ok {
			log.Fatalf("graph %q: want name=module@version", g)
		}
		r, err := runGraph(filepath.Join(work, name), name, mv, source)
		if err != nil {
			log.Printf("%s: %v", name, err)
			r = row{name: name, module: mv, problems: []string{err.Error()}}
		}
		rows = append(rows, r)
	}
	printTable(os.Stdout, rows)
	printWaits(os.Stdout, rows)
	for _, r := range rows {
		if len(r.problems) > 0 {
			os.Exit(1)
		}
	}
}

// row is one graph's figures.
type row struct {
	name, module string
	modules      int
	refused      int // modules the source refuses (Error in go mod download)
	identical    bool
	times        [3]time.Duration       // direct, cold, warm
	upstream     [2]int64               // fixture requests during cold, warm
	clientReqs   int64                  // requests the cold client made of bin/caddy
	prefetch     [2]int64               // prefetched during cold, and of those asked for
	sumdb        [3]int64               // checksum-database requests: direct, cold, warm
	peakRSS      int64                  // KiB, bin/caddy
	peakAnon     int64                  // KiB, bin/caddy's anonymous memory, sampled
	idle         [2]int64               // KiB: an idle Caddy's RSS and anonymous memory
	cpuPerReq    time.Duration          // bin/caddy's CPU during the cold run per client request
	waits        [3]map[string]kindWait // what go mod download waited on: direct, cold, warm
	problems     []string
}

// result is what one client run saw.
type result struct {
	sums     map[string]string // module@version -> "Sum GoModSum" or "error: ..."
	listU    string
	verified bool
	took     time.Duration
	waits    map[string]kindWait // of go mod download, by kind of request
}

// runGraph builds the fixture of one graph and runs the three clients.
func runGraph(dir, name, mv string, source *url.URL) (row, error) {
	r := row{name: name, module: mv}
	fixture := filepath.Join(dir, "fixture")
	main := filepath.Join(dir, "main")
	must(os.MkdirAll(main, 0o755))

	// The graph, fetched once from the source into the fixture's cache.
	log.Printf("%s: fetching %s and its graph from %s", name, mv, source.Redacted())
	fetchEnv := goEnv(fixture, source.String(), dir)
	out, err := goCmd(dir, fetchEnv, "mod", "download", "-json", mv)
	if err != nil {
		return r, fmt.Errorf("go mod download %s: %v\n%s", mv, err, out)
	}
	var root struct{ Path, Version, GoMod, Error string }
	if err := json.Unmarshal(out, &root); err != nil || root.Error != "" {
		return r, fmt.Errorf("go mod download %s: %v %s", mv, err, root.Error)
	}
	r.module = root.Path + "@" + root.Version
	gomod, err := os.ReadFile(root.GoMod)
	must(err)
	must(os.WriteFile(filepath.Join(main, "go.mod"), gomod, 0o644))
	// Every client run below starts from this go.mod and no go.sum.
	if out, err := goCmd(main, fetchEnv, "mod", "download", "-json", "all"); err != nil && len(out) == 0 {
		return r, fmt.Errorf("filling the fixture: %v", err)
	}
	if out, err := goCmd(main, fetchEnv, "list", "-m", "-u", "all"); err != nil {
		log.Printf("%s: go list -m -u all from the source: %v\n%s", name, err, firstLines(out, 5))
	}
	os.Remove(filepath.Join(main, "go.sum"))

	fx := newFixtureServer(filepath.Join(fixture, "cache", "download"), source, *delay)
	defer fx.close()
	r.idle = idleCaddy(dir)

	// Straight from the fixture.
	direct, err := client(dir, main, "direct", fx.url)
	if err != nil {
		return r, err
	}
	r.sumdb[0] = fx.sumdb.Swap(0)
	fx.requests.Store(0)

	// Through a cold bin/caddy, then warm.
	caddy, err := startCaddy(dir, fx.url)
	if err != nil {
		return r, err
	}
	defer caddy.stop()
	stopSampling := caddy.sampleAnon(&r.peakAnon, *heapProfile, name)
	defer stopSampling()
	profiled := caddy.cpuProfile(*cpuProfile, name)
	cpu0 := testenv.ProcCPU(caddy.cmd.Process.Pid)
	cold, err := client(dir, main, "cold", caddy.url)
	if err != nil {
		return r, err
	}
	coldCPU := testenv.ProcCPU(caddy.cmd.Process.Pid) - cpu0
	if err := <-profiled; err != nil {
		log.Printf("%s: CPU profile: %v", name, err)
	}
	if err := caddy.heapProfile(*heapProfile, name); err != nil {
		log.Printf("%s: heap profile: %v", name, err)
	}
	if m, err := caddy.prefetchMetrics(); err != nil {
		log.Printf("%s: metrics: %v", name, err)
	} else {
		log.Printf("%s: prefetches of the cold run:\n%s", name, m)
	}
	r.upstream[0], r.sumdb[1] = fx.requests.Swap(0), fx.sumdb.Swap(0)
	if st, err := caddy.status(); err != nil {
		log.Printf("%s: status after the cold run: %v", name, err)
	} else {
		r.clientReqs, r.prefetch = st.Requests, [2]int64{st.Prefetch.Fetched, st.Prefetch.Used}
		if st.Requests > 0 {
			r.cpuPerReq = coldCPU / time.Duration(st.Requests)
		}
	}
	profiled = caddy.cpuProfile(*cpuProfile, name+".warm")
	warm, err := client(dir, main, "warm", caddy.url)
	if err != nil {
		return r, err
	}
	if err := <-profiled; err != nil {
		log.Printf("%s: CPU profile of the warm run: %v", name, err)
	}
	r.upstream[1], r.sumdb[2] = fx.requests.Swap(0), fx.sumdb.Swap(0)
	r.peakRSS = testenv.ProcStatusKiB(caddy.cmd.Process.Pid, "VmHWM:")
	stopSampling()
	if *again {
		d2, err := client(dir, main, "direct-again", fx.url)
		if err != nil {
			return r, err
		}
		z := d2.waits["zip"]
		log.Printf("%s: direct again: %v (zips %d; %.1fs summed; %.0f-%.0fs); first direct run %v",
			name, d2.took.Round(100*time.Millisecond), z.n, z.sum.Seconds(), z.first.Seconds(), z.last.Seconds(), direct.took.Round(100*time.Millisecond))
		r.problems = append(r.problems, compare("direct again", direct, d2)...)
	}

	r.modules = len(direct.sums)
	r.times = [3]time.Duration{direct.took, cold.took, warm.took}
	r.waits = [3]map[string]kindWait{direct.waits, cold.waits, warm.waits}
	for _, v := range direct.sums {
		if strings.HasPrefix(v, "error: ") {
			r.refused++
		}
	}
	r.problems = append(r.problems, compare("cold", direct, cold)...)
	r.problems = append(r.problems, compare("warm", direct, warm)...)
	r.identical = len(r.problems) == 0
	for _, p := range r.problems {
		log.Printf("%s: %s", name, p)
	}
	return r, nil
}

// client runs the go command with a fresh module cache through goproxy:
// go mod download -json all, go list -m -u all, go mod verify.
func client(dir, main, label, goproxy string) (result, error) {
	res := result{sums: map[string]string{}}
	work := filepath.Join(dir, label)
	must(os.MkdirAll(work, 0o755))
	defer removeAll(work)
	mainCopy := filepath.Join(work, "main")
	must(os.MkdirAll(mainCopy, 0o755))
	gomod, err := os.ReadFile(filepath.Join(main, "go.mod"))
	must(err)
	must(os.WriteFile(filepath.Join(mainCopy, "go.mod"), gomod, 0o644))
	// The go command goes through a recorder of what it waits on, which
	// adds the same loopback hop to every run.
	settleDisk(label)
	wr := newWaitRecorder(goproxy)
	defer wr.close()
	goproxy = wr.url
	modcache := filepath.Join(work, "modcache")
	if *clientCaches != "" {
		modcache = must2(os.MkdirTemp(*clientCaches, "piraeus-realworld-"+label+"-"))
		defer removeAll(modcache)
	}
	env := goEnv(modcache, goproxy, work)
	start := time.Now()
	out, _ := goCmd(mainCopy, env, "mod", "download", "-json", "all")
	res.took = time.Since(start)
	downloadCPU := lastCPU.Load()
	res.waits = wr.snapshot()
	if *traceFile != "" {
		if err := wr.writeTrace(*traceFile + "." + filepath.Base(dir) + "." + label); err != nil {
			log.Printf("%s: trace: %v", label, err)
		}
	}
	// Messages name the proxy asked: the same for every run.
	out = []byte(strings.NewReplacer(goproxy, "$GOPROXY", mainCopy, "$MAIN").Replace(string(out)))
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var m struct{ Path, Version, Sum, GoModSum, Error string }
		if err := dec.Decode(&m); err != nil {
			if !errors.Is(err, io.EOF) {
				return res, fmt.Errorf("%s: go mod download -json all: %v\n%s", label, err, firstLines(out, 10))
			}
			break
		}
		v := m.Sum + " " + m.GoModSum
		if m.Error != "" {
			v = "error: " + firstLines([]byte(m.Error), 1)
		}
		res.sums[m.Path+"@"+m.Version] = v
	}
	if len(res.sums) == 0 {
		return res, fmt.Errorf("%s: go mod download -json all listed no module:\n%s", label, firstLines(out, 10))
	}
	listU, err := goCmd(mainCopy, env, "list", "-m", "-u", "all")
	if err != nil {
		listU = append([]byte("error: "), listU...)
	}
	res.listU = strings.NewReplacer(goproxy, "$GOPROXY", mainCopy, "$MAIN").Replace(string(listU))
	_, err = goCmd(mainCopy, env, "mod", "verify")
	res.verified = err == nil
	log.Printf("  %s: %d modules in %v (the go command's CPU %v)", label, len(res.sums), res.took.Round(100*time.Millisecond), time.Duration(downloadCPU).Round(100*time.Millisecond))
	return res, nil
}

// compare lists how a run through the mirror differs from the direct one.
func compare(label string, direct, got result) []string {
	var problems []string
	for mv, want := range direct.sums {
		switch have, ok := got.sums[mv]; {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: %s missing", label, mv))
		case have != want:
			problems = append(problems, fmt.Sprintf("%s: %s: %q; direct %q", label, mv, have, want))
		}
	}
	for mv := range got.sums {
		if _, ok := direct.sums[mv]; !ok {
			problems = append(problems, fmt.Sprintf("%s: %s not in the direct run", label, mv))
		}
	}
	if got.listU != direct.listU {
		problems = append(problems, fmt.Sprintf("%s: go list -m -u all differs:\n%s\n--- direct:\n%s", label, firstLines([]byte(got.listU), 20), firstLines([]byte(direct.listU), 20)))
	}
	if got.verified != direct.verified {
		problems = append(problems, fmt.Sprintf("%s: go mod verify %v; direct %v", label, got.verified, direct.verified))
	}
	slices.Sort(problems)
	if len(problems) > 20 {
		problems = append(problems[:20], fmt.Sprintf("%s: and %d more", label, len(problems)-20))
	}
	return problems
}

func printTable(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "graph\tmodule\tmodules\trefused\tidentical\tdirect\tcold\twarm\tclient cold\tupstream cold/warm\tprefetched/used\tsumdb direct/cold/warm\tCPU/request cold\tpeak RSS\tpeak anon\tidle Caddy RSS/anon\t")
	for _, r := range rows {
		hit := 0.0
		if r.prefetch[0] > 0 {
			hit = 100 * float64(r.prefetch[1]) / float64(r.prefetch[0])
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%v\t%.1fs\t%.1fs\t%.1fs\t%d\t%d/%d\t%d/%d (%.0f%%)\t%d/%d/%d\t%.2f ms\t%.0f MiB\t%.0f MiB\t%.0f/%.0f MiB\t\n", r.name, r.module, r.modules, r.refused, r.identical,
			r.times[0].Seconds(), r.times[1].Seconds(), r.times[2].Seconds(), r.clientReqs, r.upstream[0], r.upstream[1],
			r.prefetch[0], r.prefetch[1], hit, r.sumdb[0], r.sumdb[1], r.sumdb[2], float64(r.cpuPerReq.Microseconds())/1000,
			float64(r.peakRSS)/1024, float64(r.peakAnon)/1024, float64(r.idle[0])/1024, float64(r.idle[1])/1024)
	}
	tw.Flush()
}

// fixtureServer serves a module cache's download directory as a GOPROXY
// on loopback, as a file-system proxy would (404 for what it lacks), and
// /sumdb/ from the source, counting both.
type fixtureServer struct {
	url             string
	srv             *http.Server
	requests, sumdb atomic.Int64
}

func newFixtureServer(dir string, source *url.URL, delay time.Duration) *fixtureServer {
	fx := &fixtureServer{}
	sumdb := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(source)
		r.Out.Host = source.Host
	}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	fx.url = "http://" + l.Addr().String()
	fx.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/sumdb/") {
			fx.sumdb.Add(1)
			sumdb.ServeHTTP(w, r)
			return
		}
		fx.requests.Add(1)
		if delay > 0 {
			time.Sleep(delay) // the latency of a distant upstream
		}
		p := filepath.Join(dir, filepath.FromSlash(path.Clean("/"+r.URL.Path)))
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			http.Error(w, "not found: "+r.URL.Path, http.StatusNotFound)
			return
		}
		http.ServeFile(w, r, p)
	})}
	go fx.srv.Serve(l)
	return fx
}

func (fx *fixtureServer) close() { fx.srv.Close() }

// caddyProc is bin/caddy in the default configuration of make run (memory
// and disk tiers, sum.golang.org through the upstream's /sumdb/), in front
// of the fixture.
type caddyProc struct {
	cmd   *exec.Cmd
	url   string
	admin string // host:port of the admin endpoint, "" when off
}

// cpuProfile starts a CPU profile of bin/caddy (through the admin
// endpoint's pprof) lasting the cold run's expected length, written to
// file.name; the channel gives its outcome (nil at once when file is "").
func (c *caddyProc) cpuProfile(file, name string) <-chan error {
	done := make(chan error, 1)
	if file == "" || c.admin == "" {
		done <- nil
		return done
	}
	go func() { done <- c.saveProfile("/debug/pprof/profile?seconds=30", file+"."+name) }()
	return done
}

// heapProfile writes bin/caddy's heap profile to file.name.
func (c *caddyProc) heapProfile(file, name string) error {
	if file == "" || c.admin == "" {
		return nil
	}
	return c.saveProfile("/debug/pprof/heap", file+"."+name)
}

func (c *caddyProc) saveProfile(path, file string) error {
	resp, err := http.Get("http://" + c.admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	log.Printf("profile written: %s", file)
	return f.Close()
}

func startCaddy(dir, upstream string) (*caddyProc, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cache := ""
	if *cacheBlock != "" {
		cache = "\t\tcache {\n\t\t\t" + strings.ReplaceAll(*cacheBlock, ";", "\n\t\t\t") + "\n\t\t}\n"
	}
	// No cache block: the default tiers, memory and disk under Caddy's
	// data directory (XDG_DATA_HOME, below dir).
	// The admin endpoint, on loopback, for the profiles and the metrics.
	al, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	adminAddr := al.Addr().String()
	al.Close()
	admin := adminAddr
	cf := fmt.Sprintf("{\n\tadmin %s\n\tpersist_config off\n}\nhttp://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tgoproxy %s {\n\t\tstatus /-/status\n%s\t}\n}\n",
		admin, port, upstream, cache)
	cfPath := filepath.Join(dir, "Caddyfile")
	must(os.WriteFile(cfPath, []byte(cf), 0o644))
	cmd := exec.Command(*caddyBin, "run", "--config", cfPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	logFile, err := os.Create(filepath.Join(dir, "caddy.log"))
	must(err)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &caddyProc{cmd: cmd, url: fmt.Sprintf("http://127.0.0.1:%d", port), admin: adminAddr}
	for range 300 { // up to 30 s
		if resp, err := http.Get(c.url + "/healthz"); err == nil {
			resp.Body.Close()
			return c, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.stop()
	return nil, errors.New("bin/caddy did not start; see caddy.log")
}

// prefetchMetrics returns the prefetch's counters from Caddy's metrics,
// by kind and outcome.
func (c *caddyProc) prefetchMetrics() (string, error) {
	resp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "goproxy_prefetch") {
			b.WriteString("\t" + line + "\n")
		}
	}
	return b.String(), sc.Err()
}

// sampleAnon keeps the peak of bin/caddy's anonymous memory (RssAnon) in
// *peak, sampled every 50 ms until the returned stop is called. With a
// heap profile file, it writes file.name.peak, a heap profile taken as
// the anonymous memory reached a new peak (4 MiB or more above the one
// profiled before, at most one a second): where the peak is.
func (c *caddyProc) sampleAnon(peak *int64, file, name string) (stop func()) {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var profiled int64
		var last time.Time
		for {
			if kib := testenv.ProcStatusKiB(c.cmd.Process.Pid, "RssAnon:"); kib > *peak {
				*peak = kib
				if file != "" && c.admin != "" && kib >= profiled+4096 && time.Since(last) >= time.Second {
					last = time.Now()
					if err := c.saveProfile("/debug/pprof/heap?debug=1", file+"."+name+".peak"); err != nil {
						log.Printf("%s: heap profile at a peak: %v", name, err)
					} else {
						profiled = kib
						log.Printf("%s: heap profile at %d MiB anonymous", name, kib/1024)
					}
				}
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); <-stopped }) }
}

// idleCaddy is the RSS and anonymous memory (KiB) of bin/caddy serving a
// fixed answer, without Piraeus: the floor the mirror's figures sit on.
func idleCaddy(dir string) [2]int64 {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	addr := l.Addr().String()
	l.Close()
	cfPath := filepath.Join(dir, "Caddyfile.idle")
	must(os.WriteFile(cfPath, []byte(fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\nhttp://%s {\n\tbind 127.0.0.1\n\trespond \"ok\"\n}\n", addr)), 0o644))
	cmd := exec.Command(*caddyBin, "run", "--config", cfPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	if err := cmd.Start(); err != nil {
		log.Printf("idle Caddy: %v", err)
		return [2]int64{}
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for range 300 { // up to 30 s
		if resp, err := http.Get("http://" + addr + "/"); err == nil {
			resp.Body.Close()
			pid := cmd.Process.Pid
			return [2]int64{testenv.ProcStatusKiB(pid, "VmRSS:"), testenv.ProcStatusKiB(pid, "RssAnon:")}
		}
		time.Sleep(100 * time.Millisecond)
	}
	log.Printf("idle Caddy did not start")
	return [2]int64{}
}

// status reads the status page's JSON.
func (c *caddyProc) status() (goproxy.Status, error) {
	var st goproxy.Status
	resp, err := http.Get(c.url + "/-/status?format=json")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status page: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

func (c *caddyProc) stop() {
	c.cmd.Process.Kill()
	c.cmd.Wait()
}

// goEnv is a go command's environment with its own module cache and
// GOPATH, the given proxy and the default checksum database.
func goEnv(modcache, goproxy, dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GO") && k != "GOCACHE" && k != "GOROOT" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GOPROXY="+goproxy, "GOMODCACHE="+modcache, "GOPATH="+filepath.Join(dir, "gopath"),
		"GOFLAGS=-modcacherw -mod=mod", "GOSUMDB=sum.golang.org", "GOTOOLCHAIN=local", "GOWORK=off", "GONOSUMDB=", "GOPRIVATE=")
}

// lastCPU is the CPU time (user and system, nanoseconds) of the last go
// mod download that goCmd ran, with its children's.
var lastCPU atomic.Int64

func goCmd(dir string, env []string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	var once sync.Once
	timer := time.AfterFunc(*timeout, func() { once.Do(func() { cmd.Process.Kill() }) })
	err := cmd.Run()
	timer.Stop()
	if ps := cmd.ProcessState; ps != nil && len(args) > 1 && args[1] == "download" {
		lastCPU.Store(int64(ps.UserTime() + ps.SystemTime()))
	}
	if err != nil && stdout.Len() == 0 {
		return stderr.Bytes(), err
	}
	return stdout.Bytes(), err
}

// networkProxy is the first proxy URL of the machine's GOPROXY.
func networkProxy() *url.URL {
	out, err := exec.Command("go", "env", "GOPROXY").Output()
	if err != nil {
		return nil
	}
	for _, entry := range strings.FieldsFunc(strings.TrimSpace(string(out)), func(r rune) bool { return r == ',' || r == '|' }) {
		if u, err := url.Parse(entry); err == nil && (u.Scheme == "https" || u.Scheme == "http") {
			return u
		}
	}
	return nil
}

func firstLines(b []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() && len(lines) < n {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines, "\n")
}

// removeAll removes a tree the go command wrote (module caches are
// read-only unless -modcacherw, which every run here sets).
func removeAll(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		log.Printf("removing %s: %v", dir, err)
	}
}

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func must2[T any](v T, err error) T {
	must(err)
	return v
}
