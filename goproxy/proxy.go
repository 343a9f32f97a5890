// Package goproxy is the protocol core: it answers GOPROXY requests from the
// cache tiers, collapses concurrent misses into one fetch, checks what it
// fetched and writes it through the tiers. It is a plain http.Handler and
// knows nothing about Caddy.
package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/httperr"
	"github.com/piraeus-go/piraeus/vulndb"
)

// config is the assembled state of a Proxy (see Options and New).
type config struct {
	Fetcher fetcher.Fetcher
	Tiers   Cache

	ListTTL     time.Duration
	NotFoundTTL time.Duration
	// NotFoundVersionTTL applies to a named version's artifacts.
	NotFoundVersionTTL time.Duration
	FetchTimeout       time.Duration
	MaxFetches         int
	SpoolMax           int64

	// SumDBs are the checksum databases proxied under /sumdb/<name>/.
	SumDBs []*checksumdb.DB
	// Verifier, if set, must vouch for every fetched .mod and .zip of a
	// module not matched by NoVerify before it is stored or served; it is
	// SumDB, whose route and readiness the status page and /readyz show.
	Verifier Verifier
	SumDB    *checksumdb.DB
	NoVerify artifact.Patterns
	// Private modules are never looked up in a checksum database, not
	// even when a client asks; Fetcher routes them to their own sources.
	Private artifact.Patterns

	Modes []ModeRule
	// RedirectBase is the upstream proxy URL that redirect mode sends
	// clients to; without it, redirect mode behaves as sync.
	RedirectBase string
	// Zips of at least RedirectLarge bytes in an object store are served
	// by pre-signed URLs (see Options.RedirectLarge).
	RedirectLarge   int64
	RedirectPrivate bool
	RedirectTTL     time.Duration

	Metrics *Metrics
	Fleet   Fleet
	Logger  *zap.Logger

	Health         bool          // answer /healthz and /readyz
	StatusPath     string        // where the status page is; "" for none
	Catalog        bool          // answer /catalog
	CatalogPrivate bool          // with private modules
	access         *accessPolicy // who may read which module; nil: no checks
	policy         policy        // versions held back
	cooldown       []cooldownRule
	vulndb         *vulndb.DB // mirrored under /vuln/; nil for none
	denyVulnerable bool
	// denyVulnerablePatterns limit DenyVulnerable (all modules if empty).
	denyVulnerablePatterns artifact.Patterns

	client    *http.Client // of upstream proxies and checksum databases
	notFound  *httperr.NotFoundCache
	namespace string
}

// Proxy serves the GOPROXY protocol.
type Proxy struct {
	cfg     config
	log     *zap.Logger
	flights singleflight.Group // checksum database reads

	mu         sync.Mutex
	fetches    map[string]*flight // artifact fetches in progress
	running    int                // fetches whose goroutine has not ended
	closed     bool               // no fetch starts any more
	idle       chan struct{}      // closed when closed and running is 0
	stop       context.Context    // the fetches' parent, cancelled by Close
	cancel     context.CancelFunc
	closeOnce  sync.Once
	fetchSlots chan struct{} // one per upstream fetch running
	budget     *byteBudget   // bytes of bodies being spooled
	sumdbs     map[string]*checksumdb.DB
	stats      *stats
	obs        *reporter   // what every stage reports to: metrics, stats, log
	prefetch   *prefetcher // nil when off
	vulnCache  vulnerableCache
}

// Spooling reports the bytes of fetched bodies reserved now, and how many
// fetches wait for the budget.
func (p *Proxy) Spooling() (bytes int64, waiting int) {
	return p.budget.used.Load(), int(p.budget.waiting.Load())
}

// VerifyFailures counts fetched modules rejected by the checksum database.
func (p *Proxy) VerifyFailures() int64 { return p.obs.verifyFailures.Load() }

func newProxy(cfg config) *Proxy {
	p := &Proxy{cfg: cfg, log: cfg.Logger, sumdbs: map[string]*checksumdb.DB{}, fetches: map[string]*flight{},
		fetchSlots: make(chan struct{}, cfg.MaxFetches), budget: newByteBudget(cfg.SpoolMax), stats: newStats(),
		idle: make(chan struct{})}
	p.obs = &reporter{metrics: cfg.Metrics, stats: p.stats, log: cfg.Logger}
	p.stop, p.cancel = context.WithCancel(context.Background())
	for _, db := range cfg.SumDBs {
		p.sumdbs[db.Name()] = db
	}
	return p
}

// key is the cache key of an artifact.
func (p *Proxy) key(a artifact.Artifact) string { return p.CacheKey(a.Path()) }

