package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/redisconn"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

func newFleet(t *testing.T, r *testenv.Redis, secret string, onPurge func([]string)) *Fleet {
	t.Helper()
	conn, err := redisconn.Open(redisconn.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	key, err := fleetkey.New(secret)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{Conn: conn, Prefix: t.Name() + ":", Key: key, OnPurge: onPurge})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); conn.Close() })
	return f
}

func rawClient(t *testing.T, r *testenv.Redis) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// A lock that someone without the fleet key wrote, whatever its TTL, and
// a genuine lock replayed long after its holder's fetch must have ended
// are broken at once; a genuine lock in its time is waited for.
func TestLockTrust(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	f := newFleet(t, r, testenv.FleetKey, nil)
	rc := rawClient(t, r)
	ctx := context.Background()
	taken := func(name, val string) {
		t.Helper()
		if err := rc.Set(ctx, f.lockKey(name), val, 1000*time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
		lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		unlock, err := f.Lock(lctx, name)
		if err != nil {
			t.Fatalf("%s: the lock was not broken: %v", name, err)
		}
		unlock()
	}
	before := fleetkey.Rejections(fleetkey.KindLock)
	taken("forged", "x 1 1 "+strings.Repeat("00", 32))
	taken("junk", "held forever")
	other, _ := fleetkey.New("another-fleet-key-that-is-long-enough-0000")
	f2 := &Fleet{key: other}
	taken("other key", f2.lockValue(f.lockKey("other key"), "t", time.Now(), time.Minute))
	taken("replayed", f.lockValue(f.lockKey("replayed"), "t", time.Now().Add(-10*time.Minute), time.Minute))
	taken("from the future", f.lockValue(f.lockKey("from the future"), "t", time.Now().Add(time.Hour), time.Minute))
	if n := fleetkey.Rejections(fleetkey.KindLock) - before; n != 5 {
		t.Errorf("%d broken locks counted; want 5", n)
	}

	// A genuine lock within its time holds.
	rc.Set(ctx, f.lockKey("held"), f.lockValue(f.lockKey("held"), "t", time.Now(), time.Minute), time.Minute)
	lctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := f.Lock(lctx, "held"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a genuine lock in its time was not waited for: %v", err)
	}
	// The holder's own lock is one it can renew and release.
	unlock, err := f.Lock(ctx, "mine")
	if err != nil {
		t.Fatal(err)
	}
	val, _ := rc.Get(ctx, f.lockKey("mine")).Result()
	if why := f.lockTrouble(f.lockKey("mine"), val, 10000, time.Now()); why != "" {
		t.Errorf("the fleet's own lock is judged bad: %s", why)
	}
	unlock()
	if n, _ := rc.Exists(ctx, f.lockKey("mine")).Result(); n != 0 {
		t.Error("the lock was not released")
	}
}

// A purge that someone without the fleet key adds to the fleet's log is
// not applied, and is deleted; the purges edges make are.
func TestPurgeTrust(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	got := make(chan []string, 4)
	follower := newFleet(t, r, testenv.FleetKey, func(keys []string) { got <- keys })
	maker := newFleet(t, r, testenv.FleetKey, nil)
	rc := rawClient(t, r)
	ctx := context.Background()
	before := fleetkey.Rejections(fleetkey.KindPurge)
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: follower.purgeKey(), Values: []any{"node", "x", "keys", "example.com/a/@v/v1.0.0.zip"}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: follower.purgeKey(), Values: []any{"node", "x", "keys", "example.com/b/@v/v1.0.0.zip", "tag", strings.Repeat("ab", 32)}}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := maker.Purge(ctx, []string{"example.com/c/@v/v1.0.0.zip"}); err != nil {
		t.Fatal(err)
	}
	select {
	case keys := <-got:
		if len(keys) != 1 || keys[0] != "example.com/c/@v/v1.0.0.zip" {
			t.Errorf("applied a purge of %v; want only the edge's purge of example.com/c", keys)
		}
	case <-time.After(time.Minute):
		t.Fatal("the edge's purge was not applied")
	}
	if n := fleetkey.Rejections(fleetkey.KindPurge) - before; n != 2 {
		t.Errorf("%d forged purges counted; want 2", n)
	}
	if n, _ := rc.XLen(ctx, follower.purgeKey()).Result(); n != 1 {
		t.Errorf("%d purges in the log; want 1 (the forged ones deleted)", n)
	}
}

