package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// waitKinds are the kinds of request the go command makes of a GOPROXY,
// in the order they are printed.
var waitKinds = []string{"mod", "info", "zip", "list/latest", "sumdb lookup", "sumdb tile", "sumdb other", "all"}

// kindOf is the kind of a GOPROXY request path.
func kindOf(p string) string {
	switch {
	case strings.HasPrefix(p, "/sumdb/") && strings.Contains(p, "/lookup/"):
		return "sumdb lookup"
	case strings.HasPrefix(p, "/sumdb/") && strings.Contains(p, "/tile/"):
		return "sumdb tile"
	case strings.HasPrefix(p, "/sumdb/"):
		return "sumdb other"
	case strings.HasSuffix(p, ".mod"):
		return "mod"
	case strings.HasSuffix(p, ".info"):
		return "info"
	case strings.HasSuffix(p, ".zip"):
		return "zip"
	}
	return "list/latest"
}

// kindWait is what the go command waited on one kind of request: how many,
// their latencies summed, and the wall time during which at least one was
// in flight (what a faster answer of that kind could take off the run).
type kindWait struct {
	n           int
	sum         time.Duration
	busy        time.Duration
	first, last time.Duration // when the first one started and the last one ended, since the recorder's start
	inFlight    int
	since       time.Time
}

// waitRecorder is a reverse proxy in front of the GOPROXY the go command
// uses, timing every request by kind.
type waitRecorder struct {
	url   string
	srv   *http.Server
	mu    sync.Mutex
	start time.Time
	kinds map[string]*kindWait
	trace []traced // every request, when tracing (-trace)
}

// traced is one request the go command made: when it started and ended,
// since the recorder's start, what it asked for, and how it was answered.
type traced struct {
	start, end  time.Duration
	path        string
	status      int
	cacheStatus string
}

func newWaitRecorder(target string) *waitRecorder {
	u, err := url.Parse(target)
	must(err)
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }}
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	wr := &waitRecorder{kinds: map[string]*kindWait{}, start: time.Now()}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	wr.url = "http://" + l.Addr().String()
	wr.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind := kindOf(r.URL.Path)
		start := wr.begin(kind)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(sw, r)
		wr.end(kind, start)
		if *traceFile != "" {
			wr.mu.Lock()
			wr.trace = append(wr.trace, traced{start: start.Sub(wr.start), end: time.Since(wr.start), path: r.URL.Path, status: sw.status, cacheStatus: w.Header().Get("Cache-Status")})
			wr.mu.Unlock()
		}
	})}
	go wr.srv.Serve(l)
	return wr
}

func (wr *waitRecorder) begin(kind string) time.Time {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	now := time.Now()
	for _, k := range []string{kind, "all"} {
		kw := wr.kinds[k]
		if kw == nil {
			kw = &kindWait{first: now.Sub(wr.start)}
			wr.kinds[k] = kw
		}
		if kw.inFlight == 0 {
			kw.since = now
		}
		kw.inFlight++
	}
	return now
}

func (wr *waitRecorder) end(kind string, start time.Time) {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	now := time.Now()
	for _, k := range []string{kind, "all"} {
		kw := wr.kinds[k]
		kw.n++
		kw.sum += now.Sub(start)
		kw.last = now.Sub(wr.start)
		kw.inFlight--
		if kw.inFlight == 0 {
			kw.busy += now.Sub(kw.since)
		}
	}
}

// snapshot returns the waits so far (of requests that ended) and starts
// counting afresh.
func (wr *waitRecorder) snapshot() map[string]kindWait {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	out := map[string]kindWait{}
	for k, kw := range wr.kinds {
		out[k] = *kw
		kw.n, kw.sum, kw.busy = 0, 0, 0
	}
	return out
}

func (wr *waitRecorder) close() { wr.srv.Close() }

// statusWriter notes the status a response was sent with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (sw *statusWriter) WriteHeader(code int) {
	sw.status = code
	sw.ResponseWriter.WriteHeader(code)
}

// writeTrace writes the requests recorded so far to name, one a line in
// the order they started: start and end (seconds from the recorder's
// start), status, the mirror's Cache-Status, path.
func (wr *waitRecorder) writeTrace(name string) error {
	wr.mu.Lock()
	tr := slices.Clone(wr.trace)
	wr.mu.Unlock()
	slices.SortFunc(tr, func(a, b traced) int { return int(a.start - b.start) })
	var b strings.Builder
	for _, t := range tr {
		fmt.Fprintf(&b, "%.3f %.3f %d %q %s\n", t.start.Seconds(), t.end.Seconds(), t.status, t.cacheStatus, t.path)
	}
	return os.WriteFile(name, []byte(b.String()), 0o644)
}

// printWaits prints, for each graph, what the go command's `go mod
// download` waited on by kind of request, direct, cold and warm.
func printWaits(w io.Writer, rows []row) {
	for _, r := range rows {
		if r.waits[0] == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: what `go mod download` waited on (requests; latency summed; wall time with one in flight; first started-last ended, from the start):\n", r.name)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "kind\tdirect\tcold\twarm\t")
		for _, k := range waitKinds {
			if slices.IndexFunc(r.waits[:], func(m map[string]kindWait) bool { return m[k].n > 0 }) < 0 {
				continue
			}
			fmt.Fprintf(tw, "%s\t", k)
			for _, m := range r.waits {
				kw := m[k]
				fmt.Fprintf(tw, "%d; %.1fs; %.1fs; %.0f-%.0fs\t", kw.n, kw.sum.Seconds(), kw.busy.Seconds(), kw.first.Seconds(), kw.last.Seconds())
			}
			fmt.Fprintln(tw)
		}
		tw.Flush()
	}
}
