// Package fleet coordinates the edges of a fleet that share one Redis: a
// lock per artifact so that a cold burst across edges costs one upstream
// fetch, the hand-over of large objects to the edges waiting for them,
// not-found answers shared between edges, and purges that every edge
// applies to what it holds. Every value it writes to Redis carries a tag
// under the fleet key, bound to its Redis key; a value whose tag fails
// (written by someone without the key) is refused, deleted, logged at
// error level and counted.
package fleet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/httperr"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/redisconn"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxTransfer = 256 << 20
	DefaultMaxInFlight = 256 << 20
)

// Config configures a Fleet.
type Config struct {
	Conn   *redisconn.Conn
	Prefix string // namespace of the fleet's keys
	// MaxTransfer is the largest object handed to waiting edges through
	// Redis (0: DefaultMaxTransfer, -1: none).
	MaxTransfer int64
	// MinTransfer: objects up to this size are not handed over (the
	// shared tier keeps them); default 0.
	MinTransfer int64
	// MaxInFlight bounds the bytes of all hand-overs alive in Redis at
	// once, fleet-wide (0: DefaultMaxInFlight), so a few large zips
	// cannot fill Redis and break the locks of the whole fleet.
	MaxInFlight int64
	// PositionFile keeps the last purge this node applied, so that after
	// a restart it applies the purges it missed. Empty: start from the
	// oldest purge Redis holds.
	PositionFile string
	// OnPurge, if set, removes keys that another node purged from what
	// this node holds. The fleet follows the purges only when it is set.
	OnPurge func(keys []string)
	// LockTTL is how long a fetch's lock lives unless its holder renews
	// it (every third of it): how soon the fleet notices a dead holder.
	// Default DefaultLockTTL.
	LockTTL time.Duration
	// Key signs what the fleet writes. Required.
	Key    *fleetkey.Key
	Logger *zap.Logger
}