// closeGrace bounds how long Close lets the fetches in flight finish
// before it cancels them.
const closeGrace = 10 * time.Second

// Close releases what New opened: the checksum databases, the not-found
// cache, idle upstream connections. The Cache belongs to the caller. No
// fetch starts after it; the fetches in flight (which requests of a
// config being replaced may still wait for) get closeGrace, or the fetch
// timeout if shorter, to finish, and are then cancelled and waited for.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		if p.running == 0 {
			close(p.idle)
		}
		p.mu.Unlock()
		p.prefetch.close()
		grace := time.NewTimer(min(closeGrace, p.cfg.FetchTimeout))
		defer grace.Stop()
		select {
		case <-p.idle:
		case <-grace.C:
			p.log.Warn("fetches still running when the proxy closed; cancelling them")
			p.cancel()
			<-p.idle
		}
		p.cancel()
		for _, db := range p.cfg.SumDBs {
			db.Close()
		}
		p.cfg.notFound.Close()
		p.cfg.client.CloseIdleConnections()
	})
	return nil
}

// ServeHTTP answers GET and HEAD for the GOPROXY protocol paths.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method "+strconv.Quote(r.Method)+" not allowed: use GET or HEAD", 0)
		p.obs.answered("invalid", "method_not_allowed", "")
		return
	}
	acc := p.cfg.access
	var who Subject
	if acc != nil {
		who = acc.Identify(r)
	}
	// A longer cooldown for this request: /cooldown/<age>/<path>.
	if age, rest, ok, err := parseCooldownPrefix(r.URL.Path); ok {
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error(), 0)
			p.obs.answered("invalid", "bad_request", "")
			return
		}
		u := *r.URL
		u.Path, u.RawPath = rest, ""
		r = r.Clone(context.WithValue(r.Context(), cooldownKey{}, age))
		r.URL = &u
	}
	// The cache-only conventions of proxy.golang.org: a path under
	// /cached-only/, or a Disable-Module-Fetch: true header, is answered
	// from the cache alone, a miss with a 404.
	cacheOnly := strings.EqualFold(strings.TrimSpace(r.Header.Get("Disable-Module-Fetch")), "true")
	if rest, ok := strings.CutPrefix(r.URL.Path, cachedOnlyPrefix); ok {
		u := *r.URL
		u.Path = "/" + rest
		u.RawPath = strings.TrimPrefix(u.RawPath, cachedOnlyPrefix[:len(cachedOnlyPrefix)-1])
		r = r.Clone(r.Context())
		r.URL = &u
		cacheOnly = true
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/sumdb/"); ok {
		p.serveSumDB(w, r, rest, who)
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/vuln/"); ok && p.cfg.vulndb != nil {
		if acc != nil && !acc.mayReadAny(who) {
			acc.deny(w, who, "the vulnerability database")
			return
		}
		p.cfg.vulndb.Serve(w, r, rest)
		p.obs.answered("vulndb", "ok", "")
		return
	}
	if !cacheOnly && p.serveOps(w, r, who) {
		return
	}
	if strings.Contains(strings.ToLower(r.URL.RawPath), "%2f") {
		writeError(w, http.StatusBadRequest, "encoded slash in request path", 0)
		p.obs.answered("invalid", "bad_request", "")
		return
	}
	a, err := artifact.Parse(strings.TrimPrefix(r.URL.Path, "/"))
	if err != nil {
		ae, _ := httperr.As(err)
		writeError(w, ae.Status, ae.Msg, 0)
		p.obs.answered("invalid", resultOf(ae.Status), "")
		return
	}
	p.obs.request(a)
	var cache string // how the cache answered (a Cache-Status entry), for the audit log
	if acc != nil {
		d := acc.decide(a.Module, who)
		d.audited = d.audited || p.private(a.Module)
		if !d.allowed {
			acc.audit(r, who, a, a.Kind.String(), d, acc.deny(w, who, a.Module), "")
			p.obs.answered(a.Kind.String(), "denied", "")
			return
		}
		if d.audited && acc.Audit != nil {
			sw := &statusWriter{ResponseWriter: w}
			w = sw
			defer func() { acc.audit(r, who, a, a.Kind.String(), d, sw.status(), cache) }()
		}
	}
	ctx := r.Context()
	if cacheOnly {
		ctx = context.WithValue(ctx, cacheOnlyKey{}, true)
	}
	if a.Immutable() {
		if rule, denied := p.cfg.policy.denies(a.Module, a.Version); denied {
			p.cfg.policy.refusal(w, a.Module, a.Version, rule)
			p.obs.answered(a.Kind.String(), "denied", "")
			return
		}
		if a.Kind == artifact.Zip && p.cfg.denyVulnerable &&
			(p.cfg.denyVulnerablePatterns.Empty() || p.cfg.denyVulnerablePatterns.Match(a.Module)) {
			found, err := p.cfg.vulndb.Affected(ctx, a.Module, a.Version)
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, "the vulnerability database cannot be read now, and deny vulnerable needs it: "+httperr.OneLine(err.Error(), 200), 0)
				p.obs.answered(a.Kind.String(), "error", "")
				return
			}
			if len(found) > 0 {
				p.stats.vulnerable(a, found, false)
				writeError(w, http.StatusForbidden, vulnerableReason(a, found), 0)
				p.obs.answered(a.Kind.String(), "denied", "")
				return
			}
		}
		if age := p.cooldownFor(ctx, a.Module); age > 0 {
			until, young, err := p.held(internal(ctx), a.Module, a.Version)
			if err != nil {
				p.obs.answered(a.Kind.String(), p.writeFetchError(w, r, err, p.notFoundTTL(a)), "")
				return
			}
			if young {
				writeHeld(w, a.Module, a.Version, until, age)
				p.obs.answered(a.Kind.String(), "denied", "")
				return
			}
		}
	}
	// read: what the .mod requires is read into the client's prefetch
	// session.
	var read bool
	if !cacheOnly { // a client of the cache alone sends nothing upstream
		var early bool
		if early, read = p.prefetch.clientAsked(a, r.RemoteAddr); early {
			ctx = withEarlyLookup(ctx)
		}
	}
	ans, err := p.Get(ctx, a)
	if !cacheOnly {
		p.prefetch.clientGot(a, r.RemoteAddr, read, ans.Object, err)
	}
	cache = ans.CacheStatus
	if ans.CacheStatus != "" {
		w.Header().Set("Cache-Status", ans.CacheStatus)
	}
	if err != nil {
		p.obs.answered(a.Kind.String(), p.writeFetchError(w, r, err, p.notFoundTTL(a)), "")
		return
	}
	if ans.Redirect != "" {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, ans.Redirect, http.StatusFound)
		p.obs.answered(a.Kind.String(), "redirect", "")
		return
	}
	obj, stale := ans.Object, ans.Stale
	defer obj.Close()
	gated, ok := p.gateAnswer(ctx, w, r, a, obj)
	if !ok {
		p.obs.answered(a.Kind.String(), "denied", "")
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.Kind.ContentType())
	if gated != nil {
		h.Set("ETag", cachetier.MetaFor(gated, time.Time{}).ETag())
	} else {
		h.Set("ETag", obj.ETag())
	}
	result := "ok"
	switch {
	case a.Immutable():
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	case stale:
		h.Set("Cache-Control", "no-cache")
		result = "stale"
	default:
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(p.cfg.ListTTL/time.Second)))
	}
	p.obs.answered(a.Kind.String(), result, a.Module)
	cw := &countingWriter{ResponseWriter: w}
	var body io.ReadSeeker = obj.Reader()
	if gated != nil {
		body = bytes.NewReader(gated)
	}
	http.ServeContent(cw, r, "", time.Time{}, body)
	p.obs.served(a, cw.n)
	if a.Kind == artifact.Zip && p.cfg.vulndb != nil && r.Method == http.MethodGet {
		if found := p.cfg.vulndb.AffectedKnown(a.Module, a.Version); len(found) > 0 {
			p.stats.vulnerable(a, found, true)
		}
	}
}

