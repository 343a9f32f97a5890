package caddymodule

import (
	"math"
	"runtime/debug"
	"testing"

	"go.uber.org/zap"
)

// The soft memory limit follows the memory tiers' budgets, under a limit
// set before (Caddy's, from the cgroup or the machine's memory), and is
// left alone when the operator set GOMEMLIMIT.
func TestSoftMemoryLimitFollowsMemoryTiers(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "")
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		trackMemoryBudget("test:a", 0, zap.NewNop())
		trackMemoryBudget("test:b", 0, zap.NewNop())
		debug.SetMemoryLimit(prev)
	})
	others := func() int64 {
		memLimit.mu.Lock()
		defer memLimit.mu.Unlock()
		var n int64
		for k, b := range memLimit.budgets {
			if k != "test:a" && k != "test:b" {
				n += b
			}
		}
		return n
	}
	if prev != math.MaxInt64 && prev != memLimit.set {
		debug.SetMemoryLimit(math.MaxInt64) // a limit from the environment of the test run
	}
	trackMemoryBudget("test:a", 100<<20, zap.NewNop())
	if got, want := debug.SetMemoryLimit(-1), others()+100<<20+memLimitHeadroom; got != want {
		t.Errorf("limit %d with one 100 MiB tier; want %d", got, want)
	}
	trackMemoryBudget("test:b", 28<<20, zap.NewNop())
	if got, want := debug.SetMemoryLimit(-1), others()+128<<20+memLimitHeadroom; got != want {
		t.Errorf("limit %d with 100 and 28 MiB tiers; want %d", got, want)
	}
	trackMemoryBudget("test:b", 0, zap.NewNop())
	if got, want := debug.SetMemoryLimit(-1), others()+100<<20+memLimitHeadroom; got != want {
		t.Errorf("limit %d after a tier closed; want %d", got, want)
	}

	// A limit set before, as Caddy sets one at start from the cgroup or
	// the machine's memory, is a ceiling: the lower of the two holds.
	memLimit.mu.Lock()
	memLimit.set, memLimit.outer = 0, 0
	memLimit.mu.Unlock()
	debug.SetMemoryLimit(1 << 40)
	trackMemoryBudget("test:b", 28<<20, zap.NewNop())
	if got, want := debug.SetMemoryLimit(-1), others()+128<<20+memLimitHeadroom; got != want {
		t.Errorf("limit %d under Caddy's 1 TiB; want the tiers' %d", got, want)
	}
	trackMemoryBudget("test:a", 0, zap.NewNop())
	trackMemoryBudget("test:b", 0, zap.NewNop())
	if others() == 0 {
		if got := debug.SetMemoryLimit(-1); got != 1<<40 {
			t.Errorf("limit %d once the tiers closed; want Caddy's 1 TiB back", got)
		}
	}
	memLimit.mu.Lock()
	memLimit.set, memLimit.outer = 0, 0
	memLimit.mu.Unlock()
	debug.SetMemoryLimit(64 << 20) // lower than the tiers' budgets
	trackMemoryBudget("test:b", 28<<20, zap.NewNop())
	trackMemoryBudget("test:a", 100<<20, zap.NewNop())
	if got := debug.SetMemoryLimit(-1); got != 64<<20 {
		t.Errorf("limit %d; want the lower one set before, 64 MiB", got)
	}
	t.Setenv("GOMEMLIMIT", "2GiB")
	debug.SetMemoryLimit(math.MaxInt64)
	trackMemoryBudget("test:a", 50<<20, zap.NewNop())
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("with GOMEMLIMIT set, the limit was changed to %d", got)
	}
}
