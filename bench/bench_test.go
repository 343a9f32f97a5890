// Package bench measures Piraeus: Go benchmarks of the cache-hit path here,
// and a loopback load test against Caddy's own file_server in ./loadtest.
package bench

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/piraeus-go/piraeus/goproxy"
	"github.com/piraeus-go/piraeus/internal/testcache"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

var mod = testenv.Module{Path: "example.com/bench", Version: "v1.0.0"}

// discard is a ResponseWriter that keeps nothing, so the benchmark
// measures the handler rather than a recorder.
type discard struct {
	h      http.Header
	status int
	n      int64
}

func (d *discard) Header() http.Header { return d.h }
func (d *discard) WriteHeader(s int)   { d.status = s }
func (d *discard) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return len(p), nil
}

// BenchmarkHit serves cache hits from each tier alone: memory, redis (a
// real redis-server on loopback, memory tier off) and disk.
func BenchmarkHit(b *testing.B) {
	up := testenv.NewUpstream(b)
	up.AddBigZip(mod, testenv.WriteBigZip(b, b.TempDir(), mod, 5<<20))
	r := testenv.StartRedis(b)
	for _, tier := range []string{"memory", "redis", "disk"} {
		for _, kind := range []string{"info", "mod", "zip"} {
			b.Run(tier+"/"+kind, func(b *testing.B) {
				p := newProxy(b, up.URL, tier, r)
				req := httptest.NewRequest("GET", "/"+testenv.EscapedPath(mod.Path, mod.Version, kind), nil)
				w := &discard{h: http.Header{}}
				p.ServeHTTP(w, req) // warm
				if w.status != 0 && w.status != 200 {
					b.Fatalf("warming: status %d", w.status)
				}
				b.SetBytes(w.n)
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					w.status, w.n = 0, 0
					p.ServeHTTP(w, req)
					if w.status != 0 && w.status != 200 {
						b.Fatalf("status %d", w.status)
					}
				}
			})
		}
	}
}

func newProxy(b *testing.B, upstream, tier string, r *testenv.Redis) *goproxy.Proxy {
	b.Helper()
	o := testcache.Options{Memory: tier == "memory", MemoryMaxObject: 8 << 20}
	if tier == "redis" {
		o.Redis = r
	}
	cache := testcache.New(b, o)
	p, err := goproxy.New(goproxy.Options{Upstream: upstream, SumDBOff: true, Cache: cache.Tiers, Fleet: cache.Fleet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}
