package goproxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/httperr"
	"github.com/piraeus-go/piraeus/vulndb"
)

// Defaults for Options fields left zero.
const (
	DefaultUpstream    = "https://proxy.golang.org"
	DefaultSumDB       = "sum.golang.org"
	DefaultListTTL     = time.Minute
	DefaultNotFoundTTL = 30 * time.Second
	// DefaultNotFoundVersionTTL is how long a not-found answer for a named
	// version (its .info, .mod or .zip) is remembered: a version tagged
	// right after a client asked for it is found at the next ask, while a
	// flood of asks for it still costs one upstream request per key in
	// that time.
	DefaultNotFoundVersionTTL = 5 * time.Second
	DefaultFetchTimeout       = 5 * time.Minute
	DefaultMaxFetches         = 256
	DefaultSpoolMax           = 2 << 30
	DefaultRedirectTTL        = 5 * time.Minute
	// notFoundEntries bounds the not-found answers remembered.
	notFoundEntries = 1 << 16
)

// Options is everything a Proxy is made of. New is the one place that
// fills in the defaults, for the Caddy module, the tests, the benchmarks
// and any other user of the package alike.
type Options struct {
	// Upstream is a GOPROXY-style list of sources: proxy URLs, "direct"
	// and "off", separated by ',' (fall through on 404/410) or '|' (on
	// any error). Default DefaultUpstream.
	Upstream string
	// Private are module path patterns (GOPRIVATE syntax, any letter case)
	// fetched only through PrivateUpstream (default "direct") and never
	// sent to public upstreams or checksum databases.
	Private         []string
	PrivateUpstream string
	// Direct configures fetching from version control.
	Direct DirectOptions
	// SumDBs are the checksum databases proxied under /sumdb/<name>/; the
	// first verifies every fetched .mod and .zip. Default: DefaultSumDB,
	// unless SumDBOff.
	SumDBs   []SumDBOptions
	SumDBOff bool
	// NoVerify are module path patterns (GONOSUMDB syntax) not verified.
	NoVerify []string
	// Modes choose per module pattern how a miss is answered; the first
	// matching rule wins.
	Modes []ModeOption

	ListTTL     time.Duration // freshness of list and @latest; DefaultListTTL
	NotFoundTTL time.Duration // how long a 404/410 is remembered; DefaultNotFoundTTL
	// NotFoundVersionTTL is how long a 404/410 for a named version is
	// remembered; DefaultNotFoundVersionTTL, at most NotFoundTTL.
	NotFoundVersionTTL time.Duration
	FetchTimeout       time.Duration // one upstream fetch, body included; DefaultFetchTimeout
	// DialTimeout, ResponseHeaderTimeout and MaxConnsPerHost bound the
	// client of upstream proxies and checksum databases (see
	// fetcher.HTTPConfig); SumDBTimeout bounds one checksum database read.
	DialTimeout           time.Duration
	ResponseHeaderTimeout time.Duration
	SumDBTimeout          time.Duration
	MaxConnsPerHost       int
	// SameHostRedirects refuses upstream redirects to another host; by
	// default they are followed as the go command follows them (see
	// fetcher.CheckRedirect).
	SameHostRedirects bool
	// AllowPrivateRedirects lets upstream redirects lead to loopback,
	// private and link-local addresses other than the configured
	// upstreams' own; by default they are refused.
	AllowPrivateRedirects bool
	// UpstreamTLS, if set, configures TLS to upstreams and checksum
	// databases (e.g. a private CA's roots).
	UpstreamTLS *tls.Config
	MaxFetches  int   // upstream fetches at once; DefaultMaxFetches
	SpoolMax    int64 // bytes of bodies spooled at once; DefaultSpoolMax

	// Health answers GET /healthz (the process serves) and /readyz (the
	// tiers work, and the checksum database is reachable when it verifies).
	Health bool
	// StatusPath, if set, serves the status page there (HTML, or JSON
	// with ?format=json).
	StatusPath string
	// Catalog answers GET /catalog with the module versions the mirror
	// holds, in Athens' format: public modules only, unless
	// CatalogPrivate.
	Catalog        bool
	CatalogPrivate bool

	// Policy holds versions back (see PolicyRule): the first rule that
	// matches a module version decides; none matching allows it.
	Policy []PolicyRule
	// Cooldown holds back versions younger than an age (see CooldownRule);
	// a request under CooldownPrefix may ask for a longer one.
	Cooldown []CooldownRule
	// VulnDB, if set, is a Go vulnerability database (https://vuln.go.dev)
	// mirrored under /vuln/ (GOVULNDB=https://<mirror>/vuln), cached and
	// served stale when it cannot be reached.
	VulnDB string
	// DenyVulnerable refuses the .zip of a version that a VulnDB entry
	// affects, for the modules DenyVulnerablePatterns match (all when
	// empty). Not its .mod: graph resolution reads many it never builds.
	DenyVulnerable         bool
	DenyVulnerablePatterns []string

	// Access, if set, decides who may read which module (see Access); nil
	// leaves access to what is in front of the proxy.
	Access *Access

	// Cache holds what the proxy serves; required.
	Cache Cache
	// RedirectLarge, if set, answers a .zip of at least this many bytes
	// that the tier of record (an object store) holds with a 302 to a
	// pre-signed URL that lasts RedirectTTL (default 5m), so that large
	// zips need not pass through the proxy. Private modules are served as
	// usual unless RedirectPrivate.
	RedirectLarge   int64
	RedirectPrivate bool
	RedirectTTL     time.Duration
	// Prefetch fetches the requirements of each fetched .mod ahead of
	// demand; off unless set.
	Prefetch PrefetchOptions
	// SandboxDir holds the sandboxes of direct fetches. Default:
	// piraeus-direct in the system's temp directory.
	SandboxDir string
	// Fleet, if set, coordinates this node with the others that share its
	// Redis: a node fetches only while it holds the artifact's lock (and
	// looks in the cache again once it has it), large objects are handed
	// to waiting nodes, not-found answers are shared, and purges reach
	// every node. Leave it nil for none (not a nil pointer of a type
	// that implements it).
	Fleet Fleet
	// Metrics, if set, receives the proxy's counters (see NewMetrics).
	Metrics *Metrics
	Logger  *zap.Logger
}

