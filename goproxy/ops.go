package goproxy

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/module"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/httperr"
)

// Operators' endpoints, each answered only when configured: /healthz and
// /readyz (Options.Health), a status page (Options.StatusPath) and a
// catalog of what the mirror holds (Options.Catalog). None of these paths
// can be a module path: module paths begin with a dotted host.

// serveOps answers an operators' endpoint and reports whether path was one.
func (p *Proxy) serveOps(w http.ResponseWriter, r *http.Request, who Subject) bool {
	path := r.URL.Path
	if acc := p.cfg.access; acc != nil &&
		(p.cfg.StatusPath != "" && path == p.cfg.StatusPath || p.cfg.Catalog && path == "/catalog") {
		allowed := who.matchesAny(acc.Operator)
		if !allowed {
			acc.auditOperator(r, who, path, false, acc.deny(w, who, "the operators' pages"))
			return true
		}
		acc.auditOperator(r, who, path, true, http.StatusOK)
	}
	switch {
	case p.cfg.Health && path == "/healthz":
		w.Header().Set("Cache-Control", "no-store")
		writeText(w, http.StatusOK, "ok")
	case p.cfg.Health && path == "/readyz":
		w.Header().Set("Cache-Control", "no-store")
		if err := p.Ready(r.Context()); err != nil {
			writeText(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
			return true
		}
		writeText(w, http.StatusOK, "ready")
	case p.cfg.StatusPath != "" && path == p.cfg.StatusPath:
		p.serveStatus(w, r)
	case p.cfg.Catalog && path == "/catalog":
		p.serveCatalog(w, r)
	default:
		return false
	}
	return true
}

func writeText(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintln(w, strings.ReplaceAll(msg, "\n", " "))
}

// Ready reports whether the proxy can serve and store: every tier works
// (disk writable, Redis reachable), and, when verification is on, the
// checksum database can be reached.
func (p *Proxy) Ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	// The reason is told to whoever asks: one line, no paths or hosts.
	if err := p.cfg.Tiers.Check(ctx); err != nil {
		return errors.New(fetcher.ClientText(err.Error()))
	}
	if db := p.cfg.SumDB; db != nil {
		if err := db.Ready(ctx); err != nil {
			msg := err.Error()
			if he, ok := httperr.As(err); ok {
				msg = he.Msg
			}
			return fmt.Errorf("checksum database %s: %s", db.Name(), fetcher.ClientText(msg, db.Name()))
		}
	}
	return nil
}

// Status is what the status page shows, also served as JSON.
type Status struct {
	Uptime   time.Duration    `json:"uptime_ns"`
	Requests int64            `json:"requests"`
	Hits     map[string]int64 `json:"hits"` // by tier
	Misses   int64            `json:"misses"`
	HitRatio float64          `json:"hit_ratio"` // of the modules' requests
	// SumDB is the checksum database's traffic through /sumdb/, apart:
	// records and tiles answered from the cache, and fetched.
	SumDB           SumDBTraffic  `json:"sumdb"`
	Tiers           []TierStatus  `json:"tiers"`
	FetchesInFlight int           `json:"fetches_in_flight"`
	SpoolBytes      int64         `json:"spool_bytes"`
	RecentFetches   []FetchRecord `json:"recent_fetches"`
	TopModules      []ModuleCount `json:"top_modules"`
	Verification    Verification  `json:"verification"`
	Fleet           *FleetStatus  `json:"fleet,omitempty"`
	PerMinute       []int64       `json:"requests_per_minute"` // the last 60 minutes, oldest first
	Prefetch        PrefetchStats `json:"prefetch"`
	// Vulnerable are the cached versions that the vulnerability
	// database's entries affect (with a vulndb), and others asked for,
	// with how often each was served and refused.
	Vulnerable []VulnerableVersion `json:"vulnerable,omitempty"`
}

// SumDBTraffic counts the checksum database requests of clients.
type SumDBTraffic struct {
	Hits   int64 `json:"hits"`
	Misses int64 `json:"misses"`
}

// TierStatus is one tier's occupancy against its bound.
type TierStatus struct {
	Name    string `json:"name"`
	Objects int64  `json:"objects"` // -1: unknown
	Bytes   int64  `json:"bytes"`
	Bound   int64  `json:"bound"` // 0: none
}

