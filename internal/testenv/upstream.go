package testenv

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
)

// Upstream is a GOPROXY server on loopback that serves fixture modules and
// counts every request it gets, by escaped path.
type Upstream struct {
	URL string
	TLS *tls.Config // trusts the server's certificate, for an https upstream

	srv     *httptest.Server
	failure atomic.Int32 // status to answer everything with; 0: serve
	delay   atomic.Int64 // nanoseconds to wait before answering
	total   atomic.Int64

	inFlight, maxInFlight atomic.Int64
	arrived               chan struct{} // signalled on every request

	mu        sync.Mutex
	modules   map[string]map[string]Module // path -> version -> module
	bigZips   map[string]string            // escaped zip path -> file
	overrides map[string]http.HandlerFunc  // escaped path -> handler
	sumdbs    map[string]http.Handler      // name -> proxy to the database
	attached  []*SumDB                     // know every module served
	counts    map[string]int
	paths     []string
}

// NewUpstream starts an upstream serving mods.
func NewUpstream(t testing.TB, mods ...Module) *Upstream {
	t.Helper()
	return newUpstream(t, httptest.NewServer, mods)
}

// NewTLSUpstream starts an upstream serving mods over https, with a
// certificate that TLS (a client config) trusts.
func NewTLSUpstream(t testing.TB, mods ...Module) *Upstream {
	t.Helper()
	u := newUpstream(t, httptest.NewTLSServer, mods)
	u.TLS = u.srv.Client().Transport.(*http.Transport).TLSClientConfig
	return u
}

func newUpstream(t testing.TB, start func(http.Handler) *httptest.Server, mods []Module) *Upstream {
	u := &Upstream{
		modules:   map[string]map[string]Module{},
		bigZips:   map[string]string{},
		overrides: map[string]http.HandlerFunc{},
		sumdbs:    map[string]http.Handler{},
		arrived:   make(chan struct{}, 1),
		counts:    map[string]int{},
	}
	for _, m := range mods {
		u.Add(m)
	}
	u.srv = start(http.HandlerFunc(u.serve))
	u.URL = u.srv.URL
	t.Cleanup(u.srv.Close)
	return u
}

// Add serves one more module version.
func (u *Upstream) Add(m Module) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.modules[m.Path] == nil {
		u.modules[m.Path] = map[string]Module{}
	}
	u.modules[m.Path][m.Version] = m
	for _, db := range u.attached {
		db.Add(m)
	}
}

// AddBigZip serves m with its zip read from the file zipPath.
func (u *Upstream) AddBigZip(m Module, zipPath string) {
	u.Add(m)
	u.mu.Lock()
	u.bigZips[EscapedPath(m.Path, m.Version, "zip")] = zipPath
	for _, db := range u.attached {
		db.AddZip(m, zipPath)
	}
	u.mu.Unlock()
}

// ZipFile is the file a big zip (AddBigZip) is served from.
func (u *Upstream) ZipFile(path string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.bigZips[path]
}

// Override answers requests for one escaped path with h.
func (u *Upstream) Override(path string, h http.HandlerFunc) {
	u.mu.Lock()
	u.overrides[path] = h
	u.mu.Unlock()
}

// ProxySumDB serves the checksum database under /sumdb/<name>/, as
// proxy.golang.org serves sum.golang.org, and makes it know every module
// this upstream serves, now and later.
func (u *Upstream) ProxySumDB(db *SumDB) {
	target, err := url.Parse(db.URL)
	if err != nil {
		panic(err)
	}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(target)
		r.Out.URL.Path = strings.TrimPrefix(r.In.URL.Path, "/sumdb/"+db.Name)
		r.Out.URL.RawPath = ""
	}}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sumdbs[db.Name] = rp
	u.attached = append(u.attached, db)
	for _, versions := range u.modules {
		for _, m := range versions {
			db.Add(m)
		}
	}
	for p, file := range u.bigZips {
		if m, ok := u.bigZipModule(p); ok {
			db.AddZip(m, file)
		}
	}
}

// bigZipModule finds the module of a big zip's escaped path; u.mu is held.
func (u *Upstream) bigZipModule(p string) (Module, bool) {
	for _, versions := range u.modules {
		for _, m := range versions {
			if EscapedPath(m.Path, m.Version, "zip") == p {
				return m, true
			}
		}
	}
	return Module{}, false
}

// VerifiedBy starts a checksum database that knows every module this
// upstream serves and proxies it, so that a proxy in front of this
// upstream verifies through it as it would through proxy.golang.org. It
// returns the database; its VKey is what a sumdb setting takes.
func (u *Upstream) VerifiedBy(t testing.TB) *SumDB {
	t.Helper()
	name := "sum." + strings.ToLower(strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())) + ".test"
	db := NewSumDB(t, name)
	u.ProxySumDB(db)
	return db
}

// SetFailure makes every request answer status; 0 restores normal service.
func (u *Upstream) SetFailure(status int) { u.failure.Store(int32(status)) }

// SetDelay delays every answer by d.
func (u *Upstream) SetDelay(d time.Duration) { u.delay.Store(int64(d)) }

// Requests is how many requests came for one escaped path.
func (u *Upstream) Requests(path string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[path]
}

// WaitTotal waits until the upstream has had n requests in all; it fails
// the test after a minute.
func (u *Upstream) WaitTotal(t testing.TB, n int) {
	t.Helper()
	timeout := time.After(time.Minute)
	for u.Total() < n {
		select {
		case <-u.arrived:
		case <-timeout:
			t.Fatalf("the upstream had %d requests; waited for %d", u.Total(), n)
		}
	}
}