// statusWriter records the status of an answer, for the audit log.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// ReadFrom keeps the ResponseWriter's own ReadFrom (sendfile) in use.
func (s *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	if rf, ok := s.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(s.ResponseWriter, r)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusWriter) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// countingWriter counts body bytes for the served-bytes metric.
type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

// ReadFrom keeps the ResponseWriter's own ReadFrom in use, given the
// cache file itself where that lets it send with sendfile(2).
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	var err error
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(cachetier.SendfileSource(r))
	} else {
		n, err = io.Copy(c.ResponseWriter, r)
	}
	c.n += n
	return n, err
}

// writeFetchError answers a failed lookup and returns its metrics result;
// a not-found answer may be kept by clients for notFoundMaxAge.
func (p *Proxy) writeFetchError(w http.ResponseWriter, r *http.Request, err error, notFoundMaxAge time.Duration) string {
	if r.Context().Err() != nil {
		return "canceled" // the client is gone; nobody reads an answer
	}
	if fe, ok := httperr.As(err); ok {
		var maxAge time.Duration
		if httperr.IsNotFound(fe) {
			maxAge = notFoundMaxAge
		}
		writeError(w, fe.Status, fe.Msg, maxAge)
		return resultOf(fe.Status)
	}
	p.log.Error("serving request failed", zap.String("path", r.URL.Path), zap.Error(err))
	writeError(w, http.StatusInternalServerError, "internal error", 0)
	return "error"
}