// DirectOptions configures fetching from version control with the go
// command. Netrc (credentials) is given to fetches of private modules only.
type DirectOptions struct {
	Workers      int           // per pool (public, private); default 4
	PerHost      int           // per pool and host; default 2
	Timeout      time.Duration // one go command; default 10m
	StallTimeout time.Duration // a git transfer below 1 KiB/s; default 30s
	GoBinary     string
	Env          []string
	Netrc        string // netrc contents
	GitConfig    string // a git config file
}

// SumDBOptions names a checksum database and where to reach it.
type SumDBOptions struct {
	// Name is a known database name (sum.golang.org) or a verifier key.
	Name string
	// URL serves the database. Default: the first upstream proxy's
	// /sumdb/<name>, probed, or https://<name> when the first upstream is
	// not a proxy.
	URL string
	// DirectURL is where the database is read when the probed upstream
	// does not proxy it; default https://<name>.
	DirectURL string
}

// ModeOption applies a download mode (sync, redirect, offline) to the
// modules a pattern matches.
type ModeOption struct {
	Pattern string
	Mode    string
}

// Cache is what the proxy needs of the cache tiers: *cachetier.Tiered.
type Cache interface {
	// Get returns the object stored under key; check vets an object from a
	// tier that other nodes write (see cachetier.Tiered.Get).
	Get(ctx context.Context, key string, check func(*cachetier.Object) error) (*cachetier.Object, error)
	// NewSpool starts the temp file of a fetch of key.
	NewSpool(key string) (*cachetier.Spool, error)
	// Commit stores a checked spool and returns the object, read from the
	// spool's own file or memory; on a storage failure, the object (served
	// uncached) and the error.
	Commit(ctx context.Context, key string, s *cachetier.Spool, meta cachetier.Meta) (*cachetier.Object, error)
	// PutSmall stores small content, durably or in memory only.
	PutSmall(ctx context.Context, key string, meta cachetier.Meta, data []byte, durable bool) error
	// Delete removes key everywhere, leaving a tombstone where a tier
	// keeps them.
	Delete(ctx context.Context, key string) error
	// PutRecord and GetRecord keep records every node must read alike
	// (of first sight), in the store and the shared tiers only; with
	// confirm, a shared tier that cannot be asked fails them.
	PutRecord(ctx context.Context, key string, meta cachetier.Meta, data []byte, confirm bool) error
	GetRecord(ctx context.Context, key string, confirm bool) (*cachetier.Object, error)
	// Holds reports whether the tier of record holds key, without reading
	// it; ok is false when it cannot say.
	Holds(ctx context.Context, key string) (held, ok bool, err error)
	// Presign returns a short-lived URL serving key's content from the
	// tier of record, if that is an object store and the object has at
	// least minSize bytes; cachetier.ErrMiss otherwise.
	Presign(ctx context.Context, key string, minSize int64, ttl time.Duration) (string, error)

	// For operators: the tiers (occupancy and bounds), whether they work
	// now, and what the tier of record holds, a page at a time.
	Tiers() []cachetier.Tier
	Check(ctx context.Context) error
	List(ctx context.Context, after string, limit int) (keys []string, next string, err error)
}

