package goproxy

import (
	"cmp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/semver"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/vulndb"
)

// stats are what the status page shows, kept in the process whether or
// not Prometheus scrapes the metrics: cheap counters on the hit path, a
// mutex only where a fetch ends.
type stats struct {
	started  time.Time
	requests atomic.Int64
	misses   atomic.Int64
	// The checksum database's traffic through /sumdb/, apart from the
	// modules' requests.
	sumdbHits, sumdbMisses atomic.Int64

	mu         sync.RWMutex
	hits       map[string]*atomic.Int64 // by tier
	unverified map[string]*atomic.Int64 // modules stored unverified, by reason
	recent     []FetchRecord            // ring of the last fetches
	next       int
	perMin     [60]atomic.Int64 // requests in each of the last 60 minutes, by minute of the hour
	minuteOf   [60]atomic.Int64 // which minute (unix/60) each slot counts

	// The top modules: answered requests by module, a bounded and
	// decaying top-k (Space-Saving: a module new to a full table takes
	// the place of the least counted one, and its count plus one; every
	// count halves each topHalfLife), so junk names never fill it for good.
	topMu   sync.RWMutex
	modules map[string]*atomic.Int64
	decayed time.Time

	vulnMu sync.Mutex
	vulns  map[string]*VulnerableVersion // by module@version, bounded
}

// VulnerableVersion is a version a vulnerability database entry affects
// that clients asked for: how often it was served, and refused.
type VulnerableVersion struct {
	Module  string   `json:"module"`
	Version string   `json:"version"`
	IDs     []string `json:"ids"`
	Fixed   string   `json:"fixed,omitempty"`
	Served  int64    `json:"served"`
	Refused int64    `json:"refused"`
}

// maxVulnerable bounds the vulnerable versions the status page tracks.
const maxVulnerable = 1000

// vulnerable counts a zip of a, which entries found affect, as served or
// refused.
func (s *stats) vulnerable(a artifact.Artifact, found []vulndb.Finding, served bool) {
	s.vulnMu.Lock()
	defer s.vulnMu.Unlock()
	if s.vulns == nil {
		s.vulns = map[string]*VulnerableVersion{}
	}
	k := a.Module + "@" + a.Version
	v := s.vulns[k]
	if v == nil {
		if len(s.vulns) >= maxVulnerable {
			return
		}
		v = &VulnerableVersion{Module: a.Module, Version: a.Version}
		for _, f := range found {
			v.IDs = append(v.IDs, f.ID)
			if semver.Compare(f.Fixed, v.Fixed) > 0 {
				v.Fixed = f.Fixed
			}
		}
		s.vulns[k] = v
	}
	if served {
		v.Served++
	} else {
		v.Refused++
	}
}

// vulnerableVersions lists them, most asked for first.
func (s *stats) vulnerableVersions() []VulnerableVersion {
	s.vulnMu.Lock()
	defer s.vulnMu.Unlock()
	out := make([]VulnerableVersion, 0, len(s.vulns))
	for _, v := range s.vulns {
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b VulnerableVersion) int {
		return cmp.Or(cmp.Compare(b.Served+b.Refused, a.Served+a.Refused), cmp.Compare(a.Module+"@"+a.Version, b.Module+"@"+b.Version))
	})
	return out
}

const (
	maxTracked  = 1024 // modules counted for the top list
	maxRecent   = 20   // fetches remembered
	topHalfLife = time.Hour
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
	// Reason is why it failed, in the words the client got.
	Reason string `json:"reason,omitempty"`
}

func newStats() *stats {
	return &stats{started: time.Now(), hits: map[string]*atomic.Int64{}, modules: map[string]*atomic.Int64{}, unverified: map[string]*atomic.Int64{},
		decayed: time.Now()}
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
}

// answered counts a request for mod that was answered with its artifact.
// A module already in the table costs a read lock and an atomic add: this
// runs on every cache hit.
func (s *stats) answered(mod string) {
	s.topMu.RLock()
	c := s.modules[mod]
	s.topMu.RUnlock()
	if c != nil {
		c.Add(1)
		return
	}
	s.topMu.Lock()
	defer s.topMu.Unlock()
	s.decayLocked()
	if c := s.modules[mod]; c != nil || len(s.modules) < maxTracked {
		if c == nil {
			c = new(atomic.Int64)
			s.modules[mod] = c
		}
		c.Add(1)
		return
	}
	least, fewest := "", int64(-1)
	for m, c := range s.modules {
		if n := c.Load(); fewest < 0 || n < fewest {
			least, fewest = m, n
		}
	}
	delete(s.modules, least)
	c = new(atomic.Int64)
	c.Store(fewest + 1)
	s.modules[mod] = c
}

// decayLocked halves every count once per topHalfLife gone by; it runs
// where the table is written or read whole, never on a hit.
func (s *stats) decayLocked() {
	now := time.Now()
	if now.Sub(s.decayed) < topHalfLife {
		return
	}
	for m, c := range s.modules {
		if n := c.Load() / 2; n == 0 {
			delete(s.modules, m)
		} else {
			c.Store(n)
		}
	}
	s.decayed = now
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
	recent = append(recent, s.recent[s.next:]...)
	recent = append(recent, s.recent[:s.next]...)
	s.mu.RUnlock()
	s.topMu.Lock()
	s.decayLocked()
	for m, c := range s.modules {
		top = append(top, ModuleCount{m, c.Load()})
	}
	s.topMu.Unlock()
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
