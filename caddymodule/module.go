// Package caddymodule registers the GOPROXY handler with Caddy as
// http.handlers.goproxy and the goproxy Caddyfile directive. It holds the
// Caddy glue only; the protocol lives in package goproxy.
package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/accesstoken"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/goproxy"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is a Go module proxy (GOPROXY protocol) with a tiered cache.
type Handler struct {
	// Upstream is a GOPROXY-style list of sources: proxy URLs, "direct"
	// and "off", separated by ',' (fall through on 404/410) or '|' (fall
	// through on any error). Default: https://proxy.golang.org.
	Upstream string `json:"upstream,omitempty"`

	// TiersRaw are the cache tiers, fastest first and the tier of record
	// (a disk or a bucket) last: guest modules of the namespace
	// goproxy.tiers. A disk above a bucket is a local copy. Default:
	// memory (8MiB) and disk (goproxy under Caddy's data directory).
	TiersRaw []json.RawMessage `json:"tiers,omitempty" caddy:"namespace=goproxy.tiers inline_key=tier"`

	// ListTTL is how long list and @latest answers stay fresh. Default 1m.
	ListTTL caddy.Duration `json:"list_ttl,omitempty"`
	// NotFoundTTL is how long an upstream 404/410 is remembered. Default 30s.
	NotFoundTTL caddy.Duration `json:"not_found_ttl,omitempty"`
	// FetchTimeout bounds one upstream fetch, body included, and the wait
	// for another node's fetch. Default 5m.
	FetchTimeout caddy.Duration `json:"fetch_timeout,omitempty"`
	// DialTimeout bounds connecting to an upstream proxy or checksum
	// database (TCP, then TLS). Default 10s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`
	// ResponseHeaderTimeout bounds the wait for an upstream's headers.
	// Default 1m.
	ResponseHeaderTimeout caddy.Duration `json:"response_header_timeout,omitempty"`
	// SumDBTimeout bounds one read from a checksum database. Default 30s.
	SumDBTimeout caddy.Duration `json:"sumdb_timeout,omitempty"`
	// UpstreamRedirects is "follow" (the default: redirects to other hosts,
	// such as a CDN, are followed as the go command follows them, without
	// credentials and never from https to http, but never to a loopback,
	// private or link-local address other than a configured upstream's
	// own), "same_host", or "allow_private" (follow, private addresses
	// too).
	UpstreamRedirects string `json:"upstream_redirects,omitempty"`
	// MaxConnsPerHost caps the connections to one upstream host; more
	// requests wait for a free one. Default 64.
	MaxConnsPerHost int `json:"max_conns_per_host,omitempty"`
	// MaxFetches caps the fetches from upstream (proxies and direct)
	// running at once; more wait. Default 256.
	MaxFetches int `json:"max_fetches,omitempty"`
	// SpoolMax caps the bytes of fetched bodies being spooled and checked
	// at once; fetches beyond it wait before reading their body.
	// Default 2GiB.
	SpoolMax int64 `json:"spool_max,omitempty"`
	// RedirectLarge, if set, answers a .zip of at least this many bytes
	// held by a tier that pre-signs URLs (s3) with a 302 to a pre-signed
	// URL. Off by default.
	RedirectLarge int64 `json:"redirect_large,omitempty"`
	// RedirectPrivate lets RedirectLarge apply to private modules too.
	RedirectPrivate bool `json:"redirect_private,omitempty"`
	// RedirectTTL is how long a pre-signed URL lasts. Default 5m, at
	// most 7 days.
	RedirectTTL caddy.Duration `json:"redirect_ttl,omitempty"`

	// Private lists module path patterns (GOPRIVATE syntax, e.g.
	// github.com/acme/*) fetched only through PrivateUpstream, and never
	// sent to public upstreams or checksum databases.
	Private []string `json:"private,omitempty"`
	// PrivateUpstream is a GOPROXY-style list for private modules. Default:
	// direct.
	PrivateUpstream string `json:"private_upstream,omitempty"`
	// Direct configures fetching from version control ("direct").
	Direct *DirectConfig `json:"direct,omitempty"`

	// Modes choose per module pattern how a cache miss is answered:
	// sync (fetch and serve, the default), redirect (302 to the first
	// upstream proxy while the cache fills in the background) or offline
	// (serve only what is cached). The first matching rule wins.
	Modes []ModeConfig `json:"modes,omitempty"`

	// SumDBs are the checksum databases proxied under /sumdb/<name>/; the
	// first one also verifies every fetched .mod and .zip. Default:
	// sum.golang.org, through the first upstream proxy when its /supported
	// answers 200, directly when it answers 404 or 410, and not at all
	// (every .mod and .zip refused with 502) while it answers anything else.
	SumDBs []SumDBConfig `json:"sumdbs,omitempty"`
	// SumDBOff turns the default checksum database off: modules are then
	// cached unverified (each one logged at error level).
	SumDBOff bool `json:"sumdb_off,omitempty"`
	// NoVerify lists module path patterns (GONOSUMDB syntax) that are not
	// checked against the checksum database.
	NoVerify []string `json:"no_verify,omitempty"`

	// Prefetch fetches the requirements of each fetched .mod ahead of the
	// go command. Default: mode "selected" with the default limits.
	Prefetch *PrefetchConfig `json:"prefetch,omitempty"`

	// Health answers GET /healthz (200 while the process serves) and
	// /readyz (200, or 503 with the reason: a tier that does not work, a
	// checksum database that cannot be reached).
	Health bool `json:"health,omitempty"`
	// StatusPath serves a status page there (HTML; JSON with
	// ?format=json). The Caddyfile's `status` alone means /-/status.
	StatusPath string `json:"status_path,omitempty"`
	// Catalog answers GET /catalog with the module versions the mirror
	// holds, in Athens' format, paged with ?token= and ?pagesize=.
	Catalog bool `json:"catalog,omitempty"`
	// CatalogPrivate lists private modules in the catalog too.
	CatalogPrivate bool `json:"catalog_private,omitempty"`

	// Policy holds module versions back: the first rule that matches a
	// version decides (a deny refuses it with 403 and its reason, and
	// leaves it out of lists and @latest); none matching allows it.
	Policy []PolicyRuleConfig `json:"policy,omitempty"`
	// Cooldown holds back versions younger than an age, for the modules
	// its patterns match (all when none): left out of lists and @latest,
	// their .info, .mod and .zip refused with 403 and when they become
	// available. A request under /cooldown/<age>/ may ask for a longer one.
	Cooldown []CooldownConfig `json:"cooldown,omitempty"`
	// VulnDB is a Go vulnerability database (https://vuln.go.dev) mirrored
	// under /vuln/, so that GOVULNDB (govulncheck -db) can name the mirror.
	VulnDB string `json:"vulndb,omitempty"`
	// DenyVulnerable refuses the .zip of a version a VulnDB entry affects,
	// for the modules DenyVulnerablePatterns match (all when empty).
	DenyVulnerable         bool     `json:"deny_vulnerable,omitempty"`
	DenyVulnerablePatterns []string `json:"deny_vulnerable_patterns,omitempty"`

	// Access decides who may read which module, from the identity that
	// Caddy's authentication established (see AccessConfig). Without it,
	// every request is answered: access is left to what is in front.
	Access *AccessConfig `json:"access,omitempty"`

	// FleetKey is the secret that every edge of a fleet shares: it signs
	// (HMAC-SHA256) every value an edge writes to Redis or a bucket, and a
	// value whose tag fails it is refused, deleted and logged. Required
	// with a redis or s3 tier; at least 32 bytes, e.g.
	// {env.PIRAEUS_FLEET_KEY}.
	FleetKey string `json:"fleet_key,omitempty"`
	// FleetKeyOld are secrets being retired: values they signed are still
	// accepted, while new ones are signed with FleetKey.
	FleetKeyOld []string `json:"fleet_key_old,omitempty"`

	// Set by Provision.
	ctx    caddy.Context
	mods   []TierModule
	opts   goproxy.Options // checked
	logger *zap.Logger

	// Set by start, once.
	run        *runState
	proxy      *goproxy.Proxy
	tiers      *cachetier.Tiered
	fleet      FleetTierModule // the tier that coordinates a fleet (redis), if any
	stopPurges func()          // ends the fleet's purges reaching this handler
	disk       string          // the local directory of a tier (disk), for sandboxes and metrics
	tokens     *accesstoken.Store
}