// Fleet is one node's view of the fleet.
type Fleet struct {
	cfg  Config
	conn *redisconn.Conn
	key  *fleetkey.Key
	log  *zap.Logger
	node string // this node's random id, to skip its own purges

	ctx    context.Context // ends with Close: the purge follower's reads
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Fleet and starts following purges if cfg.OnPurge is set.
func New(cfg Config) (*Fleet, error) {
	if cfg.Conn == nil {
		return nil, errors.New("fleet: no redis connection")
	}
	if cfg.Key == nil {
		return nil, errors.New("fleet: no fleet key; " + fleetkey.Howto)
	}
	if cfg.MaxTransfer == 0 {
		cfg.MaxTransfer = DefaultMaxTransfer
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.LockTTL <= 0 {
		cfg.LockTTL = DefaultLockTTL
	}
	var b [8]byte
	rand.Read(b[:])
	f := &Fleet{cfg: cfg, conn: cfg.Conn, key: cfg.Key, log: cfg.Logger, node: hex.EncodeToString(b[:])}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	if cfg.OnPurge != nil {
		f.wg.Add(1)
		go f.followPurges()
	}
	return f, nil
}

// Close stops following purges.
func (f *Fleet) Close() error {
	f.cancel()
	f.wg.Wait()
	return nil
}

// Available reports whether Redis is being used (the breaker is closed).
func (f *Fleet) Available() bool { return f.conn.Available() }

// Keys of one artifact share a hash tag, so that scripts using several of
// them touch one Redis Cluster slot.
func (f *Fleet) lockKey(key string) string { return f.cfg.Prefix + "lock:{" + key + "}" }
func (f *Fleet) waitKey(key string) string { return f.cfg.Prefix + "wait:{" + key + "}" }
func (f *Fleet) nfKey(key string) string   { return f.cfg.Prefix + "nf:{" + key + "}" }
func (f *Fleet) xferKey(key string) string { return f.cfg.Prefix + "xfer:{" + key + "}" }
func (f *Fleet) budgetKey() string         { return f.cfg.Prefix + "xfer-budget" }
func (f *Fleet) purgeKey() string          { return f.cfg.Prefix + "purges" }

// Lock lengths: a lock lives LockTTL unless renewed, and it is renewed
// every LockTTL/3 while its fetch runs, so it outlives the slowest fetch
// and expires soon after a holder dies. Whatever its TTL, a lock is
// broken once it has been held longer than its holder's fetch may run
// (which the lock's value says, signed) plus lockMargin.
const (
	DefaultLockTTL = 10 * time.Second
	lockMinBackoff = 10 * time.Millisecond
	lockMaxBackoff = 200 * time.Millisecond
	lockMargin     = 30 * time.Second
	// DefaultMaxHold is how long a lock is held when the fetch has no
	// deadline.
	DefaultMaxHold = 5 * time.Minute
)

const (
	kindLock     = fleetkey.KindLock
	kindHandOver = fleetkey.KindHandOver
	kindNotFound = fleetkey.KindNotFound
	kindPurge    = fleetkey.KindPurge
)

var (
	renewScript = redis.NewScript(`if redis.call("get", KEYS[1]) == ARGV[1] then return redis.call("pexpire", KEYS[1], ARGV[2]) else return 0 end`)
	// lockStateScript reads a lock and its remaining time.
	lockStateScript = redis.NewScript(`return {redis.call("get", KEYS[1]), redis.call("pttl", KEYS[1])}`)
)

// lockValue is a lock's value: a random token, when it was taken, how
// long its holder may hold it (unix ms, ms), and their tag.
func (f *Fleet) lockValue(lk, token string, taken time.Time, hold time.Duration) string {
	fields := token + " " + strconv.FormatInt(taken.UnixMilli(), 10) + " " + strconv.FormatInt(hold.Milliseconds(), 10)
	return fields + " " + f.key.HexTag(kindLock, lk, fields)
}

// lockTrouble says why a lock found in Redis must be broken, or "".
func (f *Fleet) lockTrouble(lk, val string, pttl int64, now time.Time) string {
	fields := strings.Fields(val)
	if len(fields) != 4 {
		return "its value is not one an edge writes"
	}
	if !f.key.CheckHexTag(fields[3], kindLock, lk, strings.Join(fields[:3], " ")) {
		return "its tag fails the fleet key: no edge of this fleet wrote it"
	}
	if pttl == -1 {
		return "it has no expiry, which no edge sets"
	}
	taken, err1 := strconv.ParseInt(fields[1], 10, 64)
	hold, err2 := strconv.ParseInt(fields[2], 10, 64)
	if err1 != nil || err2 != nil {
		return "its value is not one an edge writes"
	}
	if time.UnixMilli(taken).After(now.Add(lockMargin)) {
		return "it is dated in the future"
	}
	if now.After(time.UnixMilli(taken).Add(time.Duration(hold)*time.Millisecond + lockMargin)) {
		return "it has been held longer than its holder's fetch may run"
	}
	return ""
}

// ErrUnavailable is returned by Lock while Redis is not being used.
var ErrUnavailable = cachetier.ErrUnavailable

// Lock takes the fleet-wide lock for key (SET NX PX with a random token),
// waiting with bounded polling while another node holds it, until ctx
// ends; meanwhile this node counts as waiting for key (see Waiting). The
// lock is renewed until unlock is called, which deletes it only if it is
// still ours. A lock found without an expiry is broken.
func (f *Fleet) Lock(ctx context.Context, key string) (unlock func(), err error) {
	lk := f.lockKey(key)
	var b [16]byte
	rand.Read(b[:])
	hold := DefaultMaxHold
	if dl, ok := ctx.Deadline(); ok {
		hold = max(time.Until(dl), 0)
	}
	token := f.lockValue(lk, hex.EncodeToString(b[:]), time.Now(), hold)
	backoff := lockMinBackoff
	waiting := false
	var failedSince time.Time // this call's first failure to reach Redis
	defer func() {
		if waiting {
			f.conn.Do(context.WithoutCancel(ctx), func(ctx context.Context) error {
				return f.conn.Client.Decr(ctx, f.waitKey(key)).Err()
			})
		}
	}()
	for attempt := 0; ; attempt++ {
		var ok bool
		err := f.conn.Do(ctx, func(ctx context.Context) (err error) {
			ok, err = f.conn.Client.SetNX(ctx, lk, token, f.cfg.LockTTL).Result()
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if failedSince.IsZero() {
				failedSince = time.Now()
			}
			if f.conn.AwaitFailover(failedSince) {
				// Redis may be failing over: wait for it rather than
				// fetch beside the other edges, for as long as the
				// deployment's failover takes.
				if !sleep(ctx, backoff) {
					return nil, ctx.Err()
				}
				backoff = min(backoff*2, lockMaxBackoff)
				continue
			}
			if errors.Is(err, redisconn.ErrUnavailable) {
				return nil, ErrUnavailable
			}
			return nil, fmt.Errorf("redis lock: %w", err)
		}
		if ok {
			return f.holdLock(lk, token), nil
		}
		// Another node fetches: say this one waits for it (the count
		// expires by itself if this node dies), and look for a lock that
		// can never expire.
		f.conn.Do(ctx, func(ctx context.Context) error {
			_, err := f.conn.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
				if !waiting {
					p.Incr(ctx, f.waitKey(key))
				}
				p.PExpire(ctx, f.waitKey(key), 2*f.cfg.LockTTL)
				return nil
			})
			if err == nil {
				waiting = true
			}
			return err
		})
		if attempt%16 == 0 && f.breakBadLock(ctx, lk) {
			continue
		}
		if !sleep(ctx, backoff) {
			return nil, ctx.Err()
		}
		backoff = min(backoff*2, lockMaxBackoff)
	}
}

// sleep waits d, or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// breakBadLock looks at the lock another node holds and breaks it if it
// is forged, has no expiry or is held too long; it reports whether it
// did.
func (f *Fleet) breakBadLock(ctx context.Context, lk string) bool {
	var state []any
	err := f.conn.Do(ctx, func(ctx context.Context) (err error) {
		state, err = lockStateScript.Run(ctx, f.conn.Client, []string{lk}).Slice()
		return err
	})
	if err != nil || len(state) != 2 {
		return false
	}
	val, _ := state[0].(string)
	pttl, _ := state[1].(int64)
	if val == "" {
		return false
	}
	why := f.lockTrouble(lk, val, pttl, time.Now())
	if why == "" {
		return false
	}
	var n int64
	f.conn.Do(ctx, func(ctx context.Context) (err error) {
		n, err = redisconn.DelIf.Run(ctx, f.conn.Client, []string{lk}, val).Int64()
		return err
	})
	if n == 1 {
		fleetkey.Rejected(kindLock)
		f.log.Error("a fleet lock was broken: "+why, zap.String("lock", lk))
	}
	return n == 1
}

func (f *Fleet) holdLock(lk, token string) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(f.cfg.LockTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				err := f.conn.Do(context.Background(), func(ctx context.Context) error {
					return renewScript.Run(ctx, f.conn.Client, []string{lk}, token, f.cfg.LockTTL.Milliseconds()).Err()
				})
				if err != nil {
					f.log.Warn("renewing a fleet lock failed", zap.String("lock", lk), zap.Error(err))
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
			err := f.conn.Do(context.Background(), func(ctx context.Context) error {
				return redisconn.DelIf.Run(ctx, f.conn.Client, []string{lk}, token).Err()
			})
			if err != nil {
				f.log.Warn("releasing a fleet lock failed; it expires by itself", zap.String("lock", lk), zap.Error(err))
			}
		})
	}
}

