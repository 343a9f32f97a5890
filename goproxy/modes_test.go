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