// runState is whether a handler has started, and whether it has stopped.
type runState struct {
	mu        sync.Mutex
	started   atomic.Bool
	err       error // of the start, which is not tried again
	cleanedUp bool
}

// PrefetchConfig configures dependency-aware prefetch: when a .mod is
// fetched, the .mod files of its requirements that the go command will
// read are fetched in the background (mode "mod"); with them the .info
// and .zip of the version each client asks first of a module, the one
// its build selects (mode "selected"), or of every requirement too (mode
// "zip"); never delaying a request, and never for private modules unless
// Private.
type PrefetchConfig struct {
	// Mode is off, mod, selected (the default) or zip.
	Mode string `json:"mode,omitempty"`
	// Workers bounds the prefetches running at once. Default 16.
	Workers int `json:"workers,omitempty"`
	// Depth bounds the requirement levels prefetched below a requested
	// .mod. Default 10.
	Depth int `json:"depth,omitempty"`
	// MaxBytes bounds the prefetched bytes no client asked for yet: how
	// far the prefetch runs ahead of the clients. Default 1GiB.
	MaxBytes int64 `json:"max_bytes,omitempty"`
	// FanOut bounds the prefetches one requested .mod may cause, through
	// all the levels below it. Default 1000.
	FanOut int `json:"fan_out,omitempty"`
	// RequestsPerMinute bounds the prefetches sent upstream per minute,
	// failed ones included. Default 12000.
	RequestsPerMinute int `json:"requests_per_minute,omitempty"`
	// Private allows prefetching private modules.
	Private bool `json:"private,omitempty"`
}

