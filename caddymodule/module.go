// Package caddymodule registers the GOPROXY handler with Caddy as
// http.handlers.goproxy and the goproxy Caddyfile directive. It holds the
// Caddy glue only; the protocol lives in package goproxy.
package caddymodule

import (
	"context"
	"crypto/sha256"
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

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"golang.org/x/mod/sumdb/note"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/fleet"
	"github.com/piraeus-go/piraeus/goproxy"
	"github.com/piraeus-go/piraeus/internal/redisconn"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults for an empty configuration.
const (
	DefaultUpstream        = "https://proxy.golang.org"
	DefaultMemory          = 128 << 20
	DefaultMemoryMaxObject = 8 << 20
)

// Handler is a Go module proxy (GOPROXY protocol) with a tiered cache.
type Handler struct {
	// Upstream is a GOPROXY-style list of sources: proxy URLs, "direct"
	// and "off", separated by ',' (fall through on 404/410) or '|' (fall
	// through on any error). Default: https://proxy.golang.org.
	Upstream string `json:"upstream,omitempty"`

	// Cache configures the tiers.
	Cache *CacheConfig `json:"cache,omitempty"`

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

	proxy   *goproxy.Proxy
	sumdbs  []*checksumdb.DB
	tiers   *cachetier.Tiered
	poolKey string
	logger  *zap.Logger
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

// CacheConfig configures the cache tiers.
type CacheConfig struct {
	// Memory is the memory tier's budget in bytes. Default 128MiB.
	Memory int64 `json:"memory,omitempty"`
	// MemoryOff disables the memory tier.
	MemoryOff bool `json:"memory_off,omitempty"`
	// MemoryMaxObject is the largest object kept in memory. Default 8MiB.
	MemoryMaxObject int64 `json:"memory_max_object,omitempty"`
	// Disk is the disk tier's directory. Default: goproxy under Caddy's
	// data directory.
	Disk string `json:"disk,omitempty"`
	// DiskMax bounds the disk tier; above it the least recently read
	// objects are removed. Default: unbounded.
	DiskMax int64 `json:"disk_max,omitempty"`
	// Redis, if set, adds a Redis tier between memory and disk, shared by
	// every node that uses the same Redis and key prefix, and collapses
	// fetches across those nodes with a Redis lock.
	Redis *RedisConfig `json:"redis,omitempty"`
}

// RedisConfig configures the Redis tier. Give a URL, or addresses: one for
// a single node, several for Cluster, or Sentinel addresses with a master
// name. Placeholders such as {env.REDIS_PASSWORD} are replaced.
type RedisConfig struct {
	URL        string   `json:"url,omitempty"`
	Addrs      []string `json:"addrs,omitempty"`
	MasterName string   `json:"master_name,omitempty"`
	Username   string   `json:"username,omitempty"`
	Password   string   `json:"password,omitempty"`
	DB         int      `json:"db,omitempty"`
	TLS        bool     `json:"tls,omitempty"`
	// MaxObject is the largest object stored in Redis. Default 8MiB.
	MaxObject int64 `json:"max_object,omitempty"`
	// MaxTransfer is the largest object above MaxObject that an edge hands
	// to the edges waiting on the same fetch through Redis (in chunks that
	// expire after two minutes). Default 256MiB; -1 turns hand-over off.
	MaxTransfer int64 `json:"max_transfer,omitempty"`
	// MaxInFlight bounds the bytes of all hand-overs alive in Redis at
	// once, fleet-wide. Default 256MiB.
	MaxInFlight int64 `json:"max_in_flight,omitempty"`
	// KeyPrefix namespaces the keys. Default: "piraeus:" and a digest of
	// the upstreams, private patterns and verification settings, so that
	// deployments whose answers differ never share objects.
	KeyPrefix string `json:"key_prefix,omitempty"`
	// Timeout bounds one Redis operation. Default 1s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.goproxy",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision opens the tiers and builds the fetcher chain.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	upstream := h.Upstream
	if upstream == "" {
		upstream = DefaultUpstream
	}
	cc := CacheConfig{}
	if h.Cache != nil {
		cc = *h.Cache
	}
	if cc.Disk == "" {
		cc.Disk = filepath.Join(caddy.AppDataDir(), "goproxy")
	}
	// Public and private modules are fetched from version control by
	// separate pools; only the private one has the credentials.
	sandboxes := filepath.Join(cc.Disk, "direct")
	publicDirect, err := h.directFetcher("public", sandboxes, false)
	if err != nil {
		return err
	}
	client := fetcher.NewHTTPClient(h.httpConfig())
	chain, err := fetcher.ParseList(upstream, client, publicDirect)
	if err != nil {
		return fmt.Errorf("goproxy: upstream: %w", err)
	}
	var source fetcher.Fetcher = chain
	private, err := artifact.ParsePatterns(h.Private...)
	if err != nil {
		return fmt.Errorf("goproxy: private: %w", err)
	}
	noVerify, err := artifact.ParsePatterns(h.NoVerify...)
	if err != nil {
		return fmt.Errorf("goproxy: verify off: %w", err)
	}
	if !private.Empty() {
		list := h.PrivateUpstream
		if list == "" {
			list = "direct"
		}
		privateDirect, err := h.directFetcher("private", sandboxes, true)
		if err != nil {
			return err
		}
		privateChain, err := fetcher.ParseList(list, client, privateDirect)
		if err != nil {
			return fmt.Errorf("goproxy: private_upstream: %w", err)
		}
		source = &fetcher.Router{Patterns: private, Private: privateChain, Public: chain}
	}
	if !cc.MemoryOff {
		if cc.Memory == 0 {
			cc.Memory = DefaultMemory
		}
		if cc.MemoryMaxObject == 0 {
			cc.MemoryMaxObject = DefaultMemoryMaxObject
		}
	}
	if cc.Redis != nil && cc.Redis.KeyPrefix == "" {
		// Deployments whose answers differ never share Redis objects.
		r := *cc.Redis
		r.KeyPrefix = h.derivedPrefix(upstream)
		cc.Redis = &r
	}
	// The tiers outlive this config: a reload with the same cache settings
	// gets the same open tiers (warm memory, live Redis connections), and
	// requests still in flight on the old config keep working.
	keyJSON, err := json.Marshal(cc)
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	h.poolKey = string(keyJSON)
	poolKey := h.poolKey
	val, _, err := tierPool.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		return openTiers(cc, h.logger, func(keys []string) { forgetNotFound(poolKey, keys) })
	})
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	shared := val.(*sharedTiers)
	h.tiers = shared.tiers
	disk := shared.disk
	metrics, err := goproxy.NewMetrics(ctx.GetMetricsRegistry())
	if err == nil {
		err = goproxy.RegisterTierUsage(ctx.GetMetricsRegistry(), h.tiers.Tiers(), disk.Root())
	}
	if err != nil {
		return fmt.Errorf("goproxy: metrics: %w", err)
	}
	sumdbs, err := h.sumDBs(chain, metrics)
	if err != nil {
		return err
	}
	h.sumdbs = sumdbs
	var verifier *checksumdb.DB
	if len(sumdbs) > 0 {
		verifier = sumdbs[0]
	}
	var modes []goproxy.ModeRule
	for _, m := range h.Modes {
		mode, err := goproxy.ParseMode(m.Mode)
		if err != nil {
			return fmt.Errorf("goproxy: %w", err)
		}
		pats, err := artifact.ParsePatterns(m.Pattern)
		if err != nil {
			return fmt.Errorf("goproxy: mode: %w", err)
		}
		modes = append(modes, goproxy.ModeRule{Patterns: pats, Mode: mode})
	}
	redirectBase := chain.FirstProxyURL()
	if u, err := url.Parse(redirectBase); err == nil && u.User != nil {
		redirectBase = "" // never send clients an upstream's credentials
	}
	h.proxy, err = goproxy.New(goproxy.Config{
		Modes:        modes,
		RedirectBase: redirectBase,
		Metrics:      metrics,
		Fetcher:      source,
		Private:      private,
		SumDBs:       sumdbs,
		Verifier:     verifier,
		NoVerify:     noVerify,
		Fleet:        shared.fleet,
		Tiers:        h.tiers,
		ListTTL:      time.Duration(h.ListTTL),
		NotFoundTTL:  time.Duration(h.NotFoundTTL),
		FetchTimeout: time.Duration(h.FetchTimeout),
		MaxFetches:   h.MaxFetches,
		SpoolMax:     h.SpoolMax,
		Logger:       h.logger,
	})
	if err != nil {
		return err
	}
	register(h)
	h.logVerification(verifier, private, noVerify)
	h.logger.Info("goproxy ready", zap.String("upstream", upstream), zap.String("disk", disk.Root()),
		zap.Int64("memory", cc.Memory), zap.Bool("memory_off", cc.MemoryOff), zap.Bool("redis", cc.Redis != nil))
	return nil
}

