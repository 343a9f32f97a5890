package caddymodule

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// scrape reads Caddy's Prometheus endpoint (on the admin API) and returns
// each goproxy_ sample as "name{labels}" -> value.
func scrape(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://localhost:%d/metrics", testcaddy.AdminPort()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "goproxy_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		samples[line[:i]] = v
	}
	return samples
}

func TestMetrics(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	up.SetDelay(100 * time.Millisecond)
	disk := t.TempDir()
	base := startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, up.VerifiedBy(t).VKey, disk))
	get := func(p string) {
		resp, err := http.Get(base + "/" + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	info := testenv.EscapedPath(hello.Path, hello.Version, "info")
	zip := testenv.EscapedPath(hello.Path, hello.Version, "zip")
	get(info)                               // miss, fetched
	get(info)                               // hit
	get("example.com/hello/@v/v1.9.9.info") // upstream 404
	get("example.com/Hello/@v/list")        // 400
	var wg sync.WaitGroup
	for range 10 { // collapsed into one fetch
		wg.Add(1)
		go func() { defer wg.Done(); get(zip) }()
	}
	wg.Wait()
	zipSize := float64(len(hello.Zip(t)))

	m := scrape(t)
	want := map[string]float64{
		`goproxy_requests_total{kind="info",result="ok"}`:             2,
		`goproxy_requests_total{kind="info",result="not_found"}`:      1,
		`goproxy_requests_total{kind="invalid",result="bad_request"}`: 1,
		`goproxy_requests_total{kind="zip",result="ok"}`:              10,
		`goproxy_cache_misses_total{kind="info"}`:                     2,
		`goproxy_served_bytes_total{kind="zip"}`:                      10 * zipSize,
		`goproxy_served_bytes_total{kind="info"}`:                     2 * float64(len(hello.Info())),
		`goproxy_verification_failures_total`:                         0,
		`goproxy_fetch_duration_seconds_count{kind="zip"}`:            1,
	}
	// The disk holds the info and the zip, and what the checksum database
	// client verified (lookups, tiles, its signed tree), counted as the
	// tier counts them (testenv.DiskTierFiles). Its small store writes
	// behind, and neither its database nor the gauges show a batch until
	// it is written: they are read again, a bounded number of times, until
	// they agree.
	objectsKey, bytesKey := `goproxy_cache_objects{cache="`+disk+`",tier="disk"}`, `goproxy_cache_bytes{cache="`+disk+`",tier="disk"}`
	var objects, used int64
	for try := 0; try < 200; try++ {
		if objects, used = testenv.DiskTierFiles(t, disk); m[objectsKey] == float64(objects) && m[bytesKey] == float64(used) {
			break
		}
		time.Sleep(50 * time.Millisecond)
		m = scrape(t)
	}
	if objects < 2 || float64(used) < zipSize {
		t.Fatalf("disk holds %d objects, %d bytes", objects, used)
	}
	want[objectsKey] = float64(objects)
	want[bytesKey] = float64(used)
	upstream := strings.TrimPrefix(up.URL, "http://")
	want[`goproxy_upstream_fetches_total{outcome="ok",upstream="`+upstream+`"}`] = 2
	want[`goproxy_upstream_fetches_total{outcome="not_found",upstream="`+upstream+`"}`] = 1
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %v (present %v); want %v", k, got, ok, v)
		}
	}
	hits := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "goproxy_cache_hits_total{") {
			hits += v
		}
	}
	waiters := m["goproxy_collapsed_waiters_total"]
	// The 10 zip requests: one fetch, the rest waited for it or, if they
	// came after it, hit the cache; plus the second info request's hit.
	if waiters < 1 || hits+waiters != 10 {
		t.Errorf("hits %v + collapsed waiters %v; want 10 with at least one waiter", hits, waiters)
	}
	if m[`goproxy_cache_bytes{cache="`+disk+`",tier="memory"}`] <= 0 {
		t.Error("memory tier occupancy not reported")
	}
}