// Verification says what verifies fetched modules.
type Verification struct {
	SumDB      string           `json:"sumdb,omitempty"` // "" when off
	Route      string           `json:"route,omitempty"` // upstream, direct, configured, or "" before the first probe
	URL        string           `json:"url,omitempty"`
	Failures   int64            `json:"failures"` // modules the database contradicted
	Unverified map[string]int64 `json:"unverified,omitempty"`
}

// FleetStatus is the state of the Redis shared by the fleet.
type FleetStatus struct {
	Available bool `json:"available"`
}

// Status returns the figures of the status page.
func (p *Proxy) Status() Status {
	hits, top, recent, perMin := p.stats.snapshot()
	st := Status{
		Uptime:        time.Since(p.stats.started).Round(time.Second),
		Requests:      p.stats.requests.Load(),
		Hits:          hits,
		Misses:        p.stats.misses.Load(),
		SumDB:         SumDBTraffic{Hits: p.stats.sumdbHits.Load(), Misses: p.stats.sumdbMisses.Load()},
		RecentFetches: recent,
		TopModules:    top,
		PerMinute:     perMin,
		Prefetch:      p.PrefetchStats(),
		Vulnerable:    p.vulnerableVersions(context.Background()),
	}
	var hitSum int64
	for _, n := range hits {
		hitSum += n
	}
	if total := hitSum + st.Misses; total > 0 {
		st.HitRatio = float64(hitSum) / float64(total)
	}
	for _, t := range p.cfg.Tiers.Tiers() {
		ts := TierStatus{Name: t.Name(), Objects: -1}
		if u, ok := t.(cachetier.UsageReporter); ok {
			ts.Objects, ts.Bytes = u.Usage()
		}
		if b, ok := t.(cachetier.Bounded); ok {
			ts.Bound = b.Bound()
		}
		st.Tiers = append(st.Tiers, ts)
	}
	p.mu.Lock()
	st.FetchesInFlight = len(p.fetches)
	p.mu.Unlock()
	st.SpoolBytes, _ = p.Spooling()
	st.Verification.Failures = p.VerifyFailures()
	st.Verification.Unverified = p.stats.unverifiedCounts()
	if db := p.cfg.SumDB; db != nil {
		st.Verification.SumDB, st.Verification.Route, st.Verification.URL = db.Name(), db.Route(), fetcher.RedactURL(db.URL())
	}
	if p.cfg.Fleet != nil {
		st.Fleet = &FleetStatus{Available: p.cfg.Fleet.Available()}
	}
	return st
}

//go:embed status.html
var statusHTML string

var statusPage = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes":   humanBytes,
	"percent": func(f float64) string { return strconv.FormatFloat(100*f, 'f', 1, 64) + "%" },
	"dur":     func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"bars":    hitBars,
	"spark":   sparkline,
	"peak":    peakOf,
}).Parse(statusHTML))

