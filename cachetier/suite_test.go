package cachetier_test

import (
	"context"
	"testing"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/cachetier/tiertest"
)

// The tier suite on the tiers of this package; the Redis and S3 tiers run
// it in theirs.
func TestTierSuite(t *testing.T) {
	t.Parallel()
	tiers := map[string]func(t *testing.T) cachetier.Tier{
		"memory": func(t *testing.T) cachetier.Tier {
			m, err := cachetier.NewMemoryTier(8<<20, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			return waitingMemory{m}
		},
		"disk": func(t *testing.T) cachetier.Tier { return tiertest.Disk(t) },
	}
	for name, open := range tiers {
		t.Run(name, func(t *testing.T) { tiertest.Suite(t, open) })
	}
}

// waitingMemory applies the memory tier's buffered writes at once, so
// that the suite sees a Put as it sees one of the other tiers.
type waitingMemory struct{ *cachetier.MemoryTier }

func (w waitingMemory) Put(ctx context.Context, key string, meta cachetier.Meta, data []byte) error {
	err := w.MemoryTier.Put(ctx, key, meta, data)
	w.Wait()
	return err
}