func resultOf(status int) string {
	switch {
	case status == http.StatusNotFound || status == http.StatusGone:
		return "not_found"
	case status == http.StatusBadRequest:
		return "bad_request"
	case status == http.StatusForbidden:
		return "forbidden"
	case status < 400:
		return "ok"
	}
	return "error"
}

// Answer is what Get found for an artifact: an object to serve, or where
// to send the client instead (the upstream, in redirect mode; a
// pre-signed URL of a large zip in the object store).
type Answer struct {
	*cachetier.Object // nil for a redirect; the caller closes it
	// Stale is set when an expired list or @latest is served because the
	// upstream failed.
	Stale bool
	// Redirect is the URL to send the client to.
	Redirect string
	// CacheStatus is how the cache handled the request, as an RFC 9211
	// Cache-Status entry ("Piraeus; hit; detail=disk", "Piraeus;
	// fwd=miss; fwd-status=200; stored"); it is set with an error too.
	CacheStatus string
}

// cacheStatus is a Cache-Status entry of this cache with params.
func cacheStatus(params string) string { return "Piraeus; " + params }

// freshHits holds the Cache-Status of a fresh hit per tier name, so that
// a hit builds no string.
var freshHits sync.Map // tier name -> string

// cachedOnlyPrefix is proxy.golang.org's path prefix for answers from the
// cache alone.
const cachedOnlyPrefix = "/cached-only/"

// cacheOnlyKey marks a request context whose artifact must come from the
// cache alone (Disable-Module-Fetch, /cached-only/).
type cacheOnlyKey struct{}

func isCacheOnly(ctx context.Context) bool {
	v, _ := ctx.Value(cacheOnlyKey{}).(bool)
	return v
}

// hitStatus is the Cache-Status of an object served from a tier; a stale
// one says by how long (a negative ttl).
func hitStatus(obj *cachetier.Object, now time.Time) string {
	if !obj.Expires.IsZero() && !obj.Fresh(now) {
		return cacheStatus(fmt.Sprintf("hit; ttl=%d; detail=%s", -int64(now.Sub(obj.Expires)/time.Second)-1, obj.Tier))
	}
	if st, ok := freshHits.Load(obj.Tier); ok {
		return st.(string)
	}
	st, _ := freshHits.LoadOrStore(obj.Tier, cacheStatus("hit; detail="+obj.Tier))
	return st.(string)
}

// fwdStatus is the Cache-Status of an answer fetched upstream: fwd is why
// it was ("miss", or "stale" for an expired list or @latest).
func fwdStatus(fwd string, obj *cachetier.Object, err error) string {
	if err != nil {
		status := http.StatusBadGateway
		if fe, ok := httperr.As(err); ok {
			status = fe.Status
		}
		return cacheStatus(fmt.Sprintf("fwd=%s; fwd-status=%d", fwd, status))
	}
	st := "fwd=" + fwd + "; fwd-status=200"
	if obj.Tier != cachetier.SpoolTier { // an answer that could not be stored
		st += "; stored"
	}
	return cacheStatus(st)
}