// Arrived is signalled when a request arrives (a signal may stand for
// several).
func (u *Upstream) Arrived() <-chan struct{} { return u.arrived }

// Close stops the upstream: connections are refused from now on, as for a
// host that is down.
func (u *Upstream) Close() { u.srv.Close() }

// InFlight is how many requests the upstream is answering now.
func (u *Upstream) InFlight() int { return int(u.inFlight.Load()) }

// MaxInFlight is the most requests the upstream was answering at once.
func (u *Upstream) MaxInFlight() int { return int(u.maxInFlight.Load()) }

// Total is how many requests came in all.
func (u *Upstream) Total() int { return int(u.total.Load()) }

// Paths lists every requested path, in order.
func (u *Upstream) Paths() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.paths)
}

// EscapedPath is the protocol path of a module artifact, without leading slash.
func EscapedPath(mod, version, kind string) string {
	em, err := module.EscapePath(mod)
	if err != nil {
		panic(err)
	}
	switch kind {
	case "list":
		return em + "/@v/list"
	case "latest":
		return em + "/@latest"
	}
	ev, err := module.EscapeVersion(version)
	if err != nil {
		panic(err)
	}
	return em + "/@v/" + ev + "." + kind
}

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.EscapedPath(), "/")
	u.total.Add(1)
	n := u.inFlight.Add(1)
	defer u.inFlight.Add(-1)
	select {
	case u.arrived <- struct{}{}:
	default:
	}
	for m := u.maxInFlight.Load(); n > m && !u.maxInFlight.CompareAndSwap(m, n); m = u.maxInFlight.Load() {
	}
	u.mu.Lock()
	u.counts[p]++
	u.paths = append(u.paths, p)
	override := u.overrides[p]
	u.mu.Unlock()
	if d := time.Duration(u.delay.Load()); d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	if status := int(u.failure.Load()); status != 0 {
		http.Error(w, "injected failure", status)
		return
	}
	if override != nil {
		override(w, r)
		return
	}
	if rest, ok := strings.CutPrefix(p, "sumdb/"); ok {
		name, _, _ := strings.Cut(rest, "/")
		u.mu.Lock()
		db := u.sumdbs[name]
		u.mu.Unlock()
		switch {
		case db == nil:
			http.Error(w, "not found: no checksum database "+name, http.StatusNotFound)
		case strings.HasSuffix(p, "/supported"): // the proxy's own answer
			w.WriteHeader(http.StatusOK)
		default:
			db.ServeHTTP(w, r)
		}
		return
	}
	u.serveModule(w, r, p)
}

func (u *Upstream) serveModule(w http.ResponseWriter, r *http.Request, p string) {
	notFound := func(what string) { http.Error(w, "not found: "+what, http.StatusNotFound) }
	if esc, ok := strings.CutSuffix(p, "/@latest"); ok {
		mod, err := module.UnescapePath(esc)
		if err != nil {
			notFound(esc)
			return
		}
		vs := u.versions(mod)
		if len(vs) == 0 {
			notFound(mod + "@latest")
			return
		}
		w.Write(u.module(mod, vs[len(vs)-1]).Info())
		return
	}
	esc, rest, ok := strings.Cut(p, "/@v/")
	mod, err := module.UnescapePath(esc)
	if !ok || err != nil {
		notFound(p)
		return
	}
	if rest == "list" {
		vs := u.versions(mod)
		if len(vs) == 0 && u.modules[mod] == nil {
			notFound(mod)
			return
		}
		for _, v := range vs {
			fmt.Fprintln(w, v)
		}
		return
	}
	dot := strings.LastIndexByte(rest, '.')
	if dot < 0 {
		notFound(p)
		return
	}
	v, err := module.UnescapeVersion(rest[:dot])
	if err != nil {
		notFound(p)
		return
	}
	m, ok := u.lookup(mod, v)
	if !ok {
		notFound(mod + "@" + v + ": unknown revision " + v)
		return
	}
	switch rest[dot+1:] {
	case "info":
		w.Header().Set("Content-Type", "application/json")
		w.Write(m.Info())
	case "mod":
		w.Write(m.Mod())
	case "zip":
		u.mu.Lock()
		file := u.bigZips[p]
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/zip")
		if file != "" {
			http.ServeFile(w, r, file)
			return
		}
		var buf bytes.Buffer
		if err := m.WriteZip(&buf); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(buf.Bytes()))
	default:
		notFound(p)
	}
}

func (u *Upstream) versions(mod string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var vs []string
	for v := range u.modules[mod] {
		vs = append(vs, v)
	}
	semver.Sort(vs)
	return vs
}

func (u *Upstream) module(mod, v string) Module {
	m, _ := u.lookup(mod, v)
	return m
}

// lookup finds a version; a query that is not a version ("main") resolves
// to the newest version, as a branch head would.
func (u *Upstream) lookup(mod, v string) (Module, bool) {
	u.mu.Lock()
	m, ok := u.modules[mod][v]
	u.mu.Unlock()
	if ok || semver.IsValid(v) {
		return m, ok
	}
	if v == "main" {
		if vs := u.versions(mod); len(vs) > 0 {
			return u.module(mod, vs[len(vs)-1]), true
		}
	}
	return Module{}, false
}
