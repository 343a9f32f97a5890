package caddymodule

import (
	"math"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
)

// The soft memory limit follows what the memory tiers hold (not their
// budgets), above Caddy's footprint, under a limit set before (Caddy's,
// from the cgroup or the machine's memory), and is left alone when the
// operator set GOMEMLIMIT.
func TestSoftMemoryLimitFollowsMemoryTiers(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetMemoryLimit(-1)
	var a, b atomic.Int64
	contentsA, contentsB := func() int64 { return a.Load() }, func() int64 { return b.Load() }
	t.Cleanup(func() {
		trackMemoryTier("test:a", nil, zap.NewNop())
		trackMemoryTier("test:b", nil, zap.NewNop())
		debug.SetMemoryLimit(prev)
	})
	// The limit other open tiers (of other tests) and Caddy's footprint
	// ask for, beside test:a and test:b.
	others := func() int64 {
		memLimit.mu.Lock()
		defer memLimit.mu.Unlock()
		n := memLimit.base + memLimitHeadroom
		for k, contents := range memLimit.tiers {
			if k != "test:a" && k != "test:b" {
				n += contents()
			}
		}
		return n
	}
	memLimit.mu.Lock() // the follower of other tests' open tiers writes it
	ours := memLimit.set
	memLimit.mu.Unlock()
	if prev != math.MaxInt64 && prev != ours {
		debug.SetMemoryLimit(math.MaxInt64) // a limit from the environment of the test run
	}
	a.Store(100 << 20)
	trackMemoryTier("test:a", contentsA, zap.NewNop())
	memLimit.mu.Lock()
	base := memLimit.base
	memLimit.mu.Unlock()
	if base < memLimitFloor {
		t.Errorf("Caddy's footprint taken as %d, below the floor %d", base, memLimitFloor)
	}
	if got, want := debug.SetMemoryLimit(-1), others()+100<<20; got != want {
		t.Errorf("limit %d with one tier holding 100 MiB; want %d", got, want)
	}
	trackMemoryTier("test:b", contentsB, zap.NewNop())
	if got, want := debug.SetMemoryLimit(-1), others()+100<<20; got != want {
		t.Errorf("limit %d with a second, empty tier; want %d (its budget does not count)", got, want)
	}

	// The follower's round raises the limit as a tier fills, and lowers
	// it as the tier is emptied.
	memLimit.mu.Lock()
	following := memLimit.stop != nil
	memLimit.mu.Unlock()
	if !following {
		t.Error("no follower runs while memory tiers are open")
	}
	b.Store(28 << 20)
	followRound()
	if got, want := debug.SetMemoryLimit(-1), others()+128<<20; got != want {
		t.Errorf("limit %d after a tier filled to 28 MiB; want %d", got, want)
	}
	a.Store(10 << 20)
	followRound()
	if got, want := debug.SetMemoryLimit(-1), others()+38<<20; got != want {
		t.Errorf("limit %d after a tier was emptied to 10 MiB; want %d", got, want)
	}
	trackMemoryTier("test:b", nil, zap.NewNop())
	if got, want := debug.SetMemoryLimit(-1), others()+10<<20; got != want {
		t.Errorf("limit %d after a tier closed; want %d", got, want)
	}

	// A limit set before, as Caddy sets one at start from the cgroup or
	// the machine's memory, is a ceiling: the lower of the two holds.
	memLimit.mu.Lock()
	memLimit.set, memLimit.outer = 0, 0
	memLimit.mu.Unlock()
	debug.SetMemoryLimit(1 << 40)
	trackMemoryTier("test:b", contentsB, zap.NewNop())
	if got, want := debug.SetMemoryLimit(-1), others()+38<<20; got != want {
		t.Errorf("limit %d under Caddy's 1 TiB; want the tiers' %d", got, want)
	}
	trackMemoryTier("test:a", nil, zap.NewNop())
	trackMemoryTier("test:b", nil, zap.NewNop())
	memLimit.mu.Lock()
	open := len(memLimit.tiers)
	memLimit.mu.Unlock()
	if open == 0 {
		if got := debug.SetMemoryLimit(-1); got != 1<<40 {
			t.Errorf("limit %d once the tiers closed; want Caddy's 1 TiB back", got)
		}
	}
	memLimit.mu.Lock()
	memLimit.set, memLimit.outer = 0, 0
	memLimit.mu.Unlock()
	debug.SetMemoryLimit(64 << 20) // lower than what the tiers hold
	trackMemoryTier("test:b", contentsB, zap.NewNop())
	trackMemoryTier("test:a", func() int64 { return 100 << 20 }, zap.NewNop())
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Errorf("limit %d; want the lower one set before, 64 MiB", got)
	}
	trackMemoryTier("test:a", nil, zap.NewNop())
	t.Setenv("GOMEMLIMIT", "2GiB")
	debug.SetMemoryLimit(math.MaxInt64)
	trackMemoryTier("test:a", contentsA, zap.NewNop())
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set, the limit was changed to %d", got)
	}
}

// followRound is one round of the follower.
func followRound() {
	memLimit.mu.Lock()
	defer memLimit.mu.Unlock()
	applyMemLimit(false)
}

// A memory tier's contents are what the limit counts: a Put raises the
// usage the follower reads.
func TestMemoryTierUsageCountsContents(t *testing.T) {
	m, err := cachetier.NewMemoryTier(8<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	data := make([]byte, 100<<10)
	if err := m.Put(t.Context(), "k", cachetier.MetaFor(data, time.Time{}), data); err != nil {
		t.Fatal(err)
	}
	m.Wait()
	if _, n := m.Usage(); n < 100<<10 {
		t.Errorf("usage %d after a 100 KiB put; want at least that", n)
	}
}
