package caddymodule

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A reload with a changed config keeps the cache warm and lets a download
// in flight finish.
func TestReloadKeepsCacheAndRequests(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	zip := hello.Zip(t)
	zipPath := testenv.EscapedPath(hello.Path, hello.Version, "zip")
	started, release := make(chan struct{}), make(chan struct{})
	up.Override(zipPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(zip)))
		w.Write(zip[:100])
		w.(http.Flusher).Flush()
		close(started)
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		w.Write(zip[100:])
	})
	port := testenv.FreePort(t)
	disk := t.TempDir()
	db := up.VerifiedBy(t)
	block := func(ttl string) string {
		return fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tlist_ttl %s\n\t\tcache {\n\t\t\tmemory 24MiB\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, db.VKey, ttl, disk)
	}
	base := testcaddy.Site(t, port, block("1m"))
	info := testenv.EscapedPath(hello.Path, hello.Version, "info")
	testenv.MustGet(t, base+"/"+info)

	got := testenv.GetAsync(base + "/" + zipPath)
	<-started
	testcaddy.Site(t, port, block("2m")) // reload, same cache, other settings
	close(release)
	if b := <-got; !bytes.Equal(b, zip) {
		t.Fatalf("download in flight across the reload got %d bytes; want %d", len(b), len(zip))
	}

	before := up.Total()
	testenv.MustGet(t, base+"/"+info)
	if n := up.Total() - before; n != 0 {
		t.Errorf("after the reload upstream was asked %d times", n)
	}
	if hits := scrape(t)[`goproxy_cache_hits_total{tier="memory"}`]; hits != 1 {
		t.Errorf("memory tier hits in the new config: %v; want 1 (the cache stayed warm)", hits)
	}

	// A config with other cache settings gets its own tiers, and the old
	// ones are released once no config uses them.
	oldKeys := []string{"disk:" + disk, fmt.Sprintf("memory:%d:%d", 24<<20, DefaultMemoryMaxObject)}
	closing.Wait() // the unloaded configs' proxies have closed
	for _, k := range oldKeys {
		if n, ok := tierPool.References(k); !ok || n != 1 {
			t.Fatalf("tier %s referenced %d times; want 1", k, n)
		}
	}
	testcaddy.Site(t, port, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, db.VKey, t.TempDir()))
	closing.Wait()
	for _, k := range oldKeys {
		if n, ok := tierPool.References(k); ok || n != 0 {
			t.Errorf("the old tier %s is still referenced %d times after its config was unloaded", k, n)
		}
	}
}

// A reload storm with cold misses and missing versions in flight: every
// reload closes the old config's proxy while its fetches run. Nothing
// panics (a panic would take Caddy down), every answer is right, a 404 or
// a 503 to retry, and the tiers are released with the last config.
func TestReloadStorm(t *testing.T) {
	testenv.Slow(t)
	const reloads, perReload = 12, 4
	var mods []testenv.Module
	for i := range reloads * perReload {
		mods = append(mods, testenv.Module{Path: "example.com/storm", Version: fmt.Sprintf("v1.0.%d", i)})
	}
	up := testenv.NewUpstream(t, mods...)
	up.SetDelay(20 * time.Millisecond)
	port, disk := testenv.FreePort(t), t.TempDir()
	block := func(i int) string {
		return fmt.Sprintf("goproxy %s {\n\t\tsumdb off\n\t\tlist_ttl %ds\n\t\tcache {\n\t\t\tmemory 24MiB\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, 60+i, disk)
	}
	base := testcaddy.Site(t, port, block(0))
	want := map[string][]byte{}
	for _, m := range mods {
		want[testenv.EscapedPath(m.Path, m.Version, "info")] = m.Info()
		want[testenv.EscapedPath(m.Path, m.Version, "mod")] = m.Mod()
	}
	errs := make(chan error, reloads*perReload*3)
	// A connection per request: one kept alive may be closed by the old
	// server as it shuts down (Caddy's doing, not the proxy's).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range reloads {
		var wg sync.WaitGroup
		get := func(path string) {
			defer wg.Done()
			if err := testenv.GetDuringShutdown(client, base+"/"+path, want[path]); err != nil {
				errs <- fmt.Errorf("reload %d: %w", i, err)
			}
		}
		before := up.Total()
		for _, m := range mods[i*perReload : (i+1)*perReload] {
			wg.Add(3)
			go get(testenv.EscapedPath(m.Path, m.Version, "info"))
			go get(testenv.EscapedPath(m.Path, m.Version, "mod"))
			go get(fmt.Sprintf("example.com/storm/@v/v1.9.%d.info", i))
		}
		up.WaitTotal(t, before+1)
		testcaddy.Site(t, port, block(i+1)) // the reload, while fetches run
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	closing.Wait()
	if n, ok := tierPool.References("disk:" + disk); !ok || n != 1 {
		t.Errorf("after the storm the disk tier is referenced %d times; want 1 (the running config)", n)
	}
}
