package caddymodule

import (
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"go.uber.org/zap"
)

// memLimitHeadroom is what the process may use beyond Caddy's own
// footprint and what its memory tiers hold, under the soft memory limit
// Piraeus sets: connections, buffers of requests in flight, the checksum
// database client and the other tiers' bookkeeping.
const memLimitHeadroom = 16 << 20

// memLimitFloor is the least footprint taken for Caddy itself, whatever
// was measured when the first memory tier opened.
const memLimitFloor = 8 << 20

// memLimitEvery is how often the limit follows the tiers' contents.
const memLimitEvery = time.Second

// The soft memory limit (runtime/debug.SetMemoryLimit) follows what the
// memory tiers open in the process hold: Caddy's own footprint (the Go
// runtime's memory in use, after a collection, when the first memory tier
// opened), plus the tiers' contents, plus memLimitHeadroom. It is
// recomputed every memLimitEvery while a tier is open. The Go heap
// otherwise grows to twice its live size between collections, and a limit
// from the tiers' budgets would let it fill them with garbage as well as
// with objects. A limit set before Piraeus (Caddy sets one at start, 90%
// of the cgroup's limit or of the machine's memory) is a ceiling, not a
// reason to give up: the limit in force is the lower of the two. The
// operator's GOMEMLIMIT is left alone.
var memLimit struct {
	mu     sync.Mutex
	tiers  map[string]func() int64 // pooled memory tier key -> its contents in bytes
	base   int64                   // Caddy's footprint when the first tier opened
	set    int64                   // the limit last set here, 0: none
	outer  int64                   // a limit set by someone else (Caddy), 0: none
	said   string                  // why, as last logged
	logger *zap.Logger
	stop   chan struct{} // closed to end the follower; nil when none runs
}

// trackMemoryTier counts a memory tier's contents (contents nil: the tier
// closed) in the soft memory limit.
func trackMemoryTier(key string, contents func() int64, logger *zap.Logger) {
	memLimit.mu.Lock()
	defer memLimit.mu.Unlock()
	if memLimit.tiers == nil {
		memLimit.tiers = map[string]func() int64{}
	}
	if contents != nil {
		if len(memLimit.tiers) == 0 {
			memLimit.base = footprint()
		}
		memLimit.tiers[key] = contents
	} else {
		delete(memLimit.tiers, key)
	}
	memLimit.logger = logger
	applyMemLimit(true)
	switch {
	case len(memLimit.tiers) > 0 && memLimit.stop == nil:
		memLimit.stop = make(chan struct{})
		go followMemLimit(memLimit.stop)
	case len(memLimit.tiers) == 0 && memLimit.stop != nil:
		close(memLimit.stop)
		memLimit.stop = nil
	}
}

// followMemLimit recomputes the limit every memLimitEvery until stop.
func followMemLimit(stop chan struct{}) {
	t := time.NewTicker(memLimitEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			memLimit.mu.Lock()
			applyMemLimit(false)
			memLimit.mu.Unlock()
		}
	}
}

// footprint is the Go runtime's memory in use after a collection: what
// Caddy holds before any memory tier opens.
func footprint() int64 {
	runtime.GC()
	s := []metrics.Sample{
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(s)
	var v [3]int64
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			v[i] = int64(s[i].Value.Uint64())
		}
	}
	return max(v[0]-v[1]-v[2], memLimitFloor)
}

// memLimitWant is the limit the open tiers ask for (0: none open).
func memLimitWant() int64 {
	if len(memLimit.tiers) == 0 {
		return 0
	}
	want := memLimit.base + memLimitHeadroom
	for _, contents := range memLimit.tiers {
		want += max(contents(), 0)
	}
	return want
}

// applyMemLimit sets the limit; called with memLimit.mu held. A change of
// the reason is logged, and with logAlways the limit itself.
func applyMemLimit(logAlways bool) {
	if os.Getenv("GOMEMLIMIT") != "" {
		if logAlways && memLimit.logger != nil {
			memLimit.logger.Info("soft memory limit: GOMEMLIMIT, as the operator set it", zap.String("GOMEMLIMIT", os.Getenv("GOMEMLIMIT")))
		}
		return
	}
	current := debug.SetMemoryLimit(-1)
	if current != math.MaxInt64 && current != memLimit.set {
		memLimit.outer = current // set since (or before) this one's: Caddy's, or a library's
	}
	want := memLimitWant()
	limit, why := want, "Caddy's footprint plus the memory tiers' contents plus 16 MiB, followed every second"
	switch {
	case want == 0 && memLimit.outer > 0:
		limit, why = memLimit.outer, "set before Piraeus (Caddy's, from the cgroup's limit or the machine's memory)"
	case want == 0:
		limit, why = math.MaxInt64, "none"
	case memLimit.outer > 0 && memLimit.outer < want:
		limit, why = memLimit.outer, "set before Piraeus (Caddy's, from the cgroup's limit or the machine's memory), lower than Caddy's footprint plus the memory tiers' contents plus 16 MiB"
	}
	memLimit.set = 0
	if limit != math.MaxInt64 && limit != memLimit.outer {
		memLimit.set = limit
	}
	if limit != current {
		debug.SetMemoryLimit(limit)
	}
	if memLimit.logger == nil || (!logAlways && why == memLimit.said) || (limit == current && why == memLimit.said) {
		return
	}
	memLimit.said = why
	fields := []zap.Field{zap.String("why", why)}
	if limit != math.MaxInt64 {
		fields = append(fields, zap.Int64("bytes", limit))
	}
	if want > 0 {
		fields = append(fields, zap.Int64("caddy_bytes", memLimit.base))
	}
	if memLimit.outer > 0 {
		fields = append(fields, zap.Int64("outer_bytes", memLimit.outer))
	}
	memLimit.logger.Info("soft memory limit in force (GOMEMLIMIT overrides)", fields...)
}
