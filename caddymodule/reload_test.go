package caddymodule

import (
	"bytes"
	"fmt"
	"net/http"
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
		return fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tlist_ttl %s\n\t\tcache {\n\t\t\tmemory 16MiB\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, db.VKey, ttl, disk)
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
	oldKeys := []string{"disk:" + disk, fmt.Sprintf("memory:%d:%d", 16<<20, DefaultMemoryMaxObject)}
	for _, k := range oldKeys {
		if n, ok := tierPool.References(k); !ok || n != 1 {
			t.Fatalf("tier %s referenced %d times; want 1", k, n)
		}
	}
	testcaddy.Site(t, port, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, db.VKey, t.TempDir()))
	for _, k := range oldKeys {
		if n, ok := tierPool.References(k); ok || n != 0 {
			t.Errorf("the old tier %s is still referenced %d times after its config was unloaded", k, n)
		}
	}
}
