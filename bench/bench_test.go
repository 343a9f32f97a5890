// Package bench measures Piraeus: Go benchmarks of the cache-hit path here,
// and a loopback load test against Caddy's own file_server in ./loadtest.
package bench

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/cachetier"
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
// real redis-server on loopback, memory tier off), disk, and s3 (a real
// versitygw on loopback, no memory and no disk above it).
func BenchmarkHit(b *testing.B) {
	up := testenv.NewUpstream(b)
	up.AddBigZip(mod, testenv.WriteBigZip(b, b.TempDir(), mod, 5<<20))
	r := testenv.StartRedis(b)
	s3 := testenv.StartS3(b)
	for _, tier := range []string{"memory", "redis", "disk", "s3"} {
		for _, kind := range []string{"info", "mod", "zip"} {
			b.Run(tier+"/"+kind, func(b *testing.B) {
				p := newProxy(b, up.URL, tier, r, s3)
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

// BenchmarkColdMiss serves a version no tier holds yet, fetched from a
// loopback upstream with no delay, checked and written through to the
// tier of record: disk, redis above disk (the write-through of a fleet
// edge), and s3 (uploaded to a real versitygw; no disk). Each iteration
// asks for a new version; making its zip is not timed.
func BenchmarkColdMiss(b *testing.B) {
	up := testenv.NewUpstream(b)
	r := testenv.StartRedis(b)
	s3 := testenv.StartS3(b)
	zips := b.TempDir()
	for _, tier := range []string{"disk", "redis", "s3"} {
		for _, kind := range []string{"mod", "zip"} {
			b.Run(tier+"/"+kind, func(b *testing.B) {
				p := newProxy(b, up.URL, tier, r, s3)
				w := &discard{h: http.Header{}}
				var n int
				for b.Loop() {
					b.StopTimer()
					n++
					m := testenv.Module{Path: "example.com/cold/" + tier + "/" + kind, Version: fmt.Sprintf("v1.0.%d", n)}
					if kind == "zip" {
						zip := testenv.WriteBigZip(b, zips, m, 1<<20)
						up.AddBigZip(m, zip)
					} else {
						up.Add(m)
					}
					req := httptest.NewRequest("GET", "/"+testenv.EscapedPath(m.Path, m.Version, kind), nil)
					clear(w.h)
					w.status, w.n = 0, 0
					b.StartTimer()
					p.ServeHTTP(w, req)
					if w.status != 0 && w.status != 200 {
						b.Fatalf("status %d", w.status)
					}
				}
				b.SetBytes(w.n)
				b.ReportAllocs()
			})
		}
	}
}

func newProxy(b *testing.B, upstream, tier string, r *testenv.Redis, s3 *testenv.S3) *goproxy.Proxy {
	b.Helper()
	o := testcache.Options{Memory: tier == "memory", MemoryMaxObject: 8 << 20}
	switch tier {
	case "redis":
		o.Redis = r
	case "s3":
		o.S3 = s3
	}
	cache := testcache.New(b, o)
	var fl goproxy.Fleet // nil unless the cache has one
	if cache.Fleet != nil {
		fl = cache.Fleet
	}
	p, err := goproxy.New(goproxy.Options{Upstream: upstream, SumDBOff: true, Cache: cache.Tiers, Fleet: fl})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

var scaleObjects = flag.String("scale.objects", "1000,10000,100000", "BenchmarkDiskHitScale: object counts (1000000 needs about 4 GiB of disk)")

// BenchmarkDiskHitScale reads random objects of a disk tier holding N
// small objects (each read once before, so its hash is known): the cost
// of a hit must not grow with N.
func BenchmarkDiskHitScale(b *testing.B) {
	for _, s := range strings.Split(*scaleObjects, ",") {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("-scale.objects: %v", err)
		}
		b.Run(fmt.Sprintf("objects=%d", n), func(b *testing.B) {
			root := b.TempDir()
			d, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: root})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprintf("ns/example.com/scale/m%d/@v/v1.0.0.mod", i)
				data := fmt.Appendf(nil, "module example.com/scale/m%d\n\ngo 1.21\n", i)
				if err := d.Put(ctx, keys[i], cachetier.MetaFor(data, time.Time{}), data); err != nil {
					b.Fatal(err)
				}
			}
			read := func(k string) {
				obj, err := d.Get(ctx, k)
				if err != nil {
					b.Fatal(err)
				}
				obj.Close()
			}
			// Opening a tier that holds n objects does not wait for them
			// to be counted.
			d.Close()
			start := time.Now()
			if d, err = cachetier.NewDiskTier(cachetier.DiskConfig{Root: root}); err != nil {
				b.Fatal(err)
			}
			opened := time.Since(start)
			defer d.Close()
			<-d.Counted() // the table of checked files is sized by then
			counted := time.Since(start)
			for _, k := range keys {
				read(k)
			}
			rng := rand.New(rand.NewPCG(1, uint64(n)))
			b.ReportAllocs()
			for b.Loop() {
				read(keys[rng.IntN(n)])
			}
			b.ReportMetric(float64(opened.Microseconds()), "µs-to-open")
			b.ReportMetric(float64(counted.Milliseconds()), "ms-to-count")
		})
	}
}
