package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/fleet"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/redisconn"
)

func init() {
	caddy.RegisterModule(MemoryTier{})
	caddy.RegisterModule(RedisTier{})
	caddy.RegisterModule(DiskTier{})
}

// TierModule is a guest module of the namespace goproxy.tiers. Its
// Provision checks the settings only, so that `caddy validate` and
// `caddy adapt --validate` make no directory and dial nothing; OpenTier,
// called when a config that uses the tier starts, opens the tier (the
// built-in ones share it through a pool with every config that names the
// same tier, so that a reload keeps it warm and two configs never run two
// of one tier).
type TierModule interface {
	caddy.Module
	OpenTier() (cachetier.Tier, error)
}

// tierReleaser is a built-in tier module, which the handler lets go of
// when its proxy has closed: after the config's Cleanup, once the fetches
// that its requests started have ended, never under them.
type tierReleaser interface {
	releaseTier() error
}

// tierPool holds open tiers across config reloads, keyed by tier identity.
var tierPool = caddy.NewUsagePool()

// poolRef is a tier module's hold on a pooled tier: taken by open, given
// back by release, both at most once.
type poolRef struct {
	key    string
	tier   *pooledTier
	opened bool
}

func (p *poolRef) open(construct func() (*pooledTier, error)) (*pooledTier, error) {
	if p.opened {
		return p.tier, nil
	}
	val, _, err := tierPool.LoadOrNew(p.key, func() (caddy.Destructor, error) { return construct() })
	if err != nil {
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	p.tier, p.opened = val.(*pooledTier), true
	return p.tier, nil
}

func (p *poolRef) release() error {
	if !p.opened {
		return nil
	}
	p.opened, p.tier = false, nil
	_, err := tierPool.Delete(p.key)
	return err
}

type pooledTier struct {
	tier    cachetier.Tier
	redis   *redisEntry // for a Redis tier
	destroy func() error
}

func (p *pooledTier) Destruct() error { return p.destroy() }

// DefaultMemory and DefaultMemoryMaxObject size the memory tier.
const (
	DefaultMemory = 32 << 20
	// DefaultMemoryMaxObject keeps the small objects in memory (.info,
	// .mod, lists, checksum database tiles and small zips); larger zips are
	// read from disk through the page cache.
	DefaultMemoryMaxObject = 256 << 10
)

// MemoryTier keeps small objects in memory (ristretto; cost in bytes).
// One memory tier is shared by the configs with the same sizes.
type MemoryTier struct {
	// Max is the budget in bytes. Default 32MiB.
	Max int64 `json:"max,omitempty"`
	// MaxObject is the largest object kept. Default 256KiB.
	MaxObject int64 `json:"max_object,omitempty"`

	ref    poolRef
	logger *zap.Logger
}

func (MemoryTier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "goproxy.tiers.memory", New: func() caddy.Module { return new(MemoryTier) }}
}

func (m *MemoryTier) Provision(ctx caddy.Context) error {
	if m.Max == 0 {
		m.Max = DefaultMemory
	}
	if m.MaxObject == 0 {
		m.MaxObject = DefaultMemoryMaxObject
	}
	m.ref.key = fmt.Sprintf("memory:%d:%d", m.Max, m.MaxObject)
	m.logger = ctx.Logger()
	return nil
}

func (m *MemoryTier) Validate() error {
	if m.Max < 0 || m.MaxObject < 0 {
		return fmt.Errorf("goproxy: memory tier sizes must not be negative")
	}
	return nil
}

// OpenTier opens the memory tier, whose contents the soft memory limit
// then counts.
func (m *MemoryTier) OpenTier() (cachetier.Tier, error) {
	p, err := m.ref.open(func() (*pooledTier, error) {
		t, err := cachetier.NewMemoryTier(m.Max, m.MaxObject)
		if err != nil {
			return nil, err
		}
		key, logger := m.ref.key, m.logger
		trackMemoryTier(key, func() int64 { _, n := t.Usage(); return n }, logger)
		return &pooledTier{tier: t, destroy: func() error {
			trackMemoryTier(key, nil, logger)
			return t.Close()
		}}, nil
	})
	if err != nil {
		return nil, err
	}
	return p.tier, nil
}