// DirectConfig configures fetching from version control with the go
// command. Placeholders such as {env.GIT_TOKEN} are replaced in
// credentials, env values and file names.
type DirectConfig struct {
	// Workers bounds concurrent go commands, for public and for private
	// modules each (two pools). Default 4.
	Workers int `json:"workers,omitempty"`
	// PerHost bounds the concurrent go commands of one pool for modules
	// of one host, so a host that never answers cannot hold every worker.
	// Default 2.
	PerHost int `json:"per_host,omitempty"`
	// Timeout bounds one go command. Default 10m.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// StallTimeout ends a git transfer slower than 1 KiB/s for this long
	// and bounds SSH connects. Default 30s.
	StallTimeout caddy.Duration `json:"stall_timeout,omitempty"`
	// GoBinary is the go command. Default: go on PATH.
	GoBinary string `json:"go_binary,omitempty"`
	// Env adds environment variables for the go command and git.
	Env map[string]string `json:"env,omitempty"`
	// Netrc is a netrc file with credentials for private repositories;
	// fetches of public modules never get it.
	Netrc string `json:"netrc,omitempty"`
	// Credentials are netrc entries given inline, for private modules only.
	Credentials []Credential `json:"credentials,omitempty"`
	// GitConfig is a git config file (url.<base>.insteadOf, credential
	// helpers) used instead of the user's.
	GitConfig string `json:"git_config,omitempty"`
}

// Credential is one netrc machine entry.
type Credential struct {
	Host     string `json:"host"`
	Login    string `json:"login"`
	Password string `json:"password"`
}

