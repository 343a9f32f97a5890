package goproxy

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// The catalog lists public modules only, unless told to list private ones
// too, and only versions whose .mod and .zip are held; a page costs bounded work: on a tier of .mod files alone, a
// page of 5 examines 10 objects and comes back empty, with a next token.
func TestCatalogPrivateAndBounded(t *testing.T) {
	t.Parallel()
	priv := testenv.Module{Path: "git.corp.example/secret", Version: "v1.0.0"}
	up := testenv.NewUpstream(t, modA, modA11, priv)
	for _, listPrivate := range []bool{false, true} {
		e := newEnv(t, up, options{private: "git.corp.example/*", privateUpstream: up.URL, catalogPrivate: listPrivate})
		for _, kind := range []string{"info", "mod", "zip"} {
			e.get(path(modA, kind), 200)
			e.get(path(priv, kind), 200)
		}
		e.get(path(modA11, "info"), 200) // its .info alone: not listed
		_, body := e.get("catalog", 200)
		var page catalogPage
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range page.Modules {
			got = append(got, m.Module)
		}
		slices.Sort(got)
		want := []string{"example.com/a"}
		if listPrivate {
			want = []string{"example.com/a", "git.corp.example/secret"}
		}
		if !slices.Equal(got, want) {
			t.Errorf("catalog (private listed: %v) = %v; want %v", listPrivate, got, want)
		}
	}

	// A page of 5 over 30 versions, each with its .mod and .zip beside
	// its .info, holds 5 versions: a page reads the index of holdings,
	// not the objects. Pages join up to the 30, and a token the catalog
	// did not give is a 400.
	var mods []testenv.Module
	for i := range 30 {
		mods = append(mods, testenv.Module{Path: "example.com/many", Version: fmt.Sprintf("v1.0.%d", i)})
	}
	e := newEnv(t, testenv.NewUpstream(t, mods...), options{})
	for _, m := range mods {
		e.get(path(m, "info"), 200)
		e.get(path(m, "mod"), 200)
		e.get(path(m, "zip"), 200)
	}
	seen := map[string]bool{}
	token := ""
	for range 10 {
		page, err := e.proxy.Catalog(t.Context(), token, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Modules) != 5 && page.Next != "" {
			t.Errorf("a page of 5 over 30 versions and their .mod and .zip: %d entries", len(page.Modules))
		}
		for _, m := range page.Modules {
			seen[m.Version] = true
		}
		if token = page.Next; token == "" {
			break
		}
	}
	if len(seen) != 30 {
		t.Errorf("the catalog's pages listed %d versions; want 30", len(seen))
	}
	if resp, body := e.get("catalog?token=zz%2Fnot-a-token", 400); !strings.Contains(string(body), "token") {
		t.Errorf("a bad token: %d %q", resp.StatusCode, body)
	}
}

// The top modules count answered requests only, in a bounded table that
// junk never fills for good: 404s count nothing, and 5,000 distinct
// modules asked once each leave the table at its bound with the module
// asked for most still first.
func TestTopModulesBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testenv.NewUpstream(t, modA), options{})
	for range 50 {
		e.get(path(modA, "info"), 200)
	}
	for i := range 20 {
		e.get(fmt.Sprintf("example.com/junk%d/@v/list", i), 404)
	}
	s := e.proxy.stats
	for i := range 5000 {
		s.answered(fmt.Sprintf("example.com/junk%d", i))
	}
	s.topMu.Lock()
	n := len(s.modules)
	s.topMu.Unlock()
	if n > maxTracked {
		t.Errorf("the top table holds %d modules; bound %d", n, maxTracked)
	}
	_, top, _, _ := s.snapshot()
	if len(top) == 0 || top[0].Module != "example.com/a" || top[0].Requests != 50 {
		t.Errorf("top modules %v; want example.com/a first with 50", top)
	}
}