// Waiting reports whether another node waits for key's lock.
func (f *Fleet) Waiting(ctx context.Context, key string) bool {
	var n int64
	err := f.conn.Do(ctx, func(ctx context.Context) (err error) {
		n, err = f.conn.Client.Get(ctx, f.waitKey(key)).Int64()
		return err
	})
	return err == nil && n > 0
}

// Hand-overs live in chunks for transferTTL: long enough for the nodes
// waiting on the same fetch.
const (
	transferChunk = 1 << 20
	transferTTL   = 2 * time.Minute
)

// budgetScript reserves size bytes of the fleet's hand-over budget until
// ARGV[4] (unix ms): the sorted set holds one member per hand-over alive,
// "size|key|token", scored by its expiry. KEYS[1] only.
var budgetScript = redis.NewScript(`
redis.call("zremrangebyscore", KEYS[1], "-inf", ARGV[1])
local used = 0
for _, m in ipairs(redis.call("zrange", KEYS[1], 0, -1)) do
	used = used + tonumber(string.match(m, "^(%d+)|"))
end
if used + tonumber(ARGV[2]) > tonumber(ARGV[3]) then return 0 end
redis.call("zadd", KEYS[1], ARGV[4], ARGV[5])
redis.call("pexpire", KEYS[1], ARGV[6])
return 1`)