// PolicyRuleConfig allows or denies the versions of modules matching
// Pattern (GOPRIVATE syntax) that Versions names: "" for all, a version,
// or comparisons joined by commas (">=v1.0.0,<v1.2.3").
type PolicyRuleConfig struct {
	Pattern  string `json:"pattern"`
	Versions string `json:"versions,omitempty"`
	Deny     bool   `json:"deny,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// CooldownConfig is one cooldown rule.
type CooldownConfig struct {
	Age      caddy.Duration `json:"age"`
	Patterns []string       `json:"patterns,omitempty"`
}

// ModeConfig applies a download mode to modules matching Pattern.
type ModeConfig struct {
	Pattern string `json:"pattern"`
	Mode    string `json:"mode"`
}

// SumDBConfig names a checksum database and where to reach it.
type SumDBConfig struct {
	// Name is a known database name (sum.golang.org) or a verifier key.
	Name string `json:"name"`
	// URL serves the database. Default: the first upstream proxy's
	// /sumdb/<name>, or https://<name> when the first upstream is direct.
	URL string `json:"url,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.goproxy",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision loads the tiers (guest modules) and checks every setting,
// with no side effects: the proxy is assembled when the config starts
// (see App).
func (h *Handler) Provision(ctx caddy.Context) error {
	h.ctx, h.logger, h.run = ctx, ctx.Logger(), new(runState)
	if len(h.TiersRaw) == 0 {
		h.TiersRaw = defaultTiers()
	}
	mods, err := ctx.LoadModule(h, "TiersRaw")
	if err != nil {
		return fmt.Errorf("goproxy: loading tiers: %w", err)
	}
	for _, m := range mods.([]any) {
		h.mods = append(h.mods, m.(TierModule))
	}
	for i, tm := range h.mods {
		last := i == len(h.mods)-1
		rm, ok := tm.(RecordTierModule)
		switch {
		case last && !ok:
			return fmt.Errorf("goproxy: the last tier must keep every object (a disk or s3), not %s", tm.CaddyModule().ID.Name())
		case !last && ok && rm.TierOfRecord():
			return fmt.Errorf("goproxy: the %s tier must be the last, the tier of record", tm.CaddyModule().ID.Name())
		}
	}
	if err := h.provisionFleetKey(); err != nil {
		return err
	}
	if h.opts, err = h.options(); err != nil {
		return err
	}
	if err := h.opts.Check(); err != nil {
		return err
	}
	app, err := ctx.App("goproxy")
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	app.(*App).add(h)
	return nil
}

// provisionFleetKey gives the fleet key to the tiers of shared state,
// which cannot do without it.
func (h *Handler) provisionFleetKey() error {
	var shared []fleetKeyed
	for _, tm := range h.mods {
		if s, ok := tm.(fleetKeyed); ok {
			shared = append(shared, s)
		}
	}
	if len(shared) == 0 {
		return nil
	}
	repl := caddy.NewReplacer()
	secret := repl.ReplaceKnown(h.FleetKey, "")
	if secret == "" {
		given := ""
		if h.FleetKey != "" {
			given = fmt.Sprintf(" (%s is empty here)", h.FleetKey)
		}
		return fmt.Errorf("goproxy: a redis or s3 tier needs fleet_key%s: a secret that every edge of the fleet shares, which signs what they write there; %s", given, fleetkey.Howto)
	}
	secrets := []string{secret}
	for _, old := range h.FleetKeyOld {
		secrets = append(secrets, repl.ReplaceKnown(old, ""))
	}
	k, err := fleetkey.New(secrets...)
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	for _, s := range shared {
		s.useFleetKey(k)
	}
	return nil
}

// start opens the tiers and assembles the proxy, once; Cleanup ends it.
func (h *Handler) start() error {
	run := h.run
	if run.started.Load() {
		return nil
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	switch {
	case run.started.Load():
		return nil
	case run.cleanedUp:
		return errors.New("goproxy: this config has stopped")
	case run.err != nil:
		return run.err
	}
	if run.err = h.open(); run.err != nil {
		return run.err
	}
	run.started.Store(true)
	return nil
}

func (h *Handler) open() error {
	var tiers []cachetier.Tier
	for _, tm := range h.mods {
		t, err := tm.OpenTier()
		if err != nil {
			return err
		}
		tiers = append(tiers, t)
		if m, ok := tm.(FleetTierModule); ok && h.fleet == nil {
			h.fleet = m
		}
		if m, ok := tm.(LocalDirTierModule); ok && h.disk == "" {
			h.disk = m.LocalDir()
		}
	}
	store, ok := tiers[len(tiers)-1].(cachetier.Store)
	if !ok {
		return fmt.Errorf("goproxy: the last tier must keep every object (a disk or s3), not %s", tiers[len(tiers)-1].Name())
	}
	onError := func(tier, op, key string, err error) {
		h.logger.Warn("cache tier failed", zap.String("tier", tier), zap.String("op", op), zap.String("key", key), zap.Error(err))
	}
	h.tiers = cachetier.NewTiered(onError, store, tiers[:len(tiers)-1]...)

	metrics, err := goproxy.NewMetrics(h.ctx.GetMetricsRegistry())
	if err == nil {
		err = goproxy.RegisterTierUsage(h.ctx.GetMetricsRegistry(), h.tiers.Tiers(), h.disk)
	}
	if err != nil {
		return fmt.Errorf("goproxy: metrics: %w", err)
	}
	opts := h.opts
	opts.Cache, opts.Metrics, opts.Logger = h.tiers, metrics, h.logger
	if h.disk != "" {
		opts.SandboxDir = filepath.Join(h.disk, "direct")
	}
	if h.fleet != nil {
		opts.Fleet = h.fleet.OpenedFleet()
	}
	if h.RedirectLarge > 0 && !h.tiers.CanPresign() {
		return fmt.Errorf("goproxy: redirect_large needs a tier that pre-signs URLs (s3)")
	}
	if h.proxy, err = goproxy.New(opts); err != nil {
		return err
	}
	var purge func(context.Context, []string) error
	if opts.Fleet != nil {
		purge = opts.Fleet.Purge
	}
	h.tokens = accesstoken.New(h.tiers, purge, 0)
	if h.fleet != nil {
		h.stopPurges = h.fleet.SubscribePurges(h.forgetPurged)
	}
	register(h)
	return nil
}

// defaultTiers is memory and disk with their defaults.
func defaultTiers() []json.RawMessage {
	return []json.RawMessage{json.RawMessage(`{"tier":"memory"}`), json.RawMessage(`{"tier":"disk"}`)}
}

// options turns the handler's settings into the proxy's, with
// placeholders (credentials, env values, file names) replaced now so that
// they never sit in the config.
func (h *Handler) options() (goproxy.Options, error) {
	o := goproxy.Options{
		Upstream:              h.Upstream,
		Private:               h.Private,
		PrivateUpstream:       h.PrivateUpstream,
		SumDBOff:              h.SumDBOff,
		NoVerify:              h.NoVerify,
		ListTTL:               time.Duration(h.ListTTL),
		NotFoundTTL:           time.Duration(h.NotFoundTTL),
		FetchTimeout:          time.Duration(h.FetchTimeout),
		DialTimeout:           time.Duration(h.DialTimeout),
		ResponseHeaderTimeout: time.Duration(h.ResponseHeaderTimeout),
		SumDBTimeout:          time.Duration(h.SumDBTimeout),
		MaxConnsPerHost:       h.MaxConnsPerHost,
		RedirectLarge:         h.RedirectLarge,
		RedirectPrivate:       h.RedirectPrivate,
		RedirectTTL:           time.Duration(h.RedirectTTL),
		SameHostRedirects:     h.UpstreamRedirects == "same_host",
		AllowPrivateRedirects: h.UpstreamRedirects == "allow_private",
		MaxFetches:            h.MaxFetches,
		SpoolMax:              h.SpoolMax,
		Health:                h.Health,
		StatusPath:            h.StatusPath,
		Catalog:               h.Catalog,
		CatalogPrivate:        h.CatalogPrivate,
	}
	o.VulnDB, o.DenyVulnerable, o.DenyVulnerablePatterns = h.VulnDB, h.DenyVulnerable, h.DenyVulnerablePatterns
	for _, c := range h.Cooldown {
		o.Cooldown = append(o.Cooldown, goproxy.CooldownRule{Age: time.Duration(c.Age), Patterns: c.Patterns})
	}
	for _, r := range h.Policy {
		o.Policy = append(o.Policy, goproxy.PolicyRule{Pattern: r.Pattern, Versions: r.Versions, Deny: r.Deny, Reason: r.Reason})
	}
	if h.Access != nil {
		audit := zap.NewNop()
		if h.logger != nil {
			audit = h.logger.Named("audit")
		}
		o.Access = h.Access.options(audit)
	}
	o.Prefetch = goproxy.PrefetchOptions{Mode: "selected"}
	if c := h.Prefetch; c != nil {
		o.Prefetch = goproxy.PrefetchOptions{Mode: c.Mode, Workers: c.Workers, Depth: c.Depth, MaxBytes: c.MaxBytes,
			FanOut: c.FanOut, RequestsPerMinute: c.RequestsPerMinute, Private: c.Private}
		if o.Prefetch.Mode == "" {
			o.Prefetch.Mode = "selected"
		}
	}
	for _, db := range h.SumDBs {
		o.SumDBs = append(o.SumDBs, goproxy.SumDBOptions{Name: db.Name, URL: db.URL})
	}
	for _, m := range h.Modes {
		o.Modes = append(o.Modes, goproxy.ModeOption{Pattern: m.Pattern, Mode: m.Mode})
	}
	if c := h.Direct; c != nil {
		repl := caddy.NewReplacer()
		netrc, err := c.netrc(repl)
		if err != nil {
			return o, err
		}
		var env []string
		for k, v := range c.Env {
			env = append(env, k+"="+repl.ReplaceKnown(v, ""))
		}
		o.Direct = goproxy.DirectOptions{
			Workers: c.Workers, PerHost: c.PerHost, Timeout: time.Duration(c.Timeout), StallTimeout: time.Duration(c.StallTimeout),
			GoBinary: repl.ReplaceKnown(c.GoBinary, ""), Env: env, Netrc: netrc, GitConfig: repl.ReplaceKnown(c.GitConfig, ""),
		}
	}
	return o, nil
}

// netrc is the netrc file and the inline credentials, as one netrc.
func (c *DirectConfig) netrc(repl *caddy.Replacer) (string, error) {
	var b strings.Builder
	if c.Netrc != "" {
		data, err := os.ReadFile(repl.ReplaceKnown(c.Netrc, ""))
		if err != nil {
			return "", fmt.Errorf("goproxy: direct netrc: %w", err)
		}
		b.Write(data)
		b.WriteString("\n")
	}
	for _, cr := range c.Credentials {
		fmt.Fprintf(&b, "machine %s login %s password %s\n",
			repl.ReplaceKnown(cr.Host, ""), repl.ReplaceKnown(cr.Login, ""), repl.ReplaceKnown(cr.Password, ""))
	}
	return b.String(), nil
}

// Validate checks settings that Provision does not already reject.
// Validate checks what only the module knows; the rules on the proxy's
// values (durations, counts, the prefetch, checksum databases) are
// goproxy.Options.Check's, which Provision has run.
func (h *Handler) Validate() error {
	if h.UpstreamRedirects != "" && h.UpstreamRedirects != "follow" && h.UpstreamRedirects != "same_host" && h.UpstreamRedirects != "allow_private" {
		return fmt.Errorf("goproxy: upstream_redirects %q: want follow, same_host or allow_private", h.UpstreamRedirects)
	}
	return nil
}

// ServeHTTP answers every request it is routed; the GOPROXY protocol owns
// its whole path space, so nothing is passed to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if err := h.start(); err != nil {
		h.logger.Error("goproxy could not start", zap.Error(err))
		http.Error(w, "503 the Go module proxy could not start", http.StatusServiceUnavailable)
		return nil
	}
	if strings.HasSuffix(r.URL.Path, ".zip") {
		defer raiseWriteChunk(w)()
	}
	h.proxy.ServeHTTP(w, r)
	return nil
}

