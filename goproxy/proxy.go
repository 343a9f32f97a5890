// Package goproxy is the protocol core: it answers GOPROXY requests from the
// cache tiers, collapses concurrent misses into one fetch, checks what it
// fetched and writes it through the tiers. It is a plain http.Handler and
// knows nothing about Caddy.
package goproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/fleet"
)

// Defaults for Config fields left zero.
const (
	DefaultListTTL      = time.Minute
	DefaultNotFoundTTL  = 30 * time.Second
	DefaultFetchTimeout = 5 * time.Minute
	DefaultMaxFetches   = 256
	DefaultSpoolMax     = 2 << 30
)

// Config configures a Proxy.
type Config struct {
	Fetcher fetcher.Fetcher
	Tiers   *cachetier.Tiered

	// ListTTL is how long list and @latest answers (and .info version
	// queries) are served without asking upstream again.
	ListTTL time.Duration
	// NotFoundTTL is how long a 404/410 from upstream is remembered.
	NotFoundTTL time.Duration
	// FetchTimeout bounds one upstream fetch, body included, and the wait
	// for another node's fetch of the same artifact.
	FetchTimeout time.Duration
	// MaxFetches bounds the fetches from upstream running at once; more
	// wait for a free one (within FetchTimeout).
	MaxFetches int
	// SpoolMax bounds the bytes of fetched bodies being spooled and
	// checked at once; fetches beyond it wait before reading their body.
	SpoolMax int64

	// SumDBs are the checksum databases proxied under /sumdb/<name>/.
	SumDBs []*checksumdb.DB
	// Verifier, if set, must vouch for every fetched .mod and .zip of a
	// module not matched by NoVerify before it is stored or served.
	Verifier *checksumdb.DB
	// NoVerify are module path patterns (GONOSUMDB syntax) that are not
	// checked against the Verifier.
	NoVerify artifact.Patterns
	// Private are module path patterns (GOPRIVATE syntax): the modules they
	// cover are never looked up in a checksum database, not even when a
	// client asks. Route their fetches with fetcher.Router.
	Private artifact.Patterns

	// Modes choose, per module pattern, how a miss is answered: fetched
	// (sync, the default), redirected to RedirectBase while the cache
	// fills in the background, or refused (offline).
	Modes []ModeRule
	// RedirectBase is the upstream proxy URL that redirect mode sends
	// clients to; without it, redirect mode behaves as sync.
	RedirectBase string

	// Metrics, if set, receives the proxy's counters (see NewMetrics).
	Metrics *Metrics

	// Fleet, if set, coordinates this node with the others that share its
	// Redis: a node fetches only while it holds the artifact's lock (and
	// looks in the tiers again once it has it), large objects are handed
	// to waiting nodes, not-found answers are shared, and purges reach
	// every node.
	Fleet *fleet.Fleet

	Logger *zap.Logger
}

// Proxy serves the GOPROXY protocol.
type Proxy struct {
	cfg     Config
	log     *zap.Logger
	flights singleflight.Group // checksum database reads

	mu         sync.Mutex
	fetches    map[string]*flight // artifact fetches in progress
	fetchSlots chan struct{}      // one per upstream fetch running
	budget     *byteBudget        // bytes of bodies being spooled
	notFound   *ristretto.Cache[string, *fetcher.Error]
	sumdbs     map[string]*checksumdb.DB

	verifyFailures atomic.Int64
}

// Spooling reports the bytes of fetched bodies reserved now, and how many
// fetches wait for the budget.
func (p *Proxy) Spooling() (bytes int64, waiting int) {
	return p.budget.used.Load(), int(p.budget.waiting.Load())
}

// VerifyFailures counts fetched modules rejected by the checksum database.
func (p *Proxy) VerifyFailures() int64 { return p.verifyFailures.Load() }

