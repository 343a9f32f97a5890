// Package redisconn opens the Redis connection that the Redis tier and the
// fleet coordination share: one go-redis UniversalClient (a single node,
// Sentinel or Cluster) with bounded timeouts, and a circuit breaker that
// stops asking Redis for a while after consecutive failures, so a dead
// Redis costs a bounded delay. It sets no process-wide go-redis state.
package redisconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/piraeus-go/piraeus/internal/breaker"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultTimeout bounds one Redis operation when Config.Timeout is zero.
const DefaultTimeout = time.Second

// Config says how to reach Redis: a URL, or addresses (one for a single
// node, several for Cluster, or Sentinels with a MasterName).
type Config struct {
	URL        string // redis://[user:password@]host:port/db or rediss://
	Addrs      []string
	MasterName string
	// Cluster says Addrs are the seeds of a Redis Cluster even when there
	// is only one (a cluster's configuration endpoint); several Addrs
	// without a MasterName are a Cluster anyway.
	Cluster  bool
	Username string
	Password string
	DB       int
	TLS      bool
	Timeout  time.Duration // bound on one operation
	// Failover is how long the deployment takes to fail over (a replica
	// promoted): for so long after Redis starts failing, the fleet waits
	// for it rather than go on without it. Zero: go on at once.
	Failover time.Duration
	Logger   *zap.Logger
}

// Conn is a Redis client with its breaker.
type Conn struct {
	Client   redis.UniversalClient
	Timeout  time.Duration
	failover time.Duration
	br       *breaker.Breaker
}

// ErrUnavailable is returned while the breaker is open.
var ErrUnavailable = errors.New("redis unavailable")

// Open connects lazily: Redis may be down at start and come later.
func Open(cfg Config) (*Conn, error) {
	opts := &redis.UniversalOptions{
		Addrs:         cfg.Addrs,
		MasterName:    cfg.MasterName,
		IsClusterMode: cfg.Cluster,
		Username:      cfg.Username,
		Password:      cfg.Password,
		DB:            cfg.DB,
	}
	if cfg.URL != "" { // Addrs are then empty: the config's Validate says so
		o, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		opts.Addrs = []string{o.Addr}
		opts.DB, opts.TLSConfig = o.DB, o.TLSConfig
		if o.Username != "" || o.Password != "" {
			opts.Username, opts.Password = o.Username, o.Password
		}
	}
	if len(opts.Addrs) == 0 {
		return nil, errors.New("redis: no address")
	}
	if cfg.TLS && opts.TLSConfig == nil {
		opts.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	opts.DialTimeout = cfg.Timeout
	opts.ReadTimeout = cfg.Timeout
	opts.WriteTimeout = cfg.Timeout
	opts.MaxRetries = 1
	opts.DialerRetries = 1
	// Do's deadline bounds the socket too, and so the retry: a Redis
	// that stalls costs one timeout per operation, not one per attempt.
	opts.ContextTimeoutEnabled = true
	opts.DisableIdentity = true
	c := &Conn{Client: redis.NewUniversalClient(opts), Timeout: cfg.Timeout, failover: cfg.Failover, br: breaker.New("redis", cfg.Logger)}
	return c, nil
}

// Close closes the client.
func (c *Conn) Close() error { return c.Client.Close() }

// ProbeAt is when the open breaker next lets a request through; a time
// in the past when it is closed.
func (c *Conn) ProbeAt() time.Time { return c.br.ProbeAt() }

// AwaitFailover reports whether a caller whose Redis operations have
// failed since since should wait for Redis rather than go on without it:
// a failover (Config.Failover) may still bring it back. It may while that
// time has not passed since the caller's first failure, unless Redis has
// failed for longer than that with no operation working in between (dead,
// not failing over: callers then go on at once). An operation that works
// on another Cluster shard meanwhile does not end a caller's wait for its
// own shard's failover.
func (c *Conn) AwaitFailover(since time.Time) bool {
	return c.failover > 0 && time.Since(since) < c.failover && c.br.FailingFor() < c.failover
}

// FailingFor is how long Redis operations have failed with none working
// in between; zero while the last one worked.
func (c *Conn) FailingFor() time.Duration { return c.br.FailingFor() }

// Available reports whether the breaker would let a request through,
// without taking its half-open probe.
func (c *Conn) Available() bool { return c.br.Available() }

// Do runs op with the operation timeout if the breaker allows it, and
// records its outcome; redis.Nil (a missing key) is a success.
func (c *Conn) Do(ctx context.Context, op func(ctx context.Context) error) error {
	if !c.br.Allow() {
		return ErrUnavailable
	}
	opCtx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	err := op(opCtx)
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		c.br.Success()
	case errors.Is(err, context.Canceled) || ctx.Err() != nil:
		// the caller gave up, or its own deadline passed: says
		// nothing about Redis
	default:
		c.br.Failure(err)
	}
	return err
}

// DelIf deletes KEYS[1] if it still holds ARGV[1]: releasing one's own
// lock, deleting a value found bad without deleting one written since.
var DelIf = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("del", KEYS[1]) else return 0 end`)