// Bounds of the write chunk raiseWriteChunk sets: a chunk the write idle
// timeout lets a client at slowClientRate receive, at least Caddy's
// default and at most 1 MiB (nginx sends files in chunks of 2 MiB under
// its 60 s send_timeout).
const (
	slowClientRate = 16 << 10 // bytes per second
	maxWriteChunk  = 1 << 20
)

// raiseWriteChunk lets a zip go out in chunks of up to 1 MiB instead of
// Caddy's default 64 KiB, so that a disk hit is sent with a few
// sendfile(2) calls rather than one (and a deadline reset) per 64 KiB, which
// cost about a third of the CPU of serving a 5 MiB zip. Caddy chunks
// writes so that its write idle timeout bounds each chunk rather than the
// whole response; the chunk stays one that a client at 16 KiB/s receives
// within that timeout. Settings the operator chose are left alone: a
// chunk size other than Caddy's default, a minimum write rate, or no idle
// timeout (no chunking at all). The returned function puts Caddy's
// settings back.
func raiseWriteChunk(w http.ResponseWriter) (restore func()) {
	iw := idleTimeoutWriter(w)
	if iw == nil || (iw.MaxChunk != 0 && iw.MaxChunk != caddyhttp.DefaultMaxWriteChunk) || iw.Deadline.MinRate > 0 || iw.Deadline.Timeout <= 0 {
		return func() {}
	}
	chunk := int64(iw.Deadline.Timeout / time.Second * slowClientRate)
	chunk = min(max(chunk, caddyhttp.DefaultMaxWriteChunk), maxWriteChunk)
	return iw.Override(iw.Deadline.Timeout, 0, int(chunk))
}