// serveStatus renders the status page, or its JSON for ?format=json or
// an Accept of application/json.
func (p *Proxy) serveStatus(w http.ResponseWriter, r *http.Request) {
	st := p.Status()
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	if err := statusPage.Execute(w, st); err != nil {
		p.log.Warn("rendering the status page failed: " + err.Error())
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return strconv.FormatFloat(float64(n)/float64(div), 'f', 1, 64) + " " + "KMGTPE"[exp:exp+1] + "iB"
}

// bar is one bar of the hits chart.
type bar struct {
	Label          string
	Value          int64
	X, Y, W, H     int
	LabelX, LabelY int
}

// hitBars lays out a bar chart of hits per tier and misses, 400×160.
func hitBars(st Status) []bar {
	type kv struct {
		k string
		v int64
	}
	var items []kv
	for _, t := range st.Tiers {
		items = append(items, kv{t.Name, st.Hits[t.Name]})
	}
	items = append(items, kv{"miss", st.Misses})
	var top int64 = 1
	for _, it := range items {
		top = max(top, it.v)
	}
	var bars []bar
	w := 360 / len(items)
	for i, it := range items {
		h := int(120 * it.v / top)
		x := 20 + i*w
		bars = append(bars, bar{Label: it.k, Value: it.v, X: x + 4, Y: 130 - h, W: w - 8, H: h, LabelX: x + w/2, LabelY: 150})
	}
	return bars
}

// sparkline is the points of the requests-per-minute polyline: x from 40
// (60 minutes ago) to 390 (now), y from 65 (none) to 15 (the peak,
// peakOf).
func sparkline(perMin []int64) string {
	top := peakOf(perMin)
	var b strings.Builder
	for i, n := range perMin {
		fmt.Fprintf(&b, "%d,%d ", 40+i*350/max(len(perMin)-1, 1), 65-int(50*n/top))
	}
	return strings.TrimSpace(b.String())
}

// peakOf is the chart's scale: the most requests in a minute, at least 1.
func peakOf(perMin []int64) int64 {
	var top int64 = 1
	for _, n := range perMin {
		top = max(top, n)
	}
	return top
}

// The catalog of what the mirror holds, in the format of Athens' /catalog:
// {"modules":[{"module":...,"version":...}],"next":"<token>"}, paged with
// ?token= and ?pagesize= (at most 1000).
const maxCatalogPage = 1000

// catalogScan bounds the objects a catalog page examines, per entry.
const catalogScan = 2

// CatalogEntry is one module version the mirror holds.
type CatalogEntry struct {
	Module  string `json:"module"`
	Version string `json:"version"`
}

type catalogPage struct {
	Modules []CatalogEntry `json:"modules"`
	Next    string         `json:"next"`
}

func (p *Proxy) serveCatalog(w http.ResponseWriter, r *http.Request) {
	size := maxCatalogPage
	if s := r.URL.Query().Get("pagesize"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeText(w, http.StatusBadRequest, "pagesize: want a positive number")
			return
		}
		size = min(n, maxCatalogPage)
	}
	page, err := p.Catalog(r.Context(), r.URL.Query().Get("token"), size)
	if errors.Is(err, cachetier.ErrBadToken) {
		writeText(w, http.StatusBadRequest, "token: not one this catalog gave")
		return
	}
	if err != nil {
		writeText(w, http.StatusInternalServerError, "listing the cache failed")
		p.log.Warn("catalog: " + err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(page)
}

// servable reports whether the tier of record holds both the .mod and the
// .zip of the version whose keys start with base (".../@v/<version>"): a
// mirror warmed from the catalog must be able to fetch every version it
// lists (one whose zip the upstream refused has its .info alone). A store
// that cannot say lists every version it holds the .info of.
func (p *Proxy) servable(ctx context.Context, base string) bool {
	for _, ext := range []string{".mod", ".zip"} {
		held, ok, err := p.cfg.Tiers.Holds(ctx, base+ext)
		if ok && (err != nil || !held) {
			return false
		}
	}
	return true
}

// Catalog lists up to size module versions the mirror can serve (those
// whose .info, .mod and .zip are in the tier of record), after token.
func (p *Proxy) Catalog(ctx context.Context, token string, size int) (catalogPage, error) {
	page := catalogPage{Modules: []CatalogEntry{}}
	prefix := p.cfg.namespace + "/"
	// A page examines at most catalogScan objects per entry asked for:
	// one request costs bounded work, and a page may come out short (or
	// empty) with a next token, which Athens' clients follow.
	for budget := catalogScan * size; len(page.Modules) < size && budget > 0; {
		n := min(size-len(page.Modules), budget)
		budget -= n
		keys, next, err := p.cfg.Tiers.List(ctx, token, n)
		if err != nil {
			return page, err
		}
		for _, k := range keys {
			rest, ok := strings.CutPrefix(k, prefix)
			if !ok {
				continue
			}
			escMod, file, ok := strings.Cut(rest, "/@v/")
			escVer, ok2 := strings.CutSuffix(file, ".info")
			if !ok || !ok2 {
				continue
			}
			mod, err1 := module.UnescapePath(escMod)
			ver, err2 := module.UnescapeVersion(escVer)
			if err1 == nil && err2 == nil && module.CanonicalVersion(ver) == ver && (p.cfg.CatalogPrivate || !p.private(mod)) &&
				p.servable(ctx, prefix+escMod+"/@v/"+escVer) {
				page.Modules = append(page.Modules, CatalogEntry{Module: mod, Version: ver})
			}
		}
		token = next
		if next == "" {
			break
		}
	}
	page.Next = token
	return page, nil
}