// PutTransfer leaves an object (up to MaxTransfer) in Redis for
// transferTTL, chunk by chunk and then its header, when another node waits
// for it and the fleet's hand-over budget has room. It reports whether the
// object was handed over.
func (f *Fleet) PutTransfer(ctx context.Context, key string, meta cachetier.Meta, src io.Reader) (bool, error) {
	if f.cfg.MaxTransfer < 0 || meta.Size <= f.cfg.MinTransfer || meta.Size > f.cfg.MaxTransfer || !f.Waiting(ctx, key) {
		return false, nil
	}
	now := time.Now()
	var b [8]byte
	rand.Read(b[:])
	member := strconv.FormatInt(meta.Size, 10) + "|" + key + "|" + hex.EncodeToString(b[:])
	var ok int64
	err := f.conn.Do(ctx, func(ctx context.Context) (err error) {
		ok, err = budgetScript.Run(ctx, f.conn.Client, []string{f.budgetKey()},
			now.UnixMilli(), meta.Size, f.cfg.MaxInFlight, now.Add(transferTTL).UnixMilli(), member, transferTTL.Milliseconds()).Int64()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("redis transfer budget: %w", err)
	}
	if ok != 1 {
		f.log.Warn("hand-over budget of the fleet is used up; waiting nodes fetch the object themselves",
			zap.String("key", key), zap.Int64("bytes", meta.Size), zap.Int64("max_in_flight", f.cfg.MaxInFlight))
		return false, nil
	}
	buf := make([]byte, transferChunk)
	base := f.xferKey(key)
	for i, left := 0, meta.Size; left > 0; i++ {
		n := min(left, transferChunk)
		if _, err := io.ReadFull(src, buf[:n]); err != nil {
			return false, fmt.Errorf("redis transfer: reading %s: %w", key, err)
		}
		if err := f.setTimed(ctx, base+":"+strconv.Itoa(i), buf[:n]); err != nil {
			return false, err
		}
		left -= n
	}
	return true, f.setTimed(ctx, base, cachetier.EncodeHeader(key, meta, f.key, kindHandOver))
}

func (f *Fleet) setTimed(ctx context.Context, key string, val []byte) error {
	err := f.conn.Do(ctx, func(ctx context.Context) error {
		return f.conn.Client.Set(ctx, key, val, transferTTL).Err()
	})
	if err != nil {
		return fmt.Errorf("redis transfer: %w", err)
	}
	return nil
}

// ErrMiss is returned by GetTransfer when no hand-over is there.
var ErrMiss = cachetier.ErrMiss

// GetTransfer returns the header of an object another node handed over,
// checked to name key, and a reader of its content, fetched chunk by
// chunk. The caller checks the content against meta.Sum.
func (f *Fleet) GetTransfer(ctx context.Context, key string) (cachetier.Meta, io.Reader, error) {
	base := f.xferKey(key)
	var hdr []byte
	err := f.conn.Do(ctx, func(ctx context.Context) (err error) {
		hdr, err = f.conn.Client.Get(ctx, base).Bytes()
		return err
	})
	if err != nil {
		return cachetier.Meta{}, nil, ErrMiss
	}
	meta, err := cachetier.DecodeHeader(key, hdr, f.key, kindHandOver)
	if err != nil {
		if errors.Is(err, cachetier.ErrBadTag) {
			fleetkey.Rejected(kindHandOver)
		}
		f.DeleteTransfer(ctx, key)
		f.log.Error("a hand-over whose header fails its checks was deleted", zap.String("key", key), zap.Error(err))
		return cachetier.Meta{}, nil, ErrMiss
	}
	if meta.Size > f.cfg.MaxTransfer {
		return cachetier.Meta{}, nil, ErrMiss
	}
	return meta, &transferReader{ctx: ctx, f: f, base: base, left: meta.Size}, nil
}

// DeleteTransfer removes a hand-over that failed its checks, so that the
// other nodes waiting for it do not copy it too.
func (f *Fleet) DeleteTransfer(ctx context.Context, key string) {
	base := f.xferKey(key)
	f.conn.Do(ctx, func(ctx context.Context) error { return f.conn.Client.Del(ctx, base).Err() })
}

type transferReader struct {
	ctx  context.Context
	f    *Fleet
	base string
	next int
	left int64
	buf  []byte
}

func (t *transferReader) Read(p []byte) (int, error) {
	if len(t.buf) == 0 {
		if t.left <= 0 {
			return 0, io.EOF
		}
		var chunk []byte
		err := t.f.conn.Do(t.ctx, func(ctx context.Context) (err error) {
			chunk, err = t.f.conn.Client.Get(ctx, t.base+":"+strconv.Itoa(t.next)).Bytes()
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("redis transfer chunk %d: %w", t.next, err)
		}
		if int64(len(chunk)) > t.left || len(chunk) == 0 {
			return 0, fmt.Errorf("redis transfer chunk %d has a wrong size", t.next)
		}
		t.buf, t.next, t.left = chunk, t.next+1, t.left-int64(len(chunk))
	}
	n := copy(p, t.buf)
	t.buf = t.buf[n:]
	return n, nil
}

// PutNotFound shares an upstream's not-found answer (404 or 410, and its
// reason) for ttl with the other nodes. The value is the status, its
// expiry (unix ms), a tag and the reason.
func (f *Fleet) PutNotFound(ctx context.Context, key string, status int, msg string, ttl time.Duration) {
	if ttl <= 0 || (status != 404 && status != 410) {
		return
	}
	msg = oneLine(msg)
	head := strconv.Itoa(status) + " " + strconv.FormatInt(time.Now().Add(ttl).UnixMilli(), 10)
	val := head + " " + f.key.HexTag(kindNotFound, key, head, msg) + " " + msg
	f.conn.Do(ctx, func(ctx context.Context) error {
		return f.conn.Client.Set(ctx, f.nfKey(key), val, ttl).Err()
	})
}

// maxReason bounds a shared reason, as one line a client is shown.
const maxReason = 300

// GetNotFound returns a not-found answer another node shared. Only a 404
// or 410 is ever returned, with a reason of one bounded line; anything
// else found there is deleted.
func (f *Fleet) GetNotFound(ctx context.Context, key string) (status int, msg string, ok bool) {
	var val string
	err := f.conn.Do(ctx, func(ctx context.Context) (err error) {
		val, err = f.conn.Client.Get(ctx, f.nfKey(key)).Result()
		return err
	})
	if err != nil {
		return 0, "", false
	}
	parts := strings.SplitN(val, " ", 4)
	for len(parts) < 4 {
		parts = append(parts, "")
	}
	head := parts[0] + " " + parts[1]
	status, _ = strconv.Atoi(parts[0])
	expires, _ := strconv.ParseInt(parts[1], 10, 64)
	var why string
	switch {
	case !f.key.CheckHexTag(parts[2], kindNotFound, key, head, parts[3]):
		why = "its tag fails the fleet key: no edge of this fleet wrote it"
		fleetkey.Rejected(kindNotFound)
	case status != 404 && status != 410:
		why = "it is not a 404 or 410"
	case time.Now().After(time.UnixMilli(expires)):
		// Kept past its time (its TTL changed): no more a fact.
		f.conn.Do(ctx, func(ctx context.Context) error {
			return redisconn.DelIf.Run(ctx, f.conn.Client, []string{f.nfKey(key)}, val).Err()
		})
		return 0, "", false
	}
	if why != "" {
		f.conn.Do(ctx, func(ctx context.Context) error {
			return redisconn.DelIf.Run(ctx, f.conn.Client, []string{f.nfKey(key)}, val).Err()
		})
		f.log.Error("a shared not-found entry was deleted: "+why, zap.String("key", key), zap.String("value", oneLine(val)))
		return 0, "", false
	}
	return status, oneLine(parts[3]), true
}

func oneLine(s string) string { return httperr.OneLine(s, maxReason) }

// purgeRetention bounds the purge log that nodes catch up from.
const purgeRetention = 100000

// Purge removes keys' hand-overs and shared not-found answers, and tells
// every other node to remove keys from what it holds (OnPurge), now or
// when it next starts. The caller purges its own tiers (and the shared
// ones, with their tombstones).
func (f *Fleet) Purge(ctx context.Context, keys []string) error {
	return f.conn.Do(ctx, func(ctx context.Context) error {
		_, err := f.conn.Client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.Del(ctx, f.xferKey(k), f.nfKey(k))
			}
			p.XAdd(ctx, &redis.XAddArgs{
				Stream: f.purgeKey(),
				MaxLen: purgeRetention,
				Approx: true,
				Values: []any{"node", f.node, "keys", strings.Join(keys, "\n"),
					"tag", f.key.HexTag(kindPurge, f.node, strings.Join(keys, "\n"))},
			})
			return nil
		})
		return err
	})
}

