// Package tiertest is the contract every cache tier keeps, whatever it
// keeps objects in: each tier's package runs Suite on it (as Athens runs
// one compliance suite for all its storage backends), so that a tier of a
// package of its own, or of a third party's guest module, is held to the
// same contract.
package tiertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// FleetKey is the tests' fleet key (testenv.FleetKey), for the tiers that
// sign what they hold.
func FleetKey(t testing.TB) *fleetkey.Key {
	t.Helper()
	k, err := fleetkey.New(testenv.FleetKey)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ReadAll reads an object's content whole.
func ReadAll(t testing.TB, o *cachetier.Object) []byte {
	t.Helper()
	b, err := io.ReadAll(o.Reader())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Put stores data under key in tier, expiring at expires (zero: never).
func Put(t testing.TB, tier cachetier.Tier, key string, data []byte, expires time.Time) {
	t.Helper()
	if err := tier.Put(t.Context(), key, cachetier.MetaFor(data, expires), data); err != nil {
		t.Fatal(err)
	}
}

// Suite checks the Tier contract on tiers that open returns, a new one
// (or a new view of an empty store) for each subtest: round trip, miss,
// replace and delete, empty objects, the size limit, concurrent use.
func Suite(t *testing.T, open func(t *testing.T) cachetier.Tier) {
	ctx := context.Background()
	get := func(tier cachetier.Tier, key string) ([]byte, cachetier.Meta, error) {
		o, err := tier.Get(ctx, key)
		if err != nil {
			return nil, cachetier.Meta{}, err
		}
		defer o.Close()
		return ReadAll(t, o), o.Meta, nil
	}
	t.Run("round trip", func(t *testing.T) {
		tier := open(t)
		data := []byte("module example.com/a\n")
		meta := cachetier.MetaFor(data, time.Time{})
		if err := tier.Put(ctx, "example.com/a/@v/v1.0.0.mod", meta, data); err != nil {
			t.Fatal(err)
		}
		got, gm, err := get(tier, "example.com/a/@v/v1.0.0.mod")
		if err != nil || !bytes.Equal(got, data) || gm.Sum != meta.Sum || gm.Size != meta.Size || !gm.Expires.IsZero() {
			t.Fatalf("got %q %+v %v", got, gm, err)
		}
		if o, err := tier.Get(ctx, "example.com/a/@v/v1.0.0.mod"); err != nil || o.Tier != tier.Name() {
			t.Errorf("object from tier %q; want %q (%v)", o.Tier, tier.Name(), err)
		}
		if h, ok := tier.(cachetier.Holder); ok {
			held, err := h.Holds(ctx, "example.com/a/@v/v1.0.0.mod")
			missing, err2 := h.Holds(ctx, "example.com/a/@v/v9.9.9.mod")
			if !held || missing || err != nil || err2 != nil {
				t.Errorf("Holds: the stored key %v (%v), a missing one %v (%v)", held, err, missing, err2)
			}
		}
	})
	t.Run("miss", func(t *testing.T) {
		if _, _, err := get(open(t), "example.com/none/@v/list"); !errors.Is(err, cachetier.ErrMiss) {
			t.Fatalf("missing key: %v; want cachetier.ErrMiss", err)
		}
	})
	t.Run("replace and delete", func(t *testing.T) {
		tier := open(t)
		key := "example.com/a/@v/list"
		for _, v := range []string{"v1.0.0\n", "v1.0.0\nv1.1.0\n"} {
			if err := tier.Put(ctx, key, cachetier.MetaFor([]byte(v), time.Now().Add(time.Hour)), []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		if got, m, err := get(tier, key); err != nil || string(got) != "v1.0.0\nv1.1.0\n" || m.Expires.IsZero() {
			t.Fatalf("replaced: %q, expires %v, %v", got, m.Expires, err)
		}
		if err := tier.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if _, _, err := get(tier, key); !errors.Is(err, cachetier.ErrMiss) {
			t.Fatalf("deleted key: %v", err)
		}
		if err := tier.Delete(ctx, key); err != nil {
			t.Errorf("deleting a missing key: %v", err)
		}
	})
	t.Run("empty object", func(t *testing.T) {
		tier := open(t)
		if err := tier.Put(ctx, "example.com/e/@v/list", cachetier.MetaFor(nil, time.Now().Add(time.Hour)), nil); err != nil {
			t.Fatal(err)
		}
		if got, _, err := get(tier, "example.com/e/@v/list"); err != nil || len(got) != 0 {
			t.Fatalf("empty object: %q %v", got, err)
		}
	})
	t.Run("size limit", func(t *testing.T) {
		tier := open(t)
		if tier.MaxObject() > 1<<40 {
			return // the tier of record keeps objects of any size
		}
		big := bytes.Repeat([]byte("b"), int(tier.MaxObject())+1)
		if err := tier.Put(ctx, "example.com/big/@v/v1.0.0.zip", cachetier.MetaFor(big, time.Time{}), big); err != nil {
			t.Fatal(err)
		}
		if _, _, err := get(tier, "example.com/big/@v/v1.0.0.zip"); !errors.Is(err, cachetier.ErrMiss) {
			t.Fatalf("an object over MaxObject was kept: %v", err)
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		tier := open(t)
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("example.com/c/@v/v1.0.%d.info", i%4)
				data := []byte(key)
				if err := tier.Put(ctx, key, cachetier.MetaFor(data, time.Time{}), data); err != nil {
					t.Error(err)
					return
				}
				if got, _, err := get(tier, key); err != nil || !bytes.Equal(got, data) {
					t.Errorf("%s: %q %v", key, got, err)
				}
			}()
		}
		wg.Wait()
	})
}

// Disk is a disk tier in a temp dir of t's, closed when t ends.
func Disk(t testing.TB) *cachetier.DiskTier {
	t.Helper()
	d, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