func (m *MemoryTier) releaseTier() error { return m.ref.release() }

// UnmarshalCaddyfile reads `memory <size>|off [{ max_object <size> }]`.
// (`off` is handled by the cache block.)
func (m *MemoryTier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "memory"
	if !d.NextArg() {
		return d.ArgErr()
	}
	if err := parseSize(d, &m.Max); err != nil {
		return err
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(d.Nesting()) {
		if d.Val() != "max_object" || !d.NextArg() {
			return d.Errf("want: max_object <size>")
		}
		if err := parseSize(d, &m.MaxObject); err != nil {
			return err
		}
	}
	return nil
}

// DiskTier keeps every object in files under a directory: the tier of
// record. One disk tier runs per directory, whatever else differs.
type DiskTier struct {
	// Root is the directory. Default: goproxy under Caddy's data directory.
	Root string `json:"root,omitempty"`
	// Max bounds what the tier uses, directories included; above it the
	// least recently read objects are removed. Default: unbounded.
	Max int64 `json:"max,omitempty"`

	ref    poolRef
	logger *zap.Logger
}

func (DiskTier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "goproxy.tiers.disk", New: func() caddy.Module { return new(DiskTier) }}
}

func (t *DiskTier) Provision(ctx caddy.Context) error {
	if t.Root == "" {
		t.Root = filepath.Join(caddy.AppDataDir(), "goproxy")
	}
	root, err := filepath.Abs(caddy.NewReplacer().ReplaceKnown(t.Root, ""))
	if err != nil {
		return fmt.Errorf("goproxy: disk tier: %w", err)
	}
	t.Root = root
	t.ref.key = "disk:" + root
	t.logger = ctx.Logger()
	return nil
}

func (t *DiskTier) Validate() error {
	if t.Max < 0 {
		return fmt.Errorf("goproxy: disk tier max must not be negative")
	}
	return nil
}

// OpenTier makes the directory and opens the tier in it.
func (t *DiskTier) OpenTier() (cachetier.Tier, error) {
	p, err := t.ref.open(func() (*pooledTier, error) {
		d, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: t.Root, MaxBytes: t.Max, Logger: t.logger})
		if err != nil {
			return nil, err
		}
		return &pooledTier{tier: d, destroy: d.Close}, nil
	})
	if err != nil {
		return nil, err
	}
	// The newest config's bound holds (a reload may change it).
	d := p.tier.(*cachetier.DiskTier)
	return d, d.SetMaxBytes(t.Max)
}

func (t *DiskTier) releaseTier() error { return t.ref.release() }

// UnmarshalCaddyfile reads `disk <dir> [{ max <size> }]`.
func (t *DiskTier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "disk"
	if !d.NextArg() {
		return d.ArgErr()
	}
	t.Root = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(d.Nesting()) {
		if d.Val() != "max" || !d.NextArg() {
			return d.Errf("want: max <size>")
		}
		if err := parseSize(d, &t.Max); err != nil {
			return err
		}
	}
	return nil
}

// RedisTier shares objects through Redis (a single node, Sentinel or
// Cluster) with every node using the same Redis and key prefix, and
// coordinates those nodes as a fleet: a lock per artifact, hand-over of
// larger objects, shared not-found answers, purges. Placeholders such as
// {env.REDIS_PASSWORD} are replaced.
type RedisTier struct {
	URL        string   `json:"url,omitempty"`
	Addrs      []string `json:"addrs,omitempty"`
	MasterName string   `json:"master_name,omitempty"`
	Username   string   `json:"username,omitempty"`
	Password   string   `json:"password,omitempty"`
	DB         int      `json:"db,omitempty"`
	TLS        bool     `json:"tls,omitempty"`
	// MaxObject is the largest object stored in Redis. Default 8MiB.
	MaxObject int64 `json:"max_object,omitempty"`
	// MaxTransfer is the largest object above MaxObject that an edge
	// hands to the edges waiting for it through Redis (in chunks that
	// expire after two minutes). Default 256MiB; -1 turns hand-over off.
	MaxTransfer int64 `json:"max_transfer,omitempty"`
	// MaxInFlight bounds the bytes of all hand-overs alive in Redis at
	// once, fleet-wide. Default 256MiB.
	MaxInFlight int64 `json:"max_in_flight,omitempty"`
	// KeyPrefix namespaces the keys. Default "piraeus:". Every key also
	// holds a digest of the deployment's upstreams, private patterns and
	// verification settings, so deployments whose answers differ never
	// share objects even under one prefix.
	KeyPrefix string `json:"key_prefix,omitempty"`
	// Timeout bounds one Redis operation. Default 1s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	ref    poolRef
	key    *fleetkey.Key // the handler's fleet_key
	entry  *redisEntry   // once open
	logger *zap.Logger
}