// followPurges applies other nodes' purges as they come, starting where
// this node stopped (PositionFile).
func (f *Fleet) followPurges() {
	defer f.wg.Done()
	pos := f.loadPosition()
	checked := false
	backoff := time.Second
	for f.ctx.Err() == nil {
		if !checked {
			checked = f.checkGap(pos)
		}
		var streams []redis.XStream
		const block = 500 * time.Millisecond // also how long Close may wait
		err := f.conn.Do(f.ctx, func(context.Context) (err error) {
			ctx, cancel := context.WithTimeout(f.ctx, block+f.conn.Timeout)
			defer cancel()
			streams, err = f.conn.Client.XRead(ctx, &redis.XReadArgs{Streams: []string{f.purgeKey(), pos}, Count: 100, Block: block}).Result()
			return err
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			t := time.NewTimer(backoff)
			select {
			case <-f.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, 15*time.Second)
			continue
		}
		backoff = time.Second
		for _, s := range streams {
			for _, m := range s.Messages {
				pos = m.ID
				node, _ := m.Values["node"].(string)
				keys, _ := m.Values["keys"].(string)
				tag, _ := m.Values["tag"].(string)
				if !f.key.CheckHexTag(tag, kindPurge, node, keys) {
					fleetkey.Rejected(kindPurge)
					f.log.Error("a purge whose tag fails the fleet key was ignored and deleted: no edge of this fleet wrote it",
						zap.String("id", m.ID), zap.String("keys", oneLine(keys)))
					f.conn.Do(f.ctx, func(ctx context.Context) error { return f.conn.Client.XDel(ctx, f.purgeKey(), m.ID).Err() })
					continue
				}
				if node != f.node && keys != "" {
					f.cfg.OnPurge(strings.Split(keys, "\n"))
				}
			}
			f.savePosition(pos)
		}
	}
}

// checkGap logs at error level when purges this node has not applied were
// dropped from Redis's log (the node was away too long).
func (f *Fleet) checkGap(pos string) bool {
	var first []redis.XMessage
	err := f.conn.Do(f.ctx, func(ctx context.Context) (err error) {
		first, err = f.conn.Client.XRangeN(ctx, f.purgeKey(), "-", "+", 1).Result()
		return err
	})
	if err != nil {
		return false
	}
	if pos != "0" && len(first) == 1 && streamIDLess(pos, first[0].ID) {
		f.log.Error("purges made while this node was away were dropped from the fleet's log; copies it holds of purged modules may be served until purged again",
			zap.String("last_applied", pos), zap.String("oldest_kept", first[0].ID))
	}
	return true
}

func streamIDLess(a, b string) bool {
	am, as, _ := strings.Cut(a, "-")
	bm, bs, _ := strings.Cut(b, "-")
	ami, _ := strconv.ParseInt(am, 10, 64)
	bmi, _ := strconv.ParseInt(bm, 10, 64)
	if ami != bmi {
		return ami < bmi
	}
	asi, _ := strconv.ParseInt(as, 10, 64)
	bsi, _ := strconv.ParseInt(bs, 10, 64)
	return asi < bsi
}

func (f *Fleet) loadPosition() string {
	if f.cfg.PositionFile == "" {
		return "0"
	}
	data, err := os.ReadFile(f.cfg.PositionFile)
	if pos := strings.TrimSpace(string(data)); err == nil && pos != "" {
		return pos
	}
	return "0"
}

func (f *Fleet) savePosition(pos string) {
	if f.cfg.PositionFile == "" {
		return
	}
	tmp := f.cfg.PositionFile + ".tmp"
	if err := os.MkdirAll(filepath.Dir(tmp), 0o755); err != nil {
		return
	}
	if err := os.WriteFile(tmp, []byte(pos+"\n"), 0o644); err == nil {
		os.Rename(tmp, f.cfg.PositionFile)
	}
}
