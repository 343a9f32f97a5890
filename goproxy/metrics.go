package goproxy

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
)

// Metrics are the proxy's Prometheus collectors, all named goproxy_*.
// Several proxies registering on one registry share them.
type Metrics struct {
	requests       *prometheus.CounterVec   // kind, result
	hits           *prometheus.CounterVec   // tier
	misses         *prometheus.CounterVec   // kind
	fetches        *prometheus.CounterVec   // upstream, outcome
	fetchDuration  *prometheus.HistogramVec // kind
	collapsed      prometheus.Counter
	verifyFailures prometheus.Counter
	unverifiedMods *prometheus.CounterVec // reason
	sumdbStates    *prometheus.CounterVec // sumdb, state
	servedBytes    *prometheus.CounterVec // kind
	prefetches     *prometheus.CounterVec // kind, outcome
	prefetchHits   *prometheus.CounterVec // kind
}

// NewMetrics creates the collectors and registers them on reg, reusing
// those another proxy already registered there.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	const ns = "goproxy"
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "GOPROXY requests by artifact kind and result."}, []string{"kind", "result"}),
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "cache_hits_total",
			Help: "Requests answered from a cache tier, by tier."}, []string{"tier"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "cache_misses_total",
			Help: "Requests that found no usable copy in any tier, by artifact kind."}, []string{"kind"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "upstream_fetches_total",
			Help: "Fetches from upstream sources, by upstream and outcome."}, []string{"upstream", "outcome"}),
		fetchDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "fetch_duration_seconds",
			Help: "Duration of upstream fetches, body and checks included.", Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 10)}, []string{"kind"}),
		collapsed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "collapsed_waiters_total",
			Help: "Requests that waited for another request's fetch instead of fetching."}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "verification_failures_total",
			Help: "Fetched modules rejected because the checksum database contradicts their hash."}),
		unverifiedMods: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "unverified_total",
			Help: "Fetched .mod and .zip stored without a checksum database's verification, by reason (private, verify_off, no_sumdb)."}, []string{"reason"}),
		sumdbStates: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "sumdb_state_changes_total",
			Help: "Changes of how a checksum database is reached, by database and new state (upstream, direct, configured, unreachable)."}, []string{"sumdb", "state"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "served_bytes_total",
			Help: "Response body bytes served, by artifact kind."}, []string{"kind"}),
		prefetches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "prefetches_total",
			Help: "Artifacts considered for prefetch, by kind and outcome (fetched, cached, not_found, failed, budget, fan_out, upstream_failing, queue_full, in_flight)."}, []string{"kind", "outcome"}),
		prefetchHits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "prefetch_used_total",
			Help: "Prefetched artifacts that a client asked for later, by kind; divided by prefetches_total{outcome=\"fetched\"}, the prefetch's hit rate."}, []string{"kind"}),
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err == nil {
		m.hits, err = register(reg, m.hits)
	}
	if err == nil {
		m.misses, err = register(reg, m.misses)
	}
	if err == nil {
		m.fetches, err = register(reg, m.fetches)
	}
	if err == nil {
		m.fetchDuration, err = register(reg, m.fetchDuration)
	}
	if err == nil {
		m.collapsed, err = register(reg, m.collapsed)
	}
	if err == nil {
		m.verifyFailures, err = register(reg, m.verifyFailures)
	}
	if err == nil {
		m.unverifiedMods, err = register(reg, m.unverifiedMods)
	}
	if err == nil {
		m.sumdbStates, err = register(reg, m.sumdbStates)
	}
	if err == nil {
		m.servedBytes, err = register(reg, m.servedBytes)
	}
	if err == nil {
		m.prefetches, err = register(reg, m.prefetches)
	}
	if err == nil {
		m.prefetchHits, err = register(reg, m.prefetchHits)
	}
	for _, kind := range fleetkey.Kinds {
		if err != nil {
			break
		}
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: ns, Name: "fleet_rejected_total",
			Help:        "Values read from Redis or the bucket that were refused and deleted, by kind: their tag fails the fleet key (written by someone who does not hold it), or, for a lock, it has no expiry or was held past its holder's time.",
			ConstLabels: prometheus.Labels{"kind": kind}}, func() float64 { return float64(fleetkey.Rejections(kind)) })
		_, err = register(reg, prometheus.Collector(c))
	}
	return m, err
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// The methods below accept a nil *Metrics, so the core needs no checks.

