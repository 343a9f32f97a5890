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
// full 128 MiB tier would hold the process near 300 MiB. A limit set
// before Piraeus (Caddy sets one at start, 90% of the cgroup's limit or of
// the machine's memory) is a ceiling, not a reason to give up: the limit
// in force is the lower of the two. The operator's GOMEMLIMIT is left
// alone.
var memLimit struct {
	mu      sync.Mutex
	budgets map[string]int64 // pooled memory tier key -> budget
	set     int64            // the limit last set here, 0: none
	outer   int64            // a limit set by someone else (Caddy), 0: none
	said    string           // why, as last logged
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
		logger.Info("soft memory limit: GOMEMLIMIT, as the operator set it", zap.String("GOMEMLIMIT", os.Getenv("GOMEMLIMIT")))
		return
	}
	current := debug.SetMemoryLimit(-1)
	if current != math.MaxInt64 && current != memLimit.set {
		memLimit.outer = current // set since (or before) this one's: Caddy's, or a library's
	}
	var want int64
	if len(memLimit.budgets) > 0 {
		want = memLimitHeadroom
		for _, b := range memLimit.budgets {
			want += b
		}
	}
	limit, why := want, "the memory tiers' budgets plus 48 MiB"
	switch {
	case want == 0 && memLimit.outer > 0:
		limit, why = memLimit.outer, "set before Piraeus (Caddy's, from the cgroup's limit or the machine's memory)"
	case want == 0:
		limit, why = math.MaxInt64, "none"
	case memLimit.outer > 0 && memLimit.outer < want:
		limit, why = memLimit.outer, "set before Piraeus (Caddy's, from the cgroup's limit or the machine's memory), lower than the memory tiers' budgets plus 48 MiB"
	}
	memLimit.set = 0
	if limit != math.MaxInt64 && limit != memLimit.outer {
		memLimit.set = limit
	}
	if limit == current && why == memLimit.said {
		return
	}
	debug.SetMemoryLimit(limit)
	memLimit.said = why
	fields := []zap.Field{zap.String("why", why)}
	if limit != math.MaxInt64 {
		fields = append(fields, zap.Int64("bytes", limit))
	}
	if memLimit.outer > 0 {
		fields = append(fields, zap.Int64("outer_bytes", memLimit.outer))
	}
	logger.Info("soft memory limit in force (GOMEMLIMIT overrides)", fields...)
}
