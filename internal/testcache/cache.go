// Package testcache opens the real cache tiers of a test (memory, Redis,
// disk) and the fleet on them, wired as the Caddy module wires them.
package testcache

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/cachetier/redistier"
	"github.com/piraeus-go/piraeus/cachetier/s3tier"
	"github.com/piraeus-go/piraeus/fleet"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/redisconn"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// Options says which tiers a test's cache has.
type Options struct {
	DiskRoot        string // default: a temp dir
	DiskMax         int64
	Memory          bool
	MemoryMaxObject int64 // default 1 MiB
	Redis           *testenv.Redis
	// RedisTarget, if set, is the Redis used in place of Redis: a
	// Cluster or a Sentinel group.
	RedisTarget testenv.RedisTarget
	// S3, if set, makes a new bucket of this server the tier of record in
	// place of the disk, which is then kept only if LocalDisk is set.
	S3           *testenv.S3
	LocalDisk    bool
	RedisMax     int64
	RedisTimeout time.Duration
	// RedisFailover is how long the fleet waits for a failing Redis.
	RedisFailover time.Duration
	Prefix        string        // Redis key prefix; default the test's name
	HandOverMax   int64         // fleet-wide bytes of hand-overs in flight
	LockTTL       time.Duration // the fleet's; default fleet.DefaultLockTTL
	// FleetKey signs what Redis and the bucket hold; default
	// testenv.FleetKey.
	FleetKey string
	Logger   *zap.Logger
}

// Cache is real tiers (memory, Redis, disk) and, with Redis, the fleet on
// it, wired as the Caddy module wires them: other nodes' purges drop the
// local copies and reach OnPurge. Everything is closed when the test ends.
type Cache struct {
	Tiers *cachetier.Tiered
	Disk  *cachetier.DiskTier // nil with S3 and no LocalDisk
	S3    *s3tier.Tier        // with S3
	Fleet *fleet.Fleet
	Conn  *redisconn.Conn // with Redis
	Key   *fleetkey.Key   // the fleet key

	forget atomic.Pointer[func(keys []string)]
	purged chan struct{} // signalled after each purge applied
}

// Purged receives after each purge from another node was applied.
func (c *Cache) Purged() <-chan struct{} { return c.purged }

// New opens a test's cache.
func New(t testing.TB, o Options) *Cache {
	t.Helper()
	if o.DiskRoot == "" {
		o.DiskRoot = t.TempDir()
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Prefix == "" {
		o.Prefix = t.Name() + ":"
	}
	if o.FleetKey == "" {
		o.FleetKey = testenv.FleetKey
	}
	key, err := fleetkey.New(o.FleetKey)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cache{purged: make(chan struct{}, 16), Key: key}
	var store cachetier.Store
	if o.S3 == nil || o.LocalDisk {
		disk, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: o.DiskRoot, MaxBytes: o.DiskMax, Logger: o.Logger})
		if err != nil {
			t.Fatal(err)
		}
		c.Disk, store = disk, disk
	}
	if o.S3 != nil {
		bucket := bucketName(t.Name())
		o.S3.NewBucket(bucket)
		if c.S3, err = s3tier.New(s3tier.Config{
			Endpoint: o.S3.Endpoint, Bucket: bucket, AccessKey: o.S3.AccessKey, SecretKey: o.S3.SecretKey,
			SpoolDir: t.TempDir(), Key: key, Logger: o.Logger,
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.S3.Close() })
		store = c.S3
	}
	var upper []cachetier.Tier
	if o.Memory {
		if o.MemoryMaxObject == 0 {
			o.MemoryMaxObject = 1 << 20
		}
		mem, err := cachetier.NewMemoryTier(64<<20, o.MemoryMaxObject)
		if err != nil {
			t.Fatal(err)
		}
		upper = append(upper, mem)
	}
	var conn *redisconn.Conn
	prefix := o.Prefix + "v3:"
	if o.RedisTarget == nil && o.Redis != nil {
		o.RedisTarget = o.Redis
	}
	if o.RedisTarget != nil {
		cfg := o.RedisTarget.Config()
		cfg.Timeout, cfg.Failover, cfg.Logger = o.RedisTimeout, o.RedisFailover, o.Logger
		if conn, err = redisconn.Open(cfg); err != nil {
			t.Fatal(err)
		}
		c.Conn = conn
		rt, err := redistier.New(redistier.Config{Conn: conn, Prefix: prefix, MaxObject: o.RedisMax, Key: key, Logger: o.Logger})
		if err != nil {
			t.Fatal(err)
		}
		upper = append(upper, rt)
	}
	if c.S3 != nil && c.Disk != nil {
		upper = append(upper, c.Disk) // a local disk above the bucket
	}
	c.Tiers = cachetier.NewTiered(func(tier, op, key string, err error) {
		o.Logger.Warn("cache tier failed", zap.String("tier", tier), zap.String("op", op), zap.String("key", key), zap.Error(err))
	}, store, upper...)
	if o.RedisTarget != nil {
		minTransfer := o.RedisMax
		if minTransfer == 0 {
			minTransfer = redistier.DefaultMaxObject
		}
		c.Fleet, err = fleet.New(fleet.Config{
			Conn: conn, Prefix: prefix, MinTransfer: minTransfer, MaxInFlight: o.HandOverMax, LockTTL: o.LockTTL, Key: key, Logger: o.Logger,
			OnPurge: func(keys []string) {
				for _, k := range keys {
					c.Tiers.DeleteLocal(context.Background(), k)
				}
				if f := c.forget.Load(); f != nil {
					(*f)(keys)
				}
				select {
				case c.purged <- struct{}{}:
				default:
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if c.Fleet != nil {
			c.Fleet.Close()
		}
		c.Tiers.Close()
		if conn != nil {
			conn.Close()
		}
	})
	return c
}

// OnPurge gives the keys that other nodes purge to f too (a proxy's
// ForgetNotFound).
func (c *Cache) OnPurge(f func(keys []string)) { c.forget.Store(&f) }

var bucketSeq atomic.Int64

// bucketName makes a valid S3 bucket name, unique in the process, from a
// test's name.
func bucketName(test string) string {
	b := []byte(strings.ToLower(test))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			b[i] = '-'
		}
	}
	if len(b) > 40 {
		b = b[:40]
	}
	return fmt.Sprintf("t-%s-%d", b, bucketSeq.Add(1))
}