// idleTimeoutWriter finds Caddy's idle timeout writer among the writers
// that wrap w, or returns nil.
func idleTimeoutWriter(w http.ResponseWriter) *caddyhttp.IdleTimeoutWriter {
	for range 16 {
		switch x := w.(type) {
		case *caddyhttp.IdleTimeoutWriter:
			return x
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// closing counts the proxies of unloaded configs still closing.
var closing sync.WaitGroup

// Cleanup releases what start opened. It does not wait: a reload must not
// hang on the old config's fetches in flight, which may take up to the
// fetch timeout. The proxy closes in the background (letting them finish,
// bounded), and only then are its tiers let go of (and closed when no
// config uses them any more).
func (h *Handler) Cleanup() error {
	run := h.run
	if run == nil {
		return nil // Provision failed before it
	}
	run.mu.Lock()
	run.cleanedUp = true
	started := run.started.Load()
	run.mu.Unlock()
	release := func() {
		for _, m := range h.mods {
			if r, ok := m.(tierReleaser); ok {
				if err := r.releaseTier(); err != nil {
					h.logger.Error("closing a cache tier failed", zap.String("tier", m.CaddyModule().ID.Name()), zap.Error(err))
				}
			}
		}
	}
	if !started {
		release() // what a failed start opened
		return nil
	}
	unregister(h)
	if h.stopPurges != nil {
		h.stopPurges()
	}
	closing.Add(1)
	go func() {
		defer closing.Done()
		h.proxy.Close()
		release()
	}()
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)

// forgetPurged drops keys from the local tiers (memory, disk) and the
// not-found answers of a handler.
func (h *Handler) forgetPurged(keys []string) {
	for _, k := range keys {
		h.tiers.DeleteLocal(context.Background(), k)
	}
	if h.tokens != nil {
		h.tokens.Forget(keys)
	}
	if h.proxy != nil {
		h.proxy.ForgetNotFound(keys)
	}
}
