package redistier

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/cachetier/tiertest"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/redisconn"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tier suite on a real redis-server.
func TestTierSuite(t *testing.T) {
	t.Parallel()
	tiertest.Suite(t, func(t *testing.T) cachetier.Tier {
		rt, _ := openRedis(t)
		return rt
	})
}

func openRedis(t *testing.T) (*Tier, *redisconn.Conn) {
	t.Helper()
	r := testenv.StartRedis(t)
	conn, err := redisconn.Open(redisconn.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rt, err := New(Config{Conn: conn, Prefix: "test:", Key: tiertest.FleetKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	return rt, conn
}

// A Redis value names its key: one copied to another key is refused and
// deleted.
func TestRedisValueBoundToKey(t *testing.T) {
	t.Parallel()
	rt, conn := openRedis(t)
	ctx := context.Background()
	tiertest.Put(t, rt, "example.com/a/@v/v1.0.0.mod", []byte("module example.com/a\n"), time.Time{})
	val, err := conn.Client.Get(ctx, rt.objKey("example.com/a/@v/v1.0.0.mod")).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	conn.Client.Set(ctx, rt.objKey("example.com/b/@v/v1.0.0.mod"), val, 0)
	if _, err := rt.Get(ctx, "example.com/b/@v/v1.0.0.mod"); !errors.Is(err, cachetier.ErrMiss) {
		t.Fatalf("another key's value served: %v", err)
	}
	if n, _ := conn.Client.Exists(ctx, rt.objKey("example.com/b/@v/v1.0.0.mod")).Result(); n != 0 {
		t.Error("the foreign value was not deleted")
	}
	if o, err := rt.Get(ctx, "example.com/a/@v/v1.0.0.mod"); err != nil || string(tiertest.ReadAll(t, o)) != "module example.com/a\n" {
		t.Errorf("the genuine value: %v", err)
	}
}

// After a purge, no copy stored before it is written back into Redis; a
// fresh fetch is.
func TestRedisTombstone(t *testing.T) {
	t.Parallel()
	rt, _ := openRedis(t)
	ctx := context.Background()
	key := "example.com/a/@v/v1.0.0.zip"
	old := cachetier.MetaFor([]byte("old"), time.Time{})
	old.Stored = time.Now().Add(-time.Minute)
	if err := rt.Put(ctx, key, old, []byte("old")); err != nil {
		t.Fatal(err)
	}
	if err := rt.Purge(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := rt.Put(ctx, key, old, []byte("old")); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Get(ctx, key); !errors.Is(err, cachetier.ErrMiss) {
		t.Fatalf("a copy from before the purge came back: %v", err)
	}
	fresh := cachetier.MetaFor([]byte("new"), time.Time{})
	fresh.Stored = time.Now().Add(time.Second)
	rt.Put(ctx, key, fresh, []byte("new"))
	if o, err := rt.Get(ctx, key); err != nil || string(tiertest.ReadAll(t, o)) != "new" {
		t.Fatalf("a fresh copy after the purge: %v", err)
	}
}

// What a shared tier holds is given to the caller's check before it is
// served or promoted; a rejected value is deleted there.
func TestTieredChecksSharedTier(t *testing.T) {
	t.Parallel()
	rt, conn := openRedis(t)
	d := tiertest.Disk(t)
	m, _ := cachetier.NewMemoryTier(1<<20, 1<<20)
	tiers := cachetier.NewTiered(nil, d, m, rt)
	defer tiers.Close()
	key := "example.com/a/@v/v1.0.0.mod"
	tiertest.Put(t, rt, key, []byte("module example.com/evil\n"), time.Time{})
	reject := func(*cachetier.Object) error {
		return fmt.Errorf("%w: contradicts the checksum database", cachetier.ErrRejected)
	}
	if _, err := tiers.Get(t.Context(), key, reject); !errors.Is(err, cachetier.ErrMiss) {
		t.Fatalf("a rejected value was served: %v", err)
	}
	m.Wait()
	if _, err := m.Get(t.Context(), key); !errors.Is(err, cachetier.ErrMiss) {
		t.Error("a rejected value was promoted to memory")
	}
	if n, _ := conn.Client.Exists(t.Context(), rt.objKey(key)).Result(); n != 0 {
		t.Error("a rejected value was left in redis")
	}
	// A check that cannot decide (the database is down) skips the value
	// without deleting it.
	tiertest.Put(t, rt, key, []byte("module example.com/a\n"), time.Time{})
	if _, err := tiers.Get(t.Context(), key, func(*cachetier.Object) error { return errors.New("database unreachable") }); !errors.Is(err, cachetier.ErrMiss) {
		t.Fatalf("an unchecked value was served: %v", err)
	}
	if n, _ := conn.Client.Exists(t.Context(), rt.objKey(key)).Result(); n != 1 {
		t.Error("a value that could not be checked was deleted")
	}
}

// A Redis value or tombstone that someone without the fleet key wrote is
// refused (the value deleted, the tombstone deleted and the put done) and
// counted; a genuine tombstone holds older copies back.
func TestRedisValuesSigned(t *testing.T) {
	t.Parallel()
	rt, conn := openRedis(t)
	ctx := context.Background()
	other, err := fleetkey.New("another-fleet-key-that-is-long-enough-0000")
	if err != nil {
		t.Fatal(err)
	}
	forger, err := New(Config{Conn: conn, Prefix: "test:", Key: other})
	if err != nil {
		t.Fatal(err)
	}
	objBefore, tombBefore := fleetkey.Rejections(fleetkey.KindRedisObject), fleetkey.Rejections(fleetkey.KindTombstone)
	key := "git.corp.example/x/@v/v1.0.0.mod"
	tiertest.Put(t, forger, key, []byte("module git.corp.example/evil\n"), time.Time{})
	if _, err := rt.Get(ctx, key); !errors.Is(err, cachetier.ErrMiss) {
		t.Fatalf("a forged value was served: %v", err)
	}
	if n, _ := conn.Client.Exists(ctx, rt.objKey(key)).Result(); n != 0 {
		t.Error("the forged value was not deleted")
	}
	// A forged tombstone, dated in the future, would keep every copy out
	// of Redis.
	conn.Client.Set(ctx, rt.tombKey(key), "99999999999999 "+strings.Repeat("ab", 32), 0)
	tiertest.Put(t, rt, key, []byte("module git.corp.example/x\n"), time.Time{})
	if o, err := rt.Get(ctx, key); err != nil || string(tiertest.ReadAll(t, o)) != "module git.corp.example/x\n" {
		t.Errorf("a forged tombstone kept the value out: %v", err)
	}
	if n, _ := conn.Client.Exists(ctx, rt.tombKey(key)).Result(); n != 0 {
		t.Error("the forged tombstone was not deleted")
	}
	// A genuine one holds an older copy back.
	if err := rt.Purge(ctx, key); err != nil {
		t.Fatal(err)
	}
	old := cachetier.MetaFor([]byte("old"), time.Time{})
	old.Stored = time.Now().Add(-time.Minute)
	if err := rt.Put(ctx, key, old, []byte("old")); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Get(ctx, key); !errors.Is(err, cachetier.ErrMiss) {
		t.Errorf("a copy older than the purge was written back: %v", err)
	}
	if n := fleetkey.Rejections(fleetkey.KindRedisObject) - objBefore; n != 1 {
		t.Errorf("%d forged values counted; want 1", n)
	}
	if n := fleetkey.Rejections(fleetkey.KindTombstone) - tombBefore; n != 1 {
		t.Errorf("%d forged tombstones counted; want 1", n)
	}
}
