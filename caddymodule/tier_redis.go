package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"github.com/piraeus-go/piraeus/cachetier/redistier"
	"github.com/piraeus-go/piraeus/fleet"
	"github.com/piraeus-go/piraeus/goproxy"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/redisconn"
)

func init() { caddy.RegisterModule(RedisTier{}) }

// RedisTier shares objects through Redis (a single node, Sentinel or
// Cluster) with every node using the same Redis and key prefix, and
// coordinates those nodes as a fleet: a lock per artifact, hand-over of
// larger objects, shared not-found answers, purges. Placeholders such as
// {env.REDIS_PASSWORD} are replaced.
type RedisTier struct {
	URL        string   `json:"url,omitempty"`
	Addrs      []string `json:"addrs,omitempty"`
	MasterName string   `json:"master_name,omitempty"`
	// Cluster says Addrs (or the URL's address) are the seeds of a Redis
	// Cluster even when there is only one, such as a cluster's
	// configuration endpoint; several addrs without master_name are a
	// Cluster anyway.
	Cluster  bool   `json:"cluster,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	DB       int    `json:"db,omitempty"`
	TLS      bool   `json:"tls,omitempty"`
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
	// FailoverWait is how long the deployment takes to fail over (a
	// Cluster's cluster-node-timeout, a Sentinel's down-after-milliseconds,
	// plus the promotion): for so long after Redis starts failing, an edge
	// that misses waits for it rather than fetch beside the other edges,
	// so that a failover costs a delay, not a fetch per edge. Default 0:
	// go on without Redis at once.
	FailoverWait caddy.Duration `json:"failover_wait,omitempty"`
	// LockTTL is how long a fetch's lock lives unless its edge renews it
	// (every third of it): how soon the fleet takes over the fetches of an
	// edge that died. Default 10s.
	LockTTL caddy.Duration `json:"lock_ttl,omitempty"`

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
	tier  *redistier.Tier
	fleet *fleet.Fleet

	mu        sync.Mutex
	listeners map[int]func(keys []string) // by subscription
	next      int
}

// subscribe has forget called with the keys of every purge from now on,
// until cancel.
func (e *redisEntry) subscribe(forget func(keys []string)) (cancel func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	id := e.next
	e.next++
	e.listeners[id] = forget
	return func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.listeners, id)
	}
}

func (e *redisEntry) onPurge(keys []string) {
	e.mu.Lock()
	ls := make([]func([]string), 0, len(e.listeners))
	for _, l := range e.listeners {
		ls = append(ls, l)
	}
	e.mu.Unlock()
	for _, forget := range ls {
		forget(keys)
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
		r.MaxObject = redistier.DefaultMaxObject
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
		Cluster:    r.Cluster,
		Failover:   time.Duration(r.FailoverWait),
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
	e := &redisEntry{conn: conn, listeners: map[int]func([]string){}}
	if e.tier, err = redistier.New(redistier.Config{Conn: conn, Prefix: prefix, MaxObject: r.MaxObject, Key: r.key, Logger: logger}); err != nil {
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
		LockTTL:      time.Duration(r.LockTTL),
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

// checkAddress is the rule on where Redis is: a URL or addrs, one of
// them, of one kind of deployment. Validate applies it, and the
// Caddyfile's reader too, to say where.
func (r *RedisTier) checkAddress() error {
	switch {
	case r.URL == "" && len(r.Addrs) == 0:
		return errors.New("redis needs a URL or an addrs line")
	case r.URL != "" && len(r.Addrs) > 0:
		return errors.New("redis: give a URL or addrs, not both")
	case r.Cluster && r.MasterName != "":
		return errors.New("redis: cluster and master_name are two kinds of deployment; give one")
	case (r.Cluster || len(r.Addrs) > 1 && r.MasterName == "") && r.DB != 0:
		return errors.New("redis: a Redis Cluster has only db 0")
	}
	return nil
}

func (r *RedisTier) Validate() error {
	if err := r.checkAddress(); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	if r.MaxObject < 0 || r.DB < 0 || r.Timeout < 0 || r.MaxInFlight < 0 || r.FailoverWait < 0 || r.LockTTL < 0 {
		return fmt.Errorf("goproxy: redis max_object, max_in_flight, db, timeout, failover_wait and lock_ttl must not be negative")
	}

	return nil
}

func (r *RedisTier) releaseTier() error { return r.ref.release() }

// OpenedFleet is the fleet of the open tier.
func (r *RedisTier) OpenedFleet() goproxy.Fleet { return r.entry.fleet }

// SubscribePurges has forget called with the keys other edges purge.
func (r *RedisTier) SubscribePurges(forget func(keys []string)) (cancel func()) {
	return r.entry.subscribe(forget)
}

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
//		cluster
//		failover_wait <duration>
//		lock_ttl     <duration>
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
	if err := r.checkAddress(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// unmarshalRedis reads the block of a redis line (see RedisTier).
func unmarshalRedis(d *caddyfile.Dispenser, r *RedisTier) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		switch key {
		case "addrs":
			r.Addrs = append(r.Addrs, d.RemainingArgs()...)
			if len(r.Addrs) == 0 {
				return d.ArgErr()
			}
			if err := r.checkAddress(); err != nil {
				return d.Err(err.Error()) // both given: say so at this line
			}
			continue
		case "tls":
			r.TLS = true
		case "cluster":
			r.Cluster = true
		case "failover_wait", "lock_ttl":
			dst := map[string]*caddy.Duration{"failover_wait": &r.FailoverWait, "lock_ttl": &r.LockTTL}[key]
			if err := parseDuration(d, dst); err != nil {
				return err
			}
			continue
		case "max_object":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if err := parseSize(d, &r.MaxObject); err != nil {
				return err
			}
		case "max_in_flight":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if err := parseSize(d, &r.MaxInFlight); err != nil {
				return err
			}
		case "max_transfer":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				r.MaxTransfer = -1
			} else if err := parseSize(d, &r.MaxTransfer); err != nil {
				return err
			}
		case "timeout":
			if err := parseDuration(d, &r.Timeout); err != nil {
				return err
			}
			continue
		case "db":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("invalid redis db %q", d.Val())
			}
			r.DB = n
		case "master_name", "username", "password", "key_prefix":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dst := map[string]*string{"master_name": &r.MasterName, "username": &r.Username, "password": &r.Password, "key_prefix": &r.KeyPrefix}[key]
			*dst = d.Val()
		default:
			return d.Errf("unknown redis subdirective %q", key)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	return nil
}

// Interface guards
var (
	_ FleetTierModule       = (*RedisTier)(nil)
	_ caddy.Provisioner     = (*RedisTier)(nil)
	_ caddy.Validator       = (*RedisTier)(nil)
	_ caddyfile.Unmarshaler = (*RedisTier)(nil)
)