// Get returns the artifact from the cache or, on a miss, from upstream.
func (p *Proxy) Get(ctx context.Context, a artifact.Artifact) (Answer, error) {
	key := p.key(a)
	p.prefetch.requested(a, key)
	if a.Kind == artifact.Zip && p.cfg.RedirectLarge > 0 && (p.cfg.RedirectPrivate || !p.private(a.Module)) {
		if url, err := p.cfg.Tiers.Presign(ctx, key, p.cfg.RedirectLarge, p.cfg.RedirectTTL); err == nil {
			p.obs.hit("presigned", isClient(ctx))
			return Answer{Redirect: url, CacheStatus: cacheStatus("hit; detail=presigned")}, nil
		}
	}
	var old *cachetier.Object
	now := time.Now()
	if obj, err := p.cfg.Tiers.Get(ctx, key, p.checkShared(a)); err == nil {
		if obj.Fresh(now) {
			p.obs.hit(obj.Tier, isClient(ctx))
			return Answer{Object: obj, CacheStatus: hitStatus(obj, now)}, nil
		}
		old = obj
	}
	p.obs.miss(a, isClient(ctx))
	mode := p.mode(a.Module)
	if cacheOnly := isCacheOnly(ctx); cacheOnly || mode == Offline {
		if old != nil {
			return Answer{Object: old, Stale: true, CacheStatus: hitStatus(old, now)}, nil
		}
		if cacheOnly {
			return Answer{CacheStatus: cacheStatus("detail=not-cached")}, &httperr.Error{Status: http.StatusNotFound,
				Msg: "not found: " + a.String() + " is not in the cache, and the request asked for the cache alone", Source: "cache-only"}
		}
		return Answer{CacheStatus: cacheStatus("detail=not-cached")}, offlineMiss(a)
	}
	if fe, ok := p.knownNotFound(ctx, a); ok {
		old.Close()
		return Answer{CacheStatus: cacheStatus("hit; detail=not-found")}, fe
	}
	if mode == Redirect && old == nil && !isInternal(ctx) && (a.Immutable() || !p.gated(ctx, a.Module)) {
		if url := p.redirect(a); url != "" {
			return Answer{Redirect: url, CacheStatus: cacheStatus("fwd=miss; detail=redirect")}, nil
		}
	}
	fwd := "miss"
	if old != nil {
		fwd = "stale"
	}
	obj, err := p.collapse(ctx, a)
	if err == nil {
		old.Close()
		return Answer{Object: obj, CacheStatus: fwdStatus(fwd, obj, nil)}, nil
	}
	if old != nil && !httperr.IsNotFound(err) && !httperr.IsRefusal(err) && ctx.Err() == nil {
		p.log.Warn("upstream failed; serving stale copy", zap.Stringer("artifact", a), zap.Error(err))
		return Answer{Object: old, Stale: true, CacheStatus: fwdStatus(fwd, nil, err) + "; detail=" + old.Tier}, nil
	}
	old.Close()
	return Answer{CacheStatus: fwdStatus(fwd, nil, err)}, err
}

// knownNotFound returns a remembered not-found answer for a: this node's,
// or one another node shared.
func (p *Proxy) knownNotFound(ctx context.Context, a artifact.Artifact) (*httperr.Error, bool) {
	key := p.key(a)
	if fe, ok := p.cfg.notFound.Get(key); ok {
		return fe, true
	}
	if p.cfg.Fleet != nil {
		if status, msg, ok := p.cfg.Fleet.GetNotFound(ctx, key); ok {
			fe := &httperr.Error{Status: status, Msg: msg, Source: "peer"}
			p.cfg.notFound.PutFor(key, fe, p.notFoundTTL(a))
			return fe, true
		}
	}
	return nil, false
}

// notFoundTTL is how long a not-found answer for a is remembered: a
// version's artifacts (.info, .mod, .zip, a version query) briefly, so
// that a version published since is found when a client asks for it; a
// module's list and @latest for NotFoundTTL.
func (p *Proxy) notFoundTTL(a artifact.Artifact) time.Duration {
	switch a.Kind {
	case artifact.Info, artifact.Mod, artifact.Zip:
		return p.cfg.NotFoundVersionTTL
	}
	return p.cfg.NotFoundTTL
}

// Purge removes artifacts from every tier, leaving tombstones where the
// tier keeps them, forgets their not-found answers, and has every node of
// the fleet do the same.
func (p *Proxy) Purge(ctx context.Context, as ...artifact.Artifact) error {
	keys := make([]string, len(as))
	var errs []error
	for i, a := range as {
		keys[i] = p.key(a)
		p.cfg.notFound.Del(keys[i])
		errs = append(errs, p.cfg.Tiers.Delete(ctx, keys[i]))
	}
	if p.cfg.Fleet != nil {
		errs = append(errs, p.cfg.Fleet.Purge(ctx, keys))
	}
	return errors.Join(errs...)
}

// ForgetNotFound drops the not-found answers of keys, which another node
// purged.
func (p *Proxy) ForgetNotFound(keys []string) {
	for _, k := range keys {
		p.cfg.notFound.Del(k)
	}
}

func writeError(w http.ResponseWriter, status int, msg string, maxAge time.Duration) {
	h := w.Header()
	h.Del("ETag")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if maxAge > 0 {
		h.Set("Cache-Control", "public, max-age="+strconv.Itoa(int(maxAge/time.Second)))
	} else {
		h.Set("Cache-Control", "no-store")
	}
	w.WriteHeader(status)
	fmt.Fprintln(w, msg)
}