func kindLabel(a artifact.Artifact) string {
	if a.Kind == 0 {
		return "sumdb"
	}
	return a.Kind.String()
}

// request counts one answered request; kind is an artifact kind, "sumdb",
// or "invalid" for a path that did not parse.
func (m *Metrics) request(kind, result string) {
	if m != nil {
		m.requests.WithLabelValues(kind, result).Inc()
	}
}

func (m *Metrics) hit(tier string) {
	if m != nil {
		m.hits.WithLabelValues(tier).Inc()
	}
}

func (m *Metrics) miss(a artifact.Artifact) {
	if m != nil {
		m.misses.WithLabelValues(kindLabel(a)).Inc()
	}
}

func (m *Metrics) fetch(a artifact.Artifact, upstream, outcome string, d time.Duration) {
	if m != nil {
		m.fetches.WithLabelValues(upstream, outcome).Inc()
		m.fetchDuration.WithLabelValues(kindLabel(a)).Observe(d.Seconds())
	}
}

func (m *Metrics) waiter() {
	if m != nil {
		m.collapsed.Inc()
	}
}

func (m *Metrics) verifyFailure() {
	if m != nil {
		m.verifyFailures.Inc()
	}
}

func (m *Metrics) unverified(reason string) {
	if m != nil {
		m.unverifiedMods.WithLabelValues(reason).Inc()
	}
}

// SumDBState counts a change of how a checksum database is reached; give
// it to checksumdb.Config.OnState.
func (m *Metrics) SumDBState(sumdb, state string) {
	if m != nil {
		m.sumdbStates.WithLabelValues(sumdb, state).Inc()
	}
}

func (m *Metrics) served(a artifact.Artifact, n int64) {
	if m != nil && n > 0 {
		m.servedBytes.WithLabelValues(kindLabel(a)).Add(float64(n))
	}
}

// RegisterTierUsage exports the occupancy of each tier that reports it as
// goproxy_cache_bytes and goproxy_cache_objects, labelled by tier and by
// the disk directory that identifies the cache.
func RegisterTierUsage(reg prometheus.Registerer, tiers []cachetier.Tier, cache string) error {
	for _, t := range tiers {
		u, ok := t.(cachetier.UsageReporter)
		if !ok {
			continue
		}
		labels := prometheus.Labels{"tier": t.Name(), "cache": cache}
		bytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "goproxy", Name: "cache_bytes",
			Help: "Bytes held by a cache tier.", ConstLabels: labels}, func() float64 { _, b := u.Usage(); return float64(b) })
		if _, err := register(reg, prometheus.Collector(bytes)); err != nil {
			return err
		}
		if n, _ := u.Usage(); n < 0 {
			continue
		}
		objects := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "goproxy", Name: "cache_objects",
			Help: "Objects held by a cache tier.", ConstLabels: labels}, func() float64 { n, _ := u.Usage(); return float64(n) })
		if _, err := register(reg, prometheus.Collector(objects)); err != nil {
			return err
		}
	}
	return nil
}

// prefetch counts one artifact considered for prefetch and its outcome.
func (m *Metrics) prefetch(a artifact.Artifact, outcome string) {
	if m != nil {
		m.prefetches.WithLabelValues(a.Kind.String(), outcome).Inc()
	}
}

// prefetchUsed counts a prefetched artifact that a client asked for.
func (m *Metrics) prefetchUsed(a artifact.Artifact) {
	if m != nil {
		m.prefetchHits.WithLabelValues(a.Kind.String()).Inc()
	}
}