// directFetcher builds the fetcher for the "direct" entries of the public
// or the private chain, sandboxed under dir. Only the private one gets the
// credentials, with placeholders replaced now so that they never sit in
// the config.
func (h *Handler) directFetcher(name, dir string, withCredentials bool) (*fetcher.DirectFetcher, error) {
	c := h.Direct
	if c == nil {
		c = new(DirectConfig)
	}
	repl := caddy.NewReplacer()
	var netrc string
	if withCredentials {
		var err error
		if netrc, err = c.netrc(repl); err != nil {
			return nil, err
		}
	}
	var env []string
	for k, v := range c.Env {
		env = append(env, k+"="+repl.ReplaceKnown(v, ""))
	}
	d, err := fetcher.NewDirectFetcher(fetcher.DirectConfig{
		Name:         name,
		Workers:      c.Workers,
		PerHost:      c.PerHost,
		Timeout:      time.Duration(c.Timeout),
		StallTimeout: time.Duration(c.StallTimeout),
		GoBinary:     repl.ReplaceKnown(c.GoBinary, ""),
		Env:          env,
		Netrc:        netrc,
		GitConfig:    repl.ReplaceKnown(c.GitConfig, ""),
		SandboxDir:   dir,
	})
	if err != nil {
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	return d, nil
}

func (h *Handler) httpConfig() fetcher.HTTPConfig {
	return fetcher.HTTPConfig{
		MaxConnsPerHost: h.MaxConnsPerHost,
		DialTimeout:     time.Duration(h.DialTimeout),
		HeaderTimeout:   time.Duration(h.ResponseHeaderTimeout),
	}
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

// sumDBs opens the configured checksum databases, or the default one:
// sum.golang.org, as the go command has it, unless "sumdb off".
func (h *Handler) sumDBs(chain *fetcher.Chain, metrics *goproxy.Metrics) ([]*checksumdb.DB, error) {
	configs := h.SumDBs
	if len(configs) == 0 && !h.SumDBOff {
		configs = []SumDBConfig{{Name: "sum.golang.org"}}
	}
	var dbs []*checksumdb.DB
	for _, c := range configs {
		url, probe := c.URL, false
		if url == "" {
			// Like the go command: through the first proxy if it
			// proxies the database (a 404 from its /supported says it
			// does not), else straight to it.
			name := c.Name
			if v, err := note.NewVerifier(c.Name); err == nil {
				name = v.Name()
			}
			if base := chain.FirstProxyURL(); base != "" {
				url, probe = strings.TrimSuffix(base, "/")+"/sumdb/"+name, true
			} else {
				url = "https://" + name
			}
		}
		db, err := checksumdb.New(checksumdb.Config{
			NameOrKey: c.Name,
			URL:       url,
			Probe:     probe,
			Client:    fetcher.NewHTTPClient(h.httpConfig()),
			Timeout:   time.Duration(h.SumDBTimeout),
			Tiers:     h.tiers,
			Logger:    h.logger.Named("sumdb"),
			OnState:   metrics.SumDBState,
		})
		if err != nil {
			closeDBs(dbs)
			return nil, fmt.Errorf("goproxy: %w", err)
		}
		dbs = append(dbs, db)
	}
	return dbs, nil
}

func closeDBs(dbs []*checksumdb.DB) {
	for _, db := range dbs {
		db.Close()
	}
}

// logVerification says once, at start, what verifies which modules.
func (h *Handler) logVerification(verifier *checksumdb.DB, private, noVerify artifact.Patterns) {
	if verifier == nil {
		h.logger.Error("no checksum database (sumdb off): every fetched module is cached unverified")
		return
	}
	h.logger.Info("checksum database verifies every fetched .mod and .zip",
		zap.String("sumdb", verifier.Name()), zap.String("url", verifier.URL()),
		zap.String("except_private", private.String()), zap.String("except_verify_off", noVerify.String()))
}

// derivedPrefix is the default Redis key prefix: a digest of what makes
// this deployment's answers differ from another's (upstreams, private
// modules and their source, checksum databases, what is not verified),
// so that two deployments sharing one Redis never serve each other's
// objects.
func (h *Handler) derivedPrefix(upstream string) string {
	id, _ := json.Marshal([]any{upstream, h.Private, h.PrivateUpstream, h.SumDBs, h.SumDBOff, h.NoVerify})
	sum := sha256.Sum256(id)
	return "piraeus:" + hex.EncodeToString(sum[:6]) + ":"
}

func openRedis(c *RedisConfig, logger *zap.Logger) (*redisconn.Conn, error) {
	repl := caddy.NewReplacer()
	addrs := make([]string, len(c.Addrs))
	for i, a := range c.Addrs {
		addrs[i] = repl.ReplaceKnown(a, "")
	}
	return redisconn.Open(redisconn.Config{
		URL:        repl.ReplaceKnown(c.URL, ""),
		Addrs:      addrs,
		MasterName: repl.ReplaceKnown(c.MasterName, ""),
		Username:   repl.ReplaceKnown(c.Username, ""),
		Password:   repl.ReplaceKnown(c.Password, ""),
		DB:         c.DB,
		TLS:        c.TLS,
		Timeout:    time.Duration(c.Timeout),
		Logger:     logger.Named("redis"),
	})
}

// Validate checks settings that Provision does not already reject.
func (h *Handler) Validate() error {
	if h.SumDBOff && len(h.SumDBs) > 0 {
		return fmt.Errorf("goproxy: sumdb off and a sumdb given")
	}
	if h.ListTTL < 0 || h.NotFoundTTL < 0 || h.FetchTimeout < 0 || h.DialTimeout < 0 || h.ResponseHeaderTimeout < 0 || h.SumDBTimeout < 0 {
		return fmt.Errorf("goproxy: durations must not be negative")
	}
	if h.MaxConnsPerHost < 0 || h.MaxFetches < 0 || h.SpoolMax < 0 {
		return fmt.Errorf("goproxy: max_conns_per_host, max_fetches and spool_max must not be negative")
	}
	if c := h.Cache; c != nil && (c.Memory < 0 || c.MemoryMaxObject < 0) {
		return fmt.Errorf("goproxy: cache sizes must not be negative")
	}
	if r := h.Cache; r != nil && r.Redis != nil {
		if (r.Redis.URL == "") == (len(r.Redis.Addrs) == 0) {
			return fmt.Errorf("goproxy: redis needs a url or addrs, not both")
		}
		if r.Redis.MaxObject < 0 || r.Redis.DB < 0 || r.Redis.Timeout < 0 {
			return fmt.Errorf("goproxy: redis max_object, db and timeout must not be negative")
		}
	}
	return nil
}

// ServeHTTP answers every request it is routed; the GOPROXY protocol owns
// its whole path space, so nothing is passed to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.proxy.ServeHTTP(w, r)
	return nil
}

// Cleanup releases this config's hold on the tiers; they are closed when
// no loaded config uses them any more.
func (h *Handler) Cleanup() error {
	unregister(h)
	if h.proxy != nil {
		h.proxy.Close()
	}
	closeDBs(h.sumdbs)
	if h.poolKey != "" {
		_, err := tierPool.Delete(h.poolKey)
		return err
	}
	return nil
}

// tierPool holds open tiers across config reloads, keyed by their config.
var tierPool = caddy.NewUsagePool()

// sharedTiers are the open tiers of one cache config, and the fleet
// coordination on their Redis.
type sharedTiers struct {
	tiers *cachetier.Tiered
	disk  *cachetier.DiskTier
	conn  *redisconn.Conn
	fleet *fleet.Fleet
}

func (s *sharedTiers) Destruct() error {
	var errs []error
	if s.fleet != nil {
		errs = append(errs, s.fleet.Close())
	}
	errs = append(errs, s.tiers.Close())
	if s.conn != nil {
		errs = append(errs, s.conn.Close())
	}
	return errors.Join(errs...)
}

// redisKeyVersion is bumped when the layout of Redis values changes, so
// that nodes of different versions sharing one Redis do not read each
// other's values.
const redisKeyVersion = "v2:"

// openTiers opens the tiers of cc, and the fleet on their Redis, which
// applies other nodes' purges to these tiers and to the not-found answers
// that forgetNotFound reaches.
func openTiers(cc CacheConfig, logger *zap.Logger, forgetNotFound func(keys []string)) (*sharedTiers, error) {
	onError := func(tier, op, key string, err error) {
		logger.Warn("cache tier failed", zap.String("tier", tier), zap.String("op", op), zap.String("key", key), zap.Error(err))
	}
	disk, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: cc.Disk, MaxBytes: cc.DiskMax, Logger: logger.Named("disk")})
	if err != nil {
		return nil, err
	}
	s := &sharedTiers{disk: disk}
	var upper []cachetier.Tier
	if !cc.MemoryOff {
		mem, err := cachetier.NewMemoryTier(cc.Memory, cc.MemoryMaxObject)
		if err != nil {
			disk.Close()
			return nil, err
		}
		upper = append(upper, mem)
	}
	var prefix string
	if cc.Redis != nil {
		if s.conn, err = openRedis(cc.Redis, logger); err != nil {
			closeAll(append(upper, disk))
			return nil, err
		}
		prefix = cc.Redis.KeyPrefix + redisKeyVersion
		upper = append(upper, cachetier.NewRedisTier(cachetier.RedisConfig{
			Conn: s.conn, Prefix: prefix, MaxObject: cc.Redis.MaxObject, Logger: logger.Named("redis"),
		}))
	}
	s.tiers = cachetier.NewTiered(onError, disk, upper...)
	if cc.Redis != nil {
		s.fleet, err = fleet.New(fleet.Config{
			Conn:         s.conn,
			Prefix:       prefix,
			MaxTransfer:  cc.Redis.MaxTransfer,
			MaxInFlight:  cc.Redis.MaxInFlight,
			PositionFile: filepath.Join(disk.Root(), "fleet-purges"),
			OnPurge: func(keys []string) {
				for _, k := range keys {
					s.tiers.DeleteLocal(context.Background(), k)
				}
				forgetNotFound(keys)
			},
			Logger: logger.Named("fleet"),
		})
		if err != nil {
			s.tiers.Close()
			s.conn.Close()
			return nil, err
		}
	}
	return s, nil
}

func closeAll(tiers []cachetier.Tier) {
	for _, t := range tiers {
		t.Close()
	}
}

// forgetNotFound drops keys, which another node purged, from the
// not-found answers of the handlers using the tiers of poolKey.
func forgetNotFound(poolKey string, keys []string) {
	live.Lock()
	defer live.Unlock()
	for h := range live.handlers {
		if h.poolKey == poolKey && h.proxy != nil {
			h.proxy.ForgetNotFound(keys)
		}
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
