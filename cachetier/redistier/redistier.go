// Package redistier is the Redis tier of the cache: objects shared by a
// fleet of edges, each value signed under the fleet key and checked on
// every read, purges kept by signed tombstones. Only a process that
// configures it links go-redis (through internal/redisconn).
package redistier

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/redisconn"
)

// DefaultMaxObject is the default for Config.MaxObject.
const DefaultMaxObject = 8 << 20

// Config configures the Redis tier.
type Config struct {
	Conn *redisconn.Conn
	// Prefix namespaces the tier's keys; deployments whose answers differ
	// must not share one.
	Prefix    string
	MaxObject int64 // larger objects are not stored in Redis
	// Key signs every value and tombstone the tier writes, and a value
	// whose tag fails it is refused, deleted and counted. Required.
	Key    *fleetkey.Key
	Logger *zap.Logger
}

// Tier stores objects in Redis so that several nodes share them. Each
// value is the disk tier's header, which names the key and carries a tag
// under the fleet key, followed by the content; all are checked on every
// read, and a value that fails is deleted. A purged key carries a signed
// tombstone: an object stored before the purge is never written back
// (from a node's memory or disk).
type Tier struct {
	conn      *redisconn.Conn
	prefix    string
	maxObject int64
	key       *fleetkey.Key
	log       *zap.Logger
}

// New returns a tier on cfg.Conn, which it does not own.
func New(cfg Config) (*Tier, error) {
	if cfg.Key == nil {
		return nil, errors.New("redis tier: no fleet key; " + fleetkey.Howto)
	}
	if cfg.MaxObject <= 0 {
		cfg.MaxObject = DefaultMaxObject
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Tier{conn: cfg.Conn, prefix: cfg.Prefix, maxObject: cfg.MaxObject, key: cfg.Key, log: cfg.Logger}, nil
}

const (
	kindRedisObject = fleetkey.KindRedisObject
	kindTombstone   = fleetkey.KindTombstone
)

func (r *Tier) Name() string     { return "redis" }
func (r *Tier) MaxObject() int64 { return r.maxObject }

// The object and its tombstone share a hash tag, so the scripts that use
// both touch one Redis Cluster slot.
func (r *Tier) objKey(key string) string  { return r.prefix + "obj:{" + key + "}" }
func (r *Tier) tombKey(key string) string { return r.prefix + "tomb:{" + key + "}" }

func (r *Tier) Get(ctx context.Context, key string) (*cachetier.Object, error) {
	return r.get(ctx, key, false)
}

// GetConfirmed is Get for a record whose absence must be confirmed (a
// revoked access token): a Redis that is not being used now (its circuit
// breaker open) is cachetier.ErrUnavailable, not a miss, and a key purged
// (its tombstone here) is cachetier.ErrPurged.
func (r *Tier) GetConfirmed(ctx context.Context, key string) (*cachetier.Object, error) {
	return r.get(ctx, key, true)
}

func (r *Tier) get(ctx context.Context, key string, confirm bool) (*cachetier.Object, error) {
	var val []byte
	err := r.conn.Do(ctx, func(ctx context.Context) (err error) {
		val, err = r.conn.Client.Get(ctx, r.objKey(key)).Bytes()
		return err
	})
	switch {
	case errors.Is(err, redisconn.ErrUnavailable) && confirm:
		return nil, cachetier.ErrUnavailable
	case errors.Is(err, redis.Nil) && confirm:
		// A purge here is the fleet's word that the record is gone,
		// whatever copies nodes still hold.
		var tomb string
		err := r.conn.Do(ctx, func(ctx context.Context) (err error) {
			tomb, err = r.conn.Client.Get(ctx, r.tombKey(key)).Result()
			return err
		})
		switch {
		case err == nil && r.tombstoneGood(key, tomb):
			return nil, cachetier.ErrPurged
		case errors.Is(err, redisconn.ErrUnavailable):
			return nil, cachetier.ErrUnavailable
		case err != nil && !errors.Is(err, redis.Nil):
			return nil, fmt.Errorf("redis tier: %w", err)
		}
		return nil, cachetier.ErrMiss
	case errors.Is(err, redis.Nil), errors.Is(err, redisconn.ErrUnavailable):
		return nil, cachetier.ErrMiss
	case err != nil:
		return nil, fmt.Errorf("redis tier: %w", err)
	}
	meta, data, err := cachetier.DecodeValue(key, val, r.key, kindRedisObject)
	if err != nil {
		if errors.Is(err, cachetier.ErrBadTag) {
			fleetkey.Rejected(kindRedisObject)
		}
		r.Reject(ctx, key, err)
		return nil, cachetier.ErrMiss
	}
	return cachetier.NewTierObject(meta, "redis", data), nil
}

// Reject deletes a value that failed a check (its format here, or the
// caller's check against the checksum database) so that it is fetched
// again; a value nobody can trust is security-relevant.
func (r *Tier) Reject(ctx context.Context, key string, why error) {
	r.conn.Do(context.WithoutCancel(ctx), func(ctx context.Context) error {
		return r.conn.Client.Del(ctx, r.objKey(key)).Err()
	})
	r.log.Error("redis value rejected and deleted; it will be fetched again", zap.String("key", cachetier.Truncate(key)), zap.Error(why))
}

// putScript stores a value unless the key was purged after the object
// was stored: ARGV = value, ttl ms (0: none), stored unix ms. A tombstone
// that holds the value back is returned, for its tag to be checked (Lua
// has no HMAC); one that does not is no matter.
var putScript = redis.NewScript(`
local tomb = redis.call("get", KEYS[2])
if tomb then
	local t = tonumber(string.match(tomb, "^(%d+) "))
	if t == nil or t >= tonumber(ARGV[3]) then return tomb end
end
if tonumber(ARGV[2]) > 0 then
	redis.call("set", KEYS[1], ARGV[1], "px", ARGV[2])
else
	redis.call("set", KEYS[1], ARGV[1])
end
return 1`)

func (r *Tier) Put(ctx context.Context, key string, meta cachetier.Meta, data []byte) error {
	return r.put(ctx, key, meta, data, false)
}

// retryThroughFailover runs op again, after it failed with err, with
// backoff, for as long as the connection says a failover may bring Redis
// back (failover_wait), until it works; it returns op's last error.
func (r *Tier) retryThroughFailover(ctx context.Context, err error, op func(ctx context.Context) error) error {
	since := time.Now()
	backoff := 20 * time.Millisecond
	for r.conn.AwaitFailover(since) {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 500*time.Millisecond)
		if err = r.conn.Do(ctx, op); err == nil {
			return nil
		}
	}
	return err
}