// redisEntry is what one Redis configuration opens: the connection, the
// tier on it, and the fleet, which applies other nodes' purges to the
// local tiers of every config that uses it.
type redisEntry struct {
	conn  *redisconn.Conn
	tier  *cachetier.RedisTier
	fleet *fleet.Fleet

	mu        sync.Mutex
	listeners map[purgeListener]struct{}
}

// purgeListener drops keys another node purged from what it holds.
type purgeListener interface {
	forgetPurged(keys []string)
}

func (e *redisEntry) listen(l purgeListener, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if on {
		e.listeners[l] = struct{}{}
	} else {
		delete(e.listeners, l)
	}
}

func (e *redisEntry) onPurge(keys []string) {
	e.mu.Lock()
	ls := make([]purgeListener, 0, len(e.listeners))
	for l := range e.listeners {
		ls = append(ls, l)
	}
	e.mu.Unlock()
	for _, l := range ls {
		l.forgetPurged(keys)
	}
}

// redisKeyVersion is bumped when the layout of Redis values changes, so
// that nodes of different versions sharing one Redis do not read each
// other's values.
const redisKeyVersion = "v3:"

// DefaultRedisKeyPrefix is the default for RedisTier.KeyPrefix.
const DefaultRedisKeyPrefix = "piraeus:"

func (RedisTier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "goproxy.tiers.redis", New: func() caddy.Module { return new(RedisTier) }}
}

func (r *RedisTier) Provision(ctx caddy.Context) error {
	if r.KeyPrefix == "" {
		r.KeyPrefix = DefaultRedisKeyPrefix
	}
	if r.MaxObject == 0 {
		r.MaxObject = cachetier.DefaultRedisMaxObject
	}
	id, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	r.ref.key = "redis:" + string(id)
	r.logger = ctx.Logger()
	return nil
}

// OpenTier connects to Redis and joins the fleet.
func (r *RedisTier) OpenTier() (cachetier.Tier, error) {
	p, err := r.ref.open(func() (*pooledTier, error) { return r.open(r.logger) })
	if err != nil {
		return nil, err
	}
	r.entry = p.redis
	return r.entry.tier, nil
}

func (r *RedisTier) open(logger *zap.Logger) (*pooledTier, error) {
	repl := caddy.NewReplacer()
	addrs := make([]string, len(r.Addrs))
	for i, a := range r.Addrs {
		addrs[i] = repl.ReplaceKnown(a, "")
	}
	conn, err := redisconn.Open(redisconn.Config{
		URL:        repl.ReplaceKnown(r.URL, ""),
		Addrs:      addrs,
		MasterName: repl.ReplaceKnown(r.MasterName, ""),
		Username:   repl.ReplaceKnown(r.Username, ""),
		Password:   repl.ReplaceKnown(r.Password, ""),
		DB:         r.DB,
		TLS:        r.TLS,
		Timeout:    time.Duration(r.Timeout),
		Logger:     logger,
	})
	if err != nil {
		return nil, err
	}
	prefix := r.KeyPrefix + redisKeyVersion
	e := &redisEntry{conn: conn, listeners: map[purgeListener]struct{}{}}
	if e.tier, err = cachetier.NewRedisTier(cachetier.RedisConfig{Conn: conn, Prefix: prefix, MaxObject: r.MaxObject, Key: r.key, Logger: logger}); err != nil {
		conn.Close()
		return nil, err
	}
	e.fleet, err = fleet.New(fleet.Config{
		Key:          r.key,
		Conn:         conn,
		Prefix:       prefix,
		PositionFile: r.positionFile(),
		MinTransfer:  r.MaxObject,
		MaxTransfer:  r.MaxTransfer,
		MaxInFlight:  r.MaxInFlight,
		OnPurge:      e.onPurge,
		Logger:       logger.Named("fleet"),
	})
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &pooledTier{
		tier:  e.tier,
		redis: e,
		destroy: func() error {
			e.fleet.Close()
			return conn.Close()
		},
	}, nil
}