// A node that restarts with its PositionFile applies the purges it missed
// and none it had applied already; without one it applies every purge
// Redis holds again (deleting copies fetched since).
func TestPurgePositionKept(t *testing.T) {
	t.Parallel()
	r := testenv.StartRedis(t)
	conn, err := redisconn.Open(redisconn.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key, err := fleetkey.New(testenv.FleetKey)
	if err != nil {
		t.Fatal(err)
	}
	position := t.TempDir() + "/fleet.position"
	follower := func(positionFile string) (*Fleet, chan string) {
		got := make(chan string, 16)
		f, err := New(Config{Conn: conn, Prefix: t.Name() + ":", Key: key, PositionFile: positionFile,
			OnPurge: func(keys []string) {
				for _, k := range keys {
					got <- k
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		return f, got
	}
	next := func(got chan string) string {
		t.Helper()
		select {
		case k := <-got:
			return k
		case <-time.After(time.Minute):
			t.Fatal("no purge applied within a minute")
			return ""
		}
	}
	publisher := newFleet(t, r, testenv.FleetKey, nil)
	ctx := context.Background()

	f1, got1 := follower(position)
	if err := publisher.Purge(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if k := next(got1); k != "a" {
		t.Fatalf("applied %q; want a", k)
	}
	f1.Close() // the position is saved with the batch applied

	f2, got2 := follower(position)
	defer f2.Close()
	if err := publisher.Purge(ctx, []string{"b"}); err != nil {
		t.Fatal(err)
	}
	if k := next(got2); k != "b" {
		t.Errorf("after a restart the node applied %q first; want only the missed purge b", k)
	}

	// Without a position file the node applies every purge again.
	f3, got3 := follower("")
	defer f3.Close()
	if k := next(got3); k != "a" {
		t.Errorf("without a position the node applied %q first; want a again", k)
	}
}

// With a failover time, an edge whose Redis fails waits that long for it
// to come back before going on without the lock, and takes the lock if it
// does; once Redis has failed for longer, Lock gives up at once. Without
// one, it gives up at once from the start.
func TestLockWaitsForFailover(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	r := testenv.StartRedis(t)
	key, err := fleetkey.New(testenv.FleetKey)
	if err != nil {
		t.Fatal(err)
	}
	open := func(failover time.Duration) *Fleet {
		conn, err := redisconn.Open(redisconn.Config{URL: r.URL(), Timeout: 200 * time.Millisecond, Failover: failover})
		if err != nil {
			t.Fatal(err)
		}
		f, err := New(Config{Conn: conn, Prefix: t.Name() + ":", Key: key})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close(); conn.Close() })
		return f
	}
	const failover = 3 * time.Second
	waiting, impatient := open(failover), open(0)
	r.Stop()
	start := time.Now()
	if _, err := impatient.Lock(t.Context(), "k0"); err == nil {
		t.Fatal("Lock on a dead redis succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("without a failover time, Lock gave up after %v; want at once (a timeout or two)", d)
	}
	// Redis comes back within the failover time: the lock is taken.
	got := make(chan error, 1)
	start = time.Now()
	go func() {
		unlock, err := waiting.Lock(t.Context(), "k1")
		if err == nil {
			unlock()
		}
		got <- err
	}()
	// Lock has met the dead Redis before it comes back.
	for waiting.conn.FailingFor() == 0 && time.Since(start) < time.Minute {
		time.Sleep(10 * time.Millisecond)
	}
	r.Start()
	if err := <-got; err != nil {
		t.Fatalf("redis back within the failover time: Lock: %v", err)
	}
	// Dead for longer than the failover time: Lock waits out what is
	// left of it, then gives up; after that, at once.
	r.Stop()
	start = time.Now()
	if _, err := waiting.Lock(t.Context(), "k2"); err == nil {
		t.Fatal("Lock on a dead redis succeeded")
	}
	if d := time.Since(start); d < failover/2 || d > failover+2*time.Second {
		t.Errorf("a dead redis: Lock gave up after %v; want about the failover time (%v)", d, failover)
	}
	start = time.Now()
	if _, err := waiting.Lock(t.Context(), "k3"); err == nil {
		t.Fatal("Lock on a dead redis succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("redis dead for longer than the failover time: Lock gave up after %v; want at once", d)
	}
}