// Namespace is the digest of what makes this proxy's answers differ from
// another's: its upstreams, private modules and their source, checksum
// databases and what is not verified. Cache keys start with it, so that
// proxies sharing tiers (one disk directory, one Redis) never serve each
// other's objects.
func (o Options) Namespace() string {
	upstream := o.Upstream
	if upstream == "" {
		upstream = DefaultUpstream
	}
	var sumdbs []string
	for _, db := range o.SumDBs {
		sumdbs = append(sumdbs, db.Name, db.URL)
	}
	id, _ := json.Marshal([]any{upstream, o.Private, o.PrivateUpstream, sumdbs, o.SumDBOff, o.NoVerify})
	sum := sha256.Sum256(id)
	return "d" + hex.EncodeToString(sum[:4])
}

// New assembles a Proxy: the upstream lists and the direct fetchers
// (public and private pools), the checksum databases, the patterns and
// modes, with every default filled in. Close releases what it opened.
func New(o Options) (*Proxy, error) {
	if o.Cache == nil {
		return nil, errors.New("goproxy: Cache is required")
	}
	if err := o.Check(); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Upstream == "" {
		o.Upstream = DefaultUpstream
	}
	if o.SandboxDir == "" {
		o.SandboxDir = filepath.Join(os.TempDir(), "piraeus-direct")
	}
	cfg := config{
		ListTTL:     orDefault(o.ListTTL, DefaultListTTL),
		NotFoundTTL: orDefault(o.NotFoundTTL, DefaultNotFoundTTL),
		NotFoundVersionTTL: min(orDefault(o.NotFoundVersionTTL, DefaultNotFoundVersionTTL),
			orDefault(o.NotFoundTTL, DefaultNotFoundTTL)),
		FetchTimeout:   orDefault(o.FetchTimeout, DefaultFetchTimeout),
		MaxFetches:     orDefault(o.MaxFetches, DefaultMaxFetches),
		SpoolMax:       orDefault(o.SpoolMax, DefaultSpoolMax),
		Fleet:          o.Fleet,
		Metrics:        o.Metrics,
		Logger:         o.Logger,
		namespace:      o.Namespace(),
		Health:         o.Health,
		StatusPath:     o.StatusPath,
		Catalog:        o.Catalog,
		CatalogPrivate: o.CatalogPrivate,

		RedirectLarge:   o.RedirectLarge,
		RedirectPrivate: o.RedirectPrivate,
		RedirectTTL:     orDefault(o.RedirectTTL, DefaultRedirectTTL),
	}
	var err error
	if cfg.Private, cfg.NoVerify, cfg.Modes, err = o.parsePolicy(); err != nil {
		return nil, err
	}
	if o.Access != nil {
		if cfg.access, err = o.Access.compile(); err != nil {
			return nil, err
		}
	}
	if cfg.policy, err = compilePolicy(o.Policy); err != nil {
		return nil, err
	}
	if cfg.cooldown, err = compileCooldown(o.Cooldown); err != nil {
		return nil, err
	}
	cfg.denyVulnerable = o.DenyVulnerable
	cfg.denyVulnerablePatterns = artifact.MustParsePatterns(o.DenyVulnerablePatterns...)
	cfg.client = fetcher.NewHTTPClient(fetcher.HTTPConfig{
		MaxConnsPerHost: o.MaxConnsPerHost, DialTimeout: o.DialTimeout, HeaderTimeout: o.ResponseHeaderTimeout,
		SameHostRedirects: o.SameHostRedirects, TLS: o.UpstreamTLS,
		Hosts: o.upstreamHosts(), AllowPrivateRedirects: o.AllowPrivateRedirects,
	})

	// Public and private modules are fetched from version control by
	// separate pools; only the private one has the credentials.
	direct := func(name, netrc string) (*fetcher.DirectFetcher, error) {
		d := o.Direct
		return fetcher.NewDirectFetcher(fetcher.DirectConfig{
			Name: name, Workers: d.Workers, PerHost: d.PerHost, Timeout: d.Timeout, StallTimeout: d.StallTimeout,
			GoBinary: d.GoBinary, Env: d.Env, Netrc: netrc, GitConfig: d.GitConfig, SandboxDir: o.SandboxDir,
		})
	}
	publicDirect, err := direct("public", "")
	if err != nil {
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	chain, err := fetcher.ParseList(o.Upstream, cfg.client, publicDirect)
	if err != nil {
		return nil, fmt.Errorf("goproxy: upstream: %w", err)
	}
	cfg.Fetcher = chain
	if !cfg.Private.Empty() {
		list := o.PrivateUpstream
		if list == "" {
			list = "direct"
		}
		privateDirect, err := direct("private", o.Direct.Netrc)
		if err != nil {
			return nil, fmt.Errorf("goproxy: %w", err)
		}
		privateChain, err := fetcher.ParseList(list, cfg.client, privateDirect)
		if err != nil {
			return nil, fmt.Errorf("goproxy: private upstream: %w", err)
		}
		cfg.Fetcher = &fetcher.Router{Patterns: cfg.Private, Private: privateChain, Public: chain}
	}
	cfg.RedirectBase = chain.FirstProxyURL()
	if u, err := url.Parse(cfg.RedirectBase); err == nil && u.User != nil {
		cfg.RedirectBase = "" // never send clients an upstream's credentials
	}

	cfg.notFound, err = httperr.NewNotFoundCache(notFoundEntries, cfg.NotFoundTTL)
	if err != nil {
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	cfg.Tiers = o.Cache
	if o.VulnDB != "" {
		if cfg.vulndb, err = vulndb.New(vulndb.Config{URL: o.VulnDB, Client: cfg.client, Cache: o.Cache, Logger: o.Logger}); err != nil {
			cfg.notFound.Close()
			return nil, fmt.Errorf("goproxy: %w", err)
		}
	}
	// The databases report their reads to the proxy, which exists only
	// after them: they are set on it before it serves.
	var p *Proxy
	onRead := func(name, path string, err error, d time.Duration, n int) {
		if p != nil {
			p.sumdbFetched(name, path, err, d, n)
		}
	}
	if cfg.SumDBs, err = openSumDBs(o, chain, cfg, onRead); err != nil {
		cfg.notFound.Close()
		return nil, err
	}
	if len(cfg.SumDBs) > 0 {
		cfg.SumDB = cfg.SumDBs[0]
		cfg.Verifier = cfg.SumDB
	}
	p = newProxy(cfg)
	if p.prefetch, err = newPrefetcher(p, o.Prefetch); err != nil {
		p.Close()
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	p.logStart(o)
	return p, nil
}

// Check reports what New would refuse in o's patterns, modes, upstream
// lists and checksum databases, with no side effects: no directory is
// made, nothing is dialed, no tier is read. It is what `caddy validate`
// runs; New runs it too.
func (o Options) Check() error {
	private, _, _, err := o.parsePolicy()
	if err != nil {
		return err
	}
	if err := fetcher.CheckList(orDefault(o.Upstream, DefaultUpstream)); err != nil {
		return fmt.Errorf("goproxy: upstream: %w", err)
	}
	if !private.Empty() && o.PrivateUpstream != "" {
		if err := fetcher.CheckList(o.PrivateUpstream); err != nil {
			return fmt.Errorf("goproxy: private upstream: %w", err)
		}
	}
	if len(o.SumDBs) > 0 && o.SumDBOff {
		return errors.New("goproxy: sumdb off and a sumdb given")
	}
	if err := o.checkLimits(); err != nil {
		return err
	}
	if _, err := compilePolicy(o.Policy); err != nil {
		return err
	}
	if _, err := compileCooldown(o.Cooldown); err != nil {
		return err
	}
	if o.DenyVulnerable && o.VulnDB == "" {
		return errors.New("goproxy: deny vulnerable needs a vulndb")
	}
	if _, err := artifact.ParsePatterns(o.DenyVulnerablePatterns...); err != nil {
		return fmt.Errorf("goproxy: deny vulnerable: %w", err)
	}
	if o.VulnDB != "" {
		if u, err := url.Parse(o.VulnDB); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("goproxy: vulndb %q: want an http:// or https:// URL", o.VulnDB)
		}
	}
	if o.Access != nil {
		acc := *o.Access
		if acc.Identify == nil { // set by New's caller; the rules are checked here
			acc.Identify = func(*http.Request) Subject { return Subject{} }
		}
		if _, err := acc.compile(); err != nil {
			return err
		}
	}
	for _, c := range o.SumDBs {
		if _, err := checksumdb.ParseNameOrKey(c.Name); err != nil {
			return fmt.Errorf("goproxy: %w", err)
		}
		for _, u := range []string{c.URL, c.DirectURL} {
			if u == "" {
				continue
			}
			if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return fmt.Errorf("goproxy: checksum database %s: URL %q: want http:// or https:// with a host", c.Name, u)
			}
		}
	}
	return nil
}

// maxRedirectTTL is the longest a pre-signed URL of S3 lives.
const maxRedirectTTL = 7 * 24 * time.Hour

// checkLimits holds the rules on o's durations, counts and sizes, and on
// the prefetch's mode: the one place each is checked (the Caddy module's
// Validate and the constructors behind New rely on it).
func (o Options) checkLimits() error {
	for _, d := range []time.Duration{o.ListTTL, o.NotFoundTTL, o.NotFoundVersionTTL, o.FetchTimeout, o.DialTimeout,
		o.ResponseHeaderTimeout, o.SumDBTimeout, o.RedirectTTL} {
		if d < 0 {
			return errors.New("goproxy: durations must not be negative")
		}
	}
	if o.MaxConnsPerHost < 0 || o.MaxFetches < 0 || o.SpoolMax < 0 || o.RedirectLarge < 0 {
		return errors.New("goproxy: max_conns_per_host, max_fetches, spool_max and redirect_large must not be negative")
	}
	if o.RedirectTTL > maxRedirectTTL {
		return errors.New("goproxy: redirect_ttl is at most 7 days (the longest a pre-signed URL lives)")
	}
	switch pf := o.Prefetch; {
	case pf.Mode != "" && pf.Mode != "off" && pf.Mode != "mod" && pf.Mode != "selected" && pf.Mode != "zip":
		return fmt.Errorf("goproxy: prefetch mode %q: want off, mod, selected or zip", pf.Mode)
	case pf.Workers < 0 || pf.Depth < 0 || pf.MaxBytes < 0 || pf.FanOut < 0 || pf.RequestsPerMinute < 0:
		return errors.New("goproxy: prefetch limits must not be negative")
	}
	return nil
}

// parsePolicy parses the private and verify-off patterns and the modes.
// Toolchains are never private nor unverified.
func (o Options) parsePolicy() (private, noVerify artifact.Patterns, modes []ModeRule, err error) {
	if private, err = artifact.ParsePatterns(o.Private...); err != nil {
		return private, noVerify, nil, fmt.Errorf("goproxy: private: %w", err)
	}
	if noVerify, err = artifact.ParsePatterns(o.NoVerify...); err != nil {
		return private, noVerify, nil, fmt.Errorf("goproxy: verify off: %w", err)
	}
	private = private.Except(artifact.ToolchainModule)
	noVerify = noVerify.Except(artifact.ToolchainModule)
	for _, m := range o.Modes {
		mode, err := ParseMode(m.Mode)
		if err != nil {
			return private, noVerify, nil, fmt.Errorf("goproxy: %w", err)
		}
		pats, err := artifact.ParsePatterns(m.Pattern)
		if err != nil {
			return private, noVerify, nil, fmt.Errorf("goproxy: mode: %w", err)
		}
		modes = append(modes, ModeRule{Patterns: pats, Mode: mode})
	}
	return private, noVerify, modes, nil
}

// upstreamHosts are the hosts the configuration names: its proxies and
// checksum databases.
func (o Options) upstreamHosts() []string {
	hosts := append(fetcher.ListHosts(o.Upstream), fetcher.ListHosts(o.PrivateUpstream)...)
	for _, db := range o.SumDBs {
		if u, err := url.Parse(db.URL); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	return hosts
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// openSumDBs opens the configured checksum databases, or the default one,
// as the go command would reach them.
func openSumDBs(o Options, chain *fetcher.Chain, cfg config, onRead func(name, path string, err error, d time.Duration, n int)) ([]*checksumdb.DB, error) {
	configs := o.SumDBs
	if len(configs) == 0 && !o.SumDBOff {
		configs = []SumDBOptions{{Name: DefaultSumDB}}
	}
	var dbs []*checksumdb.DB
	for _, c := range configs {
		dbURL, probe := c.URL, false
		if dbURL == "" {
			// Through the first proxy if it proxies the database (a 404
			// from its /supported says it does not), else straight to it.
			name := c.Name
			if v, err := note.NewVerifier(c.Name); err == nil {
				name = v.Name()
			}
			if base := chain.FirstProxyURL(); base != "" {
				dbURL, probe = strings.TrimSuffix(base, "/")+"/sumdb/"+name, true
			} else {
				dbURL = "https://" + name
			}
		}
		db, err := checksumdb.New(checksumdb.Config{
			NameOrKey: c.Name,
			URL:       dbURL,
			Probe:     probe,
			DirectURL: c.DirectURL,
			Client:    cfg.client,
			Cache:     namespaced{cfg.Tiers, cfg.namespace + "/"},
			NotFound:  cfg.notFound,
			Timeout:   o.SumDBTimeout,
			Logger:    cfg.Logger.Named("sumdb"),
			OnState:   cfg.Metrics.SumDBState,
			OnRead:    onRead,
		})
		if err != nil {
			for _, db := range dbs {
				db.Close()
			}
			return nil, fmt.Errorf("goproxy: %w", err)
		}
		dbs = append(dbs, db)
	}
	return dbs, nil
}

// logStart says once, at start, how the proxy is made: the upstream list,
// the tiers with their bounds, what verifies which modules, private
// patterns and modes.
func (p *Proxy) logStart(o Options) {
	var tiers []string
	for _, t := range p.cfg.Tiers.Tiers() {
		desc := t.Name()
		if b, ok := t.(cachetier.Bounded); ok && b.Bound() > 0 {
			desc += " " + humanBytes(b.Bound())
		}
		tiers = append(tiers, desc)
	}
	var modes []string
	for _, m := range o.Modes {
		modes = append(modes, m.Pattern+"="+m.Mode)
	}
	private := o.PrivateUpstream
	if private == "" && !p.cfg.Private.Empty() {
		private = "direct"
	}
	fields := []zap.Field{
		zap.String("upstream", fetcher.RedactList(orDefault(o.Upstream, DefaultUpstream))), zap.Strings("tiers", tiers),
		zap.String("private", p.cfg.Private.String()), zap.String("private_upstream", fetcher.RedactList(private)),
		zap.Strings("modes", modes), zap.String("namespace", p.cfg.namespace),
		zap.String("prefetch", p.prefetch.describe()),
	}
	db := p.cfg.SumDB
	if db == nil {
		p.log.Error("goproxy ready; no checksum database (sumdb off): every fetched module is cached unverified", fields...)
		return
	}
	p.log.Info("goproxy ready; a checksum database verifies every fetched .mod and .zip", append(fields,
		zap.String("sumdb", db.Name()), zap.String("sumdb_url", fetcher.RedactURL(db.URL())),
		zap.String("except_private", p.cfg.Private.String()), zap.String("except_verify_off", p.cfg.NoVerify.String()))...)
}

// namespaced is a Cache whose keys start with a namespace: the checksum
// database client's, whose keys are its own ("sumdb/<name>/...").
type namespaced struct {
	c  Cache
	ns string
}

func (n namespaced) Get(ctx context.Context, key string, check func(*cachetier.Object) error) (*cachetier.Object, error) {
	return n.c.Get(ctx, n.ns+key, check)
}
func (n namespaced) NewSpool(key string) (*cachetier.Spool, error) { return n.c.NewSpool(n.ns + key) }
func (n namespaced) Commit(ctx context.Context, key string, s *cachetier.Spool, meta cachetier.Meta) (*cachetier.Object, error) {
	return n.c.Commit(ctx, n.ns+key, s, meta)
}
func (n namespaced) PutSmall(ctx context.Context, key string, meta cachetier.Meta, data []byte, durable bool) error {
	return n.c.PutSmall(ctx, n.ns+key, meta, data, durable)
}
func (n namespaced) Delete(ctx context.Context, key string) error { return n.c.Delete(ctx, n.ns+key) }

// CacheKey is the key under which the proxy stores path (an artifact's
// escaped path, or a checksum database file) in its Cache.
func (p *Proxy) CacheKey(path string) string { return p.cfg.namespace + "/" + path }

var _ http.Handler = (*Proxy)(nil)