// positionFile is where this process keeps the last purge of the fleet it
// applied, so that a restart applies only the purges it missed: under
// Caddy's data directory, named by the Redis and key prefix it follows
// (not by other settings, which a reload may change).
func (r *RedisTier) positionFile() string {
	id := sha256.Sum256([]byte(strings.Join([]string{r.URL, strings.Join(r.Addrs, ","), r.MasterName,
		strconv.Itoa(r.DB), r.KeyPrefix + redisKeyVersion}, "\x00")))
	return filepath.Join(caddy.AppDataDir(), "goproxy-fleet", hex.EncodeToString(id[:8])+".position")
}

func (r *RedisTier) Validate() error {
	switch {
	case r.URL == "" && len(r.Addrs) == 0:
		return fmt.Errorf("goproxy: redis needs a url or addrs")
	case r.URL != "" && len(r.Addrs) > 0:
		return fmt.Errorf("goproxy: redis: give a url or addrs, not both")
	}
	if r.MaxObject < 0 || r.DB < 0 || r.Timeout < 0 || r.MaxInFlight < 0 {
		return fmt.Errorf("goproxy: redis max_object, max_in_flight, db and timeout must not be negative")
	}
	return nil
}

func (r *RedisTier) releaseTier() error { return r.ref.release() }

// fleetKeyed is a tier module of state that the edges of a fleet share,
// whose values are signed with the handler's fleet_key.
type fleetKeyed interface {
	useFleetKey(k *fleetkey.Key)
}

func (r *RedisTier) useFleetKey(k *fleetkey.Key) {
	r.key = k
	r.ref.key += "|fleet_key:" + k.ID()
}

// UnmarshalCaddyfile reads:
//
//	redis [<url>] {
//		addrs        <host:port>...
//		master_name  <name>
//		username     <user>
//		password     <password>
//		db           <n>
//		tls
//		max_object   <size>
//		max_transfer <size>|off
//		max_in_flight <size>
//		key_prefix   <prefix>
//		timeout      <duration>
//	}
func (r *RedisTier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "redis"
	if d.NextArg() {
		r.URL = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if err := unmarshalRedis(d, r); err != nil {
		return err
	}
	if r.URL == "" && len(r.Addrs) == 0 {
		return d.Err("redis needs a URL or an addrs line")
	}
	return nil
}

// forgetPurged drops keys from the local tiers (memory, disk) and the
// not-found answers of a handler.
func (h *Handler) forgetPurged(keys []string) {
	for _, k := range keys {
		h.tiers.DeleteLocal(context.Background(), k)
	}
	if h.proxy != nil {
		h.proxy.ForgetNotFound(keys)
	}
}

// Interface guards
var (
	_ TierModule            = (*MemoryTier)(nil)
	_ TierModule            = (*DiskTier)(nil)
	_ TierModule            = (*RedisTier)(nil)
	_ caddy.Provisioner     = (*RedisTier)(nil)
	_ caddy.Validator       = (*RedisTier)(nil)
	_ caddyfile.Unmarshaler = (*MemoryTier)(nil)
	_ caddyfile.Unmarshaler = (*DiskTier)(nil)
	_ caddyfile.Unmarshaler = (*RedisTier)(nil)
)
