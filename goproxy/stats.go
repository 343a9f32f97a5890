package goproxy

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/piraeus-go/piraeus/artifact"
)

// stats are what the status page shows, kept in the process whether or
// not Prometheus scrapes the metrics: cheap counters on the hit path, a
// mutex only where a fetch ends.
type stats struct {
	started  time.Time
	requests atomic.Int64
	misses   atomic.Int64

	mu         sync.RWMutex
	hits       map[string]*atomic.Int64 // by tier
	unverified map[string]*atomic.Int64 // modules stored unverified, by reason
	modules    map[string]*atomic.Int64 // requests by module, at most maxTracked
	recent     []FetchRecord            // ring of the last fetches
	next       int
	perMin     [60]atomic.Int64 // requests in each of the last 60 minutes, by minute of the hour
	minuteOf   [60]atomic.Int64 // which minute (unix/60) each slot counts
}

const (
	maxTracked = 1024 // modules counted for the top list
	maxRecent  = 20   // fetches remembered
)

// FetchRecord is one upstream fetch, for the status page.
type FetchRecord struct {
	Time     time.Time     `json:"time"`
	Module   string        `json:"module"`
	Version  string        `json:"version,omitempty"`
	Kind     string        `json:"kind"`
	Upstream string        `json:"upstream"`
	Outcome  string        `json:"outcome"`
	Duration time.Duration `json:"duration_ns"`
	Bytes    int64         `json:"bytes"`
}

func newStats() *stats {
	return &stats{started: time.Now(), hits: map[string]*atomic.Int64{}, modules: map[string]*atomic.Int64{}, unverified: map[string]*atomic.Int64{}}
}

func counter(mu *sync.RWMutex, m map[string]*atomic.Int64, key string, limit int) *atomic.Int64 {
	mu.RLock()
	c := m[key]
	mu.RUnlock()
	if c != nil {
		return c
	}
	mu.Lock()
	defer mu.Unlock()
	if c = m[key]; c == nil {
		if len(m) >= limit {
			return nil
		}
		c = new(atomic.Int64)
		m[key] = c
	}
	return c
}

func (s *stats) request(a artifact.Artifact) {
	s.requests.Add(1)
	minute := time.Now().Unix() / 60
	slot := minute % 60
	if s.minuteOf[slot].Load() != minute {
		s.minuteOf[slot].Store(minute)
		s.perMin[slot].Store(0)
	}
	s.perMin[slot].Add(1)
	if c := counter(&s.mu, s.modules, a.Module, maxTracked); c != nil {
		c.Add(1)
	}
}

func (s *stats) hit(tier string) {
	if c := counter(&s.mu, s.hits, tier, 16); c != nil {
		c.Add(1)
	}
}

func (s *stats) miss() { s.misses.Add(1) }

func (s *stats) storedUnverified(reason string) {
	if c := counter(&s.mu, s.unverified, reason, 8); c != nil {
		c.Add(1)
	}
}

func (s *stats) unverifiedCounts() map[string]int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	m := make(map[string]int64, len(s.unverified))
	for k, v := range s.unverified {
		m[k] = v.Load()
	}
	return m
}

func (s *stats) fetched(r FetchRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.recent) < maxRecent {
		s.recent = append(s.recent, r)
		return
	}
	s.recent[s.next] = r
	s.next = (s.next + 1) % maxRecent
}

// ModuleCount is a module and how often it was asked for.
type ModuleCount struct {
	Module   string `json:"module"`
	Requests int64  `json:"requests"`
}

// snapshot copies what the status page shows.
func (s *stats) snapshot() (hits map[string]int64, top []ModuleCount, recent []FetchRecord, perMinute []int64) {
	s.mu.RLock()
	hits = make(map[string]int64, len(s.hits))
	for k, v := range s.hits {
		hits[k] = v.Load()
	}
	for m, c := range s.modules {
		top = append(top, ModuleCount{m, c.Load()})
	}
	recent = append(recent, s.recent[s.next:]...)
	recent = append(recent, s.recent[:s.next]...)
	s.mu.RUnlock()
	slices.SortFunc(top, func(a, b ModuleCount) int {
		if a.Requests != b.Requests {
			return cmp.Compare(b.Requests, a.Requests)
		}
		return strings.Compare(a.Module, b.Module)
	})
	top = top[:min(len(top), 10)]
	slices.Reverse(recent) // newest first
	now := time.Now().Unix() / 60
	for m := now - 59; m <= now; m++ {
		var n int64
		if s.minuteOf[m%60].Load() == m {
			n = s.perMin[m%60].Load()
		}
		perMinute = append(perMinute, n)
	}
	return hits, top, recent, perMinute
}
