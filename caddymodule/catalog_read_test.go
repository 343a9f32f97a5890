package caddymodule

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Reading another mirror's catalog to warm from it is bounded: its pages,
// its bytes, the time of a page, loops of pages; and it follows redirects
// as the mirror follows its upstreams', never to a private address other
// than the catalog's own. Not parallel: it lowers the package's bounds.
func TestCatalogReadBounded(t *testing.T) {
	pages, bytes, timeout := maxCatalogPages, maxCatalogBytes, catalogPageTimeout
	t.Cleanup(func() { maxCatalogPages, maxCatalogBytes, catalogPageTimeout = pages, bytes, timeout })
	maxCatalogPages, maxCatalogBytes, catalogPageTimeout = 20, 64<<10, time.Second

	var served atomic.Int64
	stall := make(chan struct{})
	t.Cleanup(func() { close(stall) })
	internal := listenOn(t, "127.0.0.2:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprint(w, `{"modules":[{"module":"example.com/internal","version":"v1.0.0"}],"next":""}`)
	}))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := r.URL.Query().Get("token")
		switch r.URL.Path {
		case "/endless": // a new token every time
			n := len(token)
			fmt.Fprintf(w, `{"modules":[],"next":"%s"}`, strings.Repeat("x", n+1))
		case "/loop":
			fmt.Fprint(w, `{"modules":[],"next":"a"}`)
		case "/big":
			fmt.Fprintf(w, `{"modules":[],"next":"%s"}`, strings.Repeat("x", 100<<10))
		case "/stall":
			select {
			case <-stall:
			case <-r.Context().Done():
			}
		case "/private":
			http.Redirect(w, r, internal+"/catalog", http.StatusFound)
		case "/http":
			http.Redirect(w, r, "/loop", http.StatusFound) // a same-host redirect is followed
		}
	}))
	t.Cleanup(srv.Close)
	nothing := func([]byte) error { return nil }
	for path, want := range map[string]string{
		"/endless": "more than 20 pages",
		"/loop":    "go round in a loop",
		"/http":    "go round in a loop",
		"/big":     "more than 65536 bytes",
		"/stall":   "context deadline exceeded",
		"/private": "to a private address",
	} {
		err := eachCatalogPage(srv.URL+path, nothing)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want an error with %q", path, err, want)
		}
	}
	if n := served.Load(); n != 0 {
		t.Errorf("the internal service on 127.0.0.2 was reached %d times", n)
	}
	// A catalog on a private address of its own is read.
	var got []string
	if err := eachCatalogPage(internal+"/catalog", func(b []byte) error { got = append(got, string(b)); return nil }); err != nil || len(got) != 1 {
		t.Errorf("reading a catalog on 127.0.0.2: %v, %d pages", err, len(got))
	}
}

// listenOn serves h on addr (a loopback address) and returns its URL.
func listenOn(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on %s (Linux routes all of 127.0.0.0/8 to loopback): %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}
