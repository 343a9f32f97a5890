package goproxy

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

func TestRedirectMode(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA, modUp)
	e := newEnv(t, up, options{memory: true, private: "github.com/Azure",
		direct: DirectOptions{GoBinary: "/nonexistent/go"}, // private modules: direct only
		modes:  []ModeOption{{Pattern: "*", Mode: "redirect"}}})
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	p := path(modA, "zip")
	resp, err := noFollow.Get(e.srv.URL + "/" + p)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != up.URL+"/"+p {
		t.Fatalf("miss in redirect mode: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// The cache fills in the background; then the proxy serves it itself.
	e.waitFetch(p)
	obj, err := e.tiers.Get(t.Context(), e.key(p), nil)
	if err != nil {
		t.Fatalf("the background fill did not fill the cache: %v", err)
	}
	obj.Close()
	e.get(p, 200)
	if n := up.Requests(p); n != 1 {
		t.Errorf("upstream asked %d times; want 1 (the background fill)", n)
	}
	// Private modules are never redirected to a public upstream: this one
	// goes to direct (which has no go command here: 503).
	if resp, _ := noFollow.Get(e.srv.URL + "/" + path(modUp, "mod")); resp == nil || resp.StatusCode == http.StatusFound {
		t.Error("a private module was redirected to the public upstream")
	} else {
		resp.Body.Close()
	}

	// The go command follows the redirect.
	out := testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, e.srv.URL), "mod", "download", "-json", "example.com/a@v1.0.0")
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("go mod download in redirect mode: %s", out)
	}
}

func TestOfflineMode(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA, modA11)
	root := t.TempDir()
	online := newEnv(t, up, options{diskRoot: root, listTTL: time.Nanosecond})
	online.get(path(modA, "info"), 200)
	online.get(path(modA, "list"), 200)
	online.close()
	before := up.Total()

	e := newEnv(t, up, options{diskRoot: root, modes: []ModeOption{{Pattern: "example.com", Mode: "offline"}}})
	e.get(path(modA, "info"), 200)
	_, list := e.get(path(modA, "list"), 200) // expired, still served
	if string(list) != "v1.0.0\nv1.1.0\n" {
		t.Errorf("offline list %q", list)
	}
	_, body := e.get(path(modA, "mod"), 404)
	if !strings.Contains(string(body), "offline") {
		t.Errorf("offline miss: %q", body)
	}
	if n := up.Total() - before; n != 0 {
		t.Errorf("offline mode asked upstream %d times", n)
	}
}

// Every answer says how the cache handled it (RFC 9211 Cache-Status), so
// that a chain of proxies can be debugged from the go command's side.
func TestCacheStatus(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA, modA11)
	e := newEnv(t, up, options{listTTL: time.Nanosecond})
	status := func(p string, want int) string {
		t.Helper()
		resp, _ := e.get(p, want)
		return resp.Header.Get("Cache-Status")
	}
	for _, tt := range []struct{ path, want string }{
		{path(modA, "info"), "Piraeus; fwd=miss; fwd-status=200; stored"},
		{path(modA, "info"), "Piraeus; hit; detail=disk"},
		{path(modA, "list"), "Piraeus; fwd=miss; fwd-status=200; stored"},
		{path(modA, "list"), "Piraeus; fwd=stale; fwd-status=200; stored"}, // expired at once
	} {
		if got := status(tt.path, 200); got != tt.want {
			t.Errorf("%s: Cache-Status %q; want %q", tt.path, got, tt.want)
		}
	}
	missing := "example.com/none/@v/v1.0.0.info"
	if got, want := status(missing, 404), "Piraeus; fwd=miss; fwd-status=404"; got != want {
		t.Errorf("unknown module: Cache-Status %q; want %q", got, want)
	}
	if got, want := status(missing, 404), "Piraeus; hit; detail=not-found"; got != want {
		t.Errorf("remembered not-found: Cache-Status %q; want %q", got, want)
	}
	up.SetFailure(http.StatusInternalServerError)
	if got := status(path(modA, "list"), 200); !strings.HasPrefix(got, "Piraeus; fwd=stale; fwd-status=502") {
		t.Errorf("stale list served after an upstream failure: Cache-Status %q", got)
	}
}

// proxy.golang.org's cache-only conventions: a path under /cached-only/
// or a Disable-Module-Fetch: true header answers from the cache alone,
// and a miss is a 404 that asks nothing upstream. The go command uses the
// prefix as its GOPROXY.
func TestCacheOnlyRequests(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA, modA11)
	e := newEnv(t, up, options{})
	for _, p := range []string{"cached-only/" + path(modA, "info"), "cached-only/" + path(modA, "zip")} {
		if resp, body := e.do("GET", p); resp.StatusCode != http.StatusNotFound || resp.Header.Get("Cache-Status") != "Piraeus; detail=not-cached" {
			t.Errorf("%s before any fetch: %d %q (Cache-Status %q); want 404", p, resp.StatusCode, body, resp.Header.Get("Cache-Status"))
		}
	}
	if resp, body := e.do("GET", path(modA, "mod"), "Disable-Module-Fetch", "true"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("Disable-Module-Fetch: true before any fetch: %d %q; want 404", resp.StatusCode, body)
	}
	if n := up.Total(); n != 0 {
		t.Fatalf("cache-only requests asked upstream %d times", n)
	}
	// Filled by an ordinary client, then served to cache-only ones.
	testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, e.srv.URL), "mod", "download", "example.com/a@v1.0.0")
	fetched := up.Total()
	out := testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, e.srv.URL+"/cached-only"), "mod", "download", "-json", "example.com/a@v1.0.0")
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("go mod download through /cached-only/: %s", out)
	}
	if resp, _ := e.do("GET", path(modA, "mod"), "Disable-Module-Fetch", "true"); resp.StatusCode != 200 || resp.Header.Get("Cache-Status") != "Piraeus; hit; detail=disk" {
		t.Errorf("Disable-Module-Fetch: true after the fetch: %d, Cache-Status %q", resp.StatusCode, resp.Header.Get("Cache-Status"))
	}
	if _, err := testenv.TryGo(t, t.TempDir(), testenv.GoEnv(t, e.srv.URL+"/cached-only"), "mod", "download", "example.com/a@v1.1.0"); err == nil {
		t.Error("a version that is not cached was downloaded through /cached-only/")
	}
	if n := up.Total(); n != fetched {
		t.Errorf("cache-only clients asked upstream %d times", n-fetched)
	}
}
