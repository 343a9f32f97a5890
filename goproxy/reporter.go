package goproxy

import (
	"sync/atomic"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/piraeus-go/piraeus/artifact"
)

// reporter is the one observer of the stages: each reports what happened
// to it, once per event, and that call feeds the metrics (Prometheus), the
// status page (stats) and, where an operator must hear of it, the log. A stage never talks to the three
// on its own, so they cannot disagree.
type reporter struct {
	metrics        *Metrics // nil: no metrics
	stats          *stats
	log            *zap.Logger
	verifyFailures atomic.Int64
}

// request counts a client's request for a, before it is answered.
func (o *reporter) request(a artifact.Artifact) { o.stats.request(a) }

// answered counts an answer of kind (or "invalid", "sumdb") with its
// result ("ok", "stale", "not_found", …); mod, if set, is the module that
// was served.
func (o *reporter) answered(kind, result, mod string) {
	o.metrics.request(kind, result)
	if mod != "" {
		o.stats.answered(mod)
	}
}

// served counts the body bytes of a's answer.
func (o *reporter) served(a artifact.Artifact, n int64) { o.metrics.served(a, n) }

// hit counts a lookup answered by tier ("presigned" for a redirect to the
// bucket); the status page counts only a client's (not a prefetch's, nor
// a gate's own).
func (o *reporter) hit(tier string, client bool) {
	o.metrics.hit(tier)
	if client {
		o.stats.hit(tier)
	}
}

// miss counts a lookup of a that no tier answered.
func (o *reporter) miss(a artifact.Artifact, client bool) {
	o.metrics.miss(a)
	if client {
		o.stats.miss()
	}
}

// sumdbLookup counts a checksum database record or tile a client asked
// for, answered by tier ("" for a miss): the status page shows them
// apart from the modules' requests.
func (o *reporter) sumdbLookup(tier string) {
	if tier == "" {
		o.metrics.miss(artifact.Artifact{})
		o.stats.sumdbMisses.Add(1)
		return
	}
	o.metrics.hit(tier)
	o.stats.sumdbHits.Add(1)
}

// fetched records a fetch from an upstream, another node or a checksum
// database (a zero), logged as msg at level; rec.Outcome is "ok", "peer",
// "not_found" or "error".
func (o *reporter) fetched(a artifact.Artifact, rec FetchRecord, level zapcore.Level, msg string, fields ...zap.Field) {
	o.log.Log(level, msg, fields...)
	o.metrics.fetch(a, rec.Upstream, rec.Outcome, rec.Duration)
	o.stats.fetched(rec)
}

// unverified says that a was stored with no checksum database vouching
// for it, and why: what is cached forever unverified must be visible.
func (o *reporter) unverified(a artifact.Artifact, reason string) {
	o.metrics.unverified(reason)
	o.stats.storedUnverified(reason)
	o.log.Error("module stored without checksum verification", zap.String("module", a.Module), zap.String("version", a.Version),
		zap.Stringer("kind", a.Kind), zap.String("reason", reason))
}

// mismatch counts content that a checksum database contradicts (fetched,
// or read from a shared tier), logged at error level as msg unless msg is
// "" (the shared tier logs what it deletes).
func (o *reporter) mismatch(msg string, fields ...zap.Field) {
	o.verifyFailures.Add(1)
	o.metrics.verifyFailure()
	if msg != "" {
		o.log.Error(msg, fields...)
	}
}

// waiter counts a request that joined a fetch in progress.
func (o *reporter) waiter() { o.metrics.waiter() }

// prefetched counts a prefetch's outcome, and used one a client asked for.
func (o *reporter) prefetched(a artifact.Artifact, outcome string) { o.metrics.prefetch(a, outcome) }
func (o *reporter) prefetchUsed(a artifact.Artifact)               { o.metrics.prefetchUsed(a) }
