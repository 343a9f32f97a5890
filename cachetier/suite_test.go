package cachetier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// The tier suite: every Tier keeps the same contract, whatever it keeps
// objects in. Each tier runs it.
func TestTierSuite(t *testing.T) {
	t.Parallel()
	tiers := map[string]func(t *testing.T) Tier{
		"memory": func(t *testing.T) Tier {
			m, err := NewMemoryTier(8<<20, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			return waitingMemory{m}
		},
		"disk": func(t *testing.T) Tier { return openDisk(t, DiskConfig{}) },
		"redis": func(t *testing.T) Tier {
			rt, _ := openRedis(t)
			return rt
		},
		"s3": func(t *testing.T) Tier { return openS3(t, testenv.StartS3(t), S3Config{}) },
	}
	for name, open := range tiers {
		t.Run(name, func(t *testing.T) { tierSuite(t, open) })
	}
}

// waitingMemory applies the memory tier's buffered writes at once, so
// that the suite sees a Put as it sees one of the other tiers.
type waitingMemory struct{ *MemoryTier }

func (w waitingMemory) Put(ctx context.Context, key string, meta Meta, data []byte) error {
	err := w.MemoryTier.Put(ctx, key, meta, data)
	w.Wait()
	return err
}

func tierSuite(t *testing.T, open func(t *testing.T) Tier) {
	ctx := context.Background()
	get := func(tier Tier, key string) ([]byte, Meta, error) {
		o, err := tier.Get(ctx, key)
		if err != nil {
			return nil, Meta{}, err
		}
		defer o.Close()
		return readAll(t, o), o.Meta, nil
	}
	t.Run("round trip", func(t *testing.T) {
		tier := open(t)
		data := []byte("module example.com/a\n")
		meta := MetaFor(data, time.Time{})
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
	})
	t.Run("miss", func(t *testing.T) {
		if _, _, err := get(open(t), "example.com/none/@v/list"); !errors.Is(err, ErrMiss) {
			t.Fatalf("missing key: %v; want ErrMiss", err)
		}
	})
	t.Run("replace and delete", func(t *testing.T) {
		tier := open(t)
		key := "example.com/a/@v/list"
		for _, v := range []string{"v1.0.0\n", "v1.0.0\nv1.1.0\n"} {
			if err := tier.Put(ctx, key, MetaFor([]byte(v), time.Now().Add(time.Hour)), []byte(v)); err != nil {
				t.Fatal(err)
			}
		}
		if got, m, err := get(tier, key); err != nil || string(got) != "v1.0.0\nv1.1.0\n" || m.Expires.IsZero() {
			t.Fatalf("replaced: %q, expires %v, %v", got, m.Expires, err)
		}
		if err := tier.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if _, _, err := get(tier, key); !errors.Is(err, ErrMiss) {
			t.Fatalf("deleted key: %v", err)
		}
		if err := tier.Delete(ctx, key); err != nil {
			t.Errorf("deleting a missing key: %v", err)
		}
	})
	t.Run("empty object", func(t *testing.T) {
		tier := open(t)
		if err := tier.Put(ctx, "example.com/e/@v/list", MetaFor(nil, time.Now().Add(time.Hour)), nil); err != nil {
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
		if err := tier.Put(ctx, "example.com/big/@v/v1.0.0.zip", MetaFor(big, time.Time{}), big); err != nil {
			t.Fatal(err)
		}
		if _, _, err := get(tier, "example.com/big/@v/v1.0.0.zip"); !errors.Is(err, ErrMiss) {
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
				if err := tier.Put(ctx, key, MetaFor(data, time.Time{}), data); err != nil {
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
