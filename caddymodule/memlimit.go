package caddymodule

import (
	"math"
	"os"
	"runtime/debug"
	"sync"

	"go.uber.org/zap"
)

// memLimitHeadroom is what the process may use beyond its memory tiers'
// budgets under the soft memory limit Piraeus sets: Caddy, connections,
// buffers of requests in flight, the sumdb client and the other tiers'
// bookkeeping.
const memLimitHeadroom = 48 << 20

// The soft memory limit (runtime/debug.SetMemoryLimit) follows the memory
// tiers open in the process: their budgets plus memLimitHeadroom. The Go
// heap otherwise grows to twice its live size between collections, so a
// full 128 MiB tier would hold the process near 300 MiB. The operator's
// GOMEMLIMIT, or a limit set by anyone else (Caddy sets one from a cgroup
// limit), is left alone.
var memLimit struct {
	mu      sync.Mutex
	budgets map[string]int64 // pooled memory tier key -> budget
	set     int64            // the limit last set here, 0: none
}

func trackMemoryBudget(key string, budget int64, logger *zap.Logger) {
	memLimit.mu.Lock()
	defer memLimit.mu.Unlock()
	if memLimit.budgets == nil {
		memLimit.budgets = map[string]int64{}
	}
	if budget > 0 {
		memLimit.budgets[key] = budget
	} else {
		delete(memLimit.budgets, key)
	}
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	current := debug.SetMemoryLimit(-1)
	if current != math.MaxInt64 && current != memLimit.set {
		return // someone else's
	}
	if len(memLimit.budgets) == 0 {
		if memLimit.set != 0 {
			debug.SetMemoryLimit(math.MaxInt64)
			memLimit.set = 0
		}
		return
	}
	var limit int64 = memLimitHeadroom
	for _, b := range memLimit.budgets {
		limit += b
	}
	if limit != memLimit.set {
		debug.SetMemoryLimit(limit)
		memLimit.set = limit
		logger.Info("soft memory limit set from the memory tiers' budgets (GOMEMLIMIT overrides)", zap.Int64("bytes", limit))
	}
}