// PutConfirmed is Put for a record every node must see (an access
// token): a Redis not being used now, a value too large for the tier
// and a tombstone in the way are errors, not a skipped write.
func (r *Tier) PutConfirmed(ctx context.Context, key string, meta cachetier.Meta, data []byte) error {
	return r.put(ctx, key, meta, data, true)
}

func (r *Tier) put(ctx context.Context, key string, meta cachetier.Meta, data []byte, confirm bool) error {
	if int64(len(data)) > r.maxObject {
		if confirm {
			return fmt.Errorf("redis tier: %s is larger than the tier's max object", cachetier.Truncate(key))
		}
		return nil
	}
	var ttl int64 // immutable: no expiry
	if !meta.Expires.IsZero() {
		if ttl = time.Until(meta.Expires).Milliseconds(); ttl <= 0 {
			return nil
		}
	}
	val := cachetier.EncodeValue(key, meta, data, r.key, kindRedisObject)
	for range 2 {
		var res any
		op := func(ctx context.Context) (err error) {
			res, err = putScript.Run(ctx, r.conn.Client, []string{r.objKey(key), r.tombKey(key)},
				val, ttl, meta.Stored.UnixMilli()).Result()
			return err
		}
		err := r.conn.Do(ctx, op)
		if err != nil && cachetier.ForWaiters(ctx) {
			err = r.retryThroughFailover(ctx, err, op)
		}
		if err != nil {
			if errors.Is(err, redisconn.ErrUnavailable) {
				if confirm {
					return cachetier.ErrUnavailable
				}
				return nil
			}
			return fmt.Errorf("redis tier: %w", err)
		}
		tomb, held := res.(string)
		if !held {
			return nil
		}
		if r.tombstoneGood(key, tomb) {
			if confirm {
				return fmt.Errorf("redis tier: %s was purged", cachetier.Truncate(key))
			}
			return nil
		}
		// A tombstone no edge wrote: delete it (if it is still the
		// same) and store the value.
		fleetkey.Rejected(kindTombstone)
		r.log.Error("a redis tombstone whose tag fails the fleet key was deleted", zap.String("key", cachetier.Truncate(key)))
		r.conn.Do(ctx, func(ctx context.Context) error {
			return redisconn.DelIf.Run(ctx, r.conn.Client, []string{r.tombKey(key)}, tomb).Err()
		})
	}
	return nil
}

// tombstone is the value of key's tombstone made at ms: the time and its
// tag.
func (r *Tier) tombstone(key string, ms int64) string {
	t := strconv.FormatInt(ms, 10)
	return t + " " + r.key.HexTag(kindTombstone, key, t)
}

func (r *Tier) tombstoneGood(key, val string) bool {
	t, tag, ok := strings.Cut(val, " ")
	return ok && r.key.CheckHexTag(tag, kindTombstone, key, t)
}

func (r *Tier) Delete(ctx context.Context, key string) error {
	err := r.conn.Do(ctx, func(ctx context.Context) error {
		return r.conn.Client.Del(ctx, r.objKey(key)).Err()
	})
	if err != nil {
		return fmt.Errorf("redis tier: %w", err)
	}
	return nil
}

// TombstoneTTL is how long a purge keeps objects stored before it from
// coming back into Redis.
const TombstoneTTL = 30 * 24 * time.Hour

// Purge deletes key and leaves a tombstone, so that no node writes back a
// copy stored before now.
func (r *Tier) Purge(ctx context.Context, key string) error {
	now := r.tombstone(key, time.Now().UnixMilli())
	err := r.conn.Do(ctx, func(ctx context.Context) error {
		_, err := r.conn.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, r.objKey(key))
			p.Set(ctx, r.tombKey(key), now, TombstoneTTL)
			return nil
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("redis tier: purging %s: %w", cachetier.Truncate(key), err)
	}
	return nil
}

// Check pings Redis.
func (r *Tier) Check(ctx context.Context) error {
	err := r.conn.Do(ctx, func(ctx context.Context) error { return r.conn.Client.Ping(ctx).Err() })
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// Close does nothing: the connection belongs to whoever opened it.
func (r *Tier) Close() error { return nil }

// Shared reports that the tier is shared with other nodes: what it holds
// may have been written by any of them.
func (r *Tier) Shared() bool { return true }

var _ cachetier.Tier = (*Tier)(nil)