// New returns a Proxy; call Close when done with it.
func New(cfg Config) (*Proxy, error) {
	if cfg.Fetcher == nil || cfg.Tiers == nil {
		return nil, errors.New("goproxy: Fetcher and Tiers are required")
	}
	if cfg.ListTTL <= 0 {
		cfg.ListTTL = DefaultListTTL
	}
	if cfg.NotFoundTTL <= 0 {
		cfg.NotFoundTTL = DefaultNotFoundTTL
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	if cfg.MaxFetches <= 0 {
		cfg.MaxFetches = DefaultMaxFetches
	}
	if cfg.SpoolMax <= 0 {
		cfg.SpoolMax = DefaultSpoolMax
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	nf, err := ristretto.NewCache(&ristretto.Config[string, *fetcher.Error]{
		NumCounters:        1e5,
		MaxCost:            1e4, // entries
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	p := &Proxy{cfg: cfg, log: cfg.Logger, notFound: nf, sumdbs: map[string]*checksumdb.DB{}, fetches: map[string]*flight{},
		fetchSlots: make(chan struct{}, cfg.MaxFetches), budget: newByteBudget(cfg.SpoolMax)}
	for _, db := range cfg.SumDBs {
		p.sumdbs[db.Name()] = db
	}
	return p, nil
}

// Close releases the proxy's own resources; the tiers belong to the caller.
func (p *Proxy) Close() error {
	p.notFound.Close()
	return nil
}

// ServeHTTP answers GET and HEAD for the GOPROXY protocol paths.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, http.StatusMethodNotAllowed, "method "+strconv.Quote(r.Method)+" not allowed: use GET or HEAD", 0)
		p.cfg.Metrics.request("invalid", "method_not_allowed")
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, "/sumdb/"); ok {
		p.serveSumDB(w, r, rest)
		return
	}
	if strings.Contains(strings.ToLower(r.URL.RawPath), "%2f") {
		writeError(w, http.StatusBadRequest, "encoded slash in request path", 0)
		p.cfg.Metrics.request("invalid", "bad_request")
		return
	}
	a, err := artifact.Parse(strings.TrimPrefix(r.URL.Path, "/"))
	if err != nil {
		var ae *artifact.Error
		errors.As(err, &ae)
		writeError(w, ae.Status, ae.Msg, 0)
		p.cfg.Metrics.request("invalid", resultOf(ae.Status))
		return
	}
	obj, stale, err := p.Get(r.Context(), a)
	if err != nil {
		p.cfg.Metrics.request(a.Kind.String(), p.writeFetchError(w, r, err))
		return
	}
	defer obj.Close()
	h := w.Header()
	h.Set("Content-Type", a.Kind.ContentType())
	h.Set("ETag", obj.ETag())
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
	p.cfg.Metrics.request(a.Kind.String(), result)
	if p.cfg.Metrics == nil {
		http.ServeContent(w, r, "", time.Time{}, obj.Reader())
		return
	}
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, obj.Reader())
	p.cfg.Metrics.served(a, cw.n)
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

// writeFetchError answers a failed lookup and returns its metrics result.
func (p *Proxy) writeFetchError(w http.ResponseWriter, r *http.Request, err error) string {
	if r.Context().Err() != nil {
		return "canceled" // the client is gone; nobody reads an answer
	}
	var re *redirectError
	if errors.As(err, &re) {
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, re.url, http.StatusFound)
		return "redirect"
	}
	var fe *fetcher.Error
	if errors.As(err, &fe) {
		var maxAge time.Duration
		if fetcher.IsNotFound(fe) {
			maxAge = p.cfg.NotFoundTTL
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

// Get returns the artifact from the cache or, on a miss, from upstream.
// stale is true when an expired list or @latest answer is served because
// upstream failed. The caller closes the object.
func (p *Proxy) Get(ctx context.Context, a artifact.Artifact) (obj *cachetier.Object, stale bool, err error) {
	key := a.Path()
	var old *cachetier.Object
	if obj, err := p.cfg.Tiers.Get(ctx, key, p.checkShared(a)); err == nil {
		if obj.Fresh(time.Now()) {
			p.cfg.Metrics.hit(obj.Tier)
			return obj, false, nil
		}
		old = obj
	}
	p.cfg.Metrics.miss(a)
	mode := p.mode(a.Module)
	if mode == Offline {
		if old != nil {
			return old, true, nil
		}
		return nil, false, offlineMiss(a)
	}
	if fe, ok := p.knownNotFound(ctx, key); ok {
		old.Close()
		return nil, false, fe
	}
	if mode == Redirect && old == nil {
		if err := p.redirect(a); err != nil {
			return nil, false, err
		}
	}
	obj, err = p.collapse(ctx, a)
	if err == nil {
		old.Close()
		return obj, false, nil
	}
	if old != nil && !fetcher.IsNotFound(err) && !fetcher.IsRefusal(err) && ctx.Err() == nil {
		p.log.Warn("upstream failed; serving stale copy", zap.Stringer("artifact", a), zap.Error(err))
		return old, true, nil
	}
	old.Close()
	return nil, false, err
}

// knownNotFound returns a remembered not-found answer for key: this node's,
// or one another node shared.
func (p *Proxy) knownNotFound(ctx context.Context, key string) (*fetcher.Error, bool) {
	if fe, ok := p.notFound.Get(key); ok {
		return fe, true
	}
	if p.cfg.Fleet != nil {
		if status, msg, ok := p.cfg.Fleet.GetNotFound(ctx, key); ok {
			fe := &fetcher.Error{Status: status, Msg: msg, Source: "peer"}
			p.notFound.SetWithTTL(key, fe, 1, p.cfg.NotFoundTTL)
			return fe, true
		}
	}
	return nil, false
}

// Purge removes artifacts from every tier, leaving tombstones where the
// tier keeps them, forgets their not-found answers, and has every node of
// the fleet do the same.
func (p *Proxy) Purge(ctx context.Context, as ...artifact.Artifact) error {
	keys := make([]string, len(as))
	var errs []error
	for i, a := range as {
		keys[i] = a.Path()
		p.notFound.Del(keys[i])
		errs = append(errs, p.cfg.Tiers.Purge(ctx, keys[i]))
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
		p.notFound.Del(k)
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
