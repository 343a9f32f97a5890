package goproxy

import (
	"archive/zip"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// overLimitZip is a well-formed zip whose directory claims more content
// than x/mod allows in a module.
func overLimitZip(t *testing.T) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: "example.com/a@v1.0.0/huge.bin", Method: zip.Store, UncompressedSize64: 600 << 20})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(nil)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUpstreamFaults(t *testing.T) {
	t.Parallel()
	zipBytes := modA.Zip(t)
	tests := []struct {
		name, path string
		status     int
		handler    http.HandlerFunc
	}{
		{"500", path(modA, "info"), 502, func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "boom", 500)
		}},
		{"reset mid-body", path(modA, "zip"), 502, func(w http.ResponseWriter, r *http.Request) {
			conn, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(zipBytes))
			buf.Write(zipBytes[:len(zipBytes)/2])
			buf.Flush()
			conn.(interface{ SetLinger(int) error }).SetLinger(0) // RST, not FIN
			conn.Close()
		}},
		{"truncated zip", path(modA, "zip"), 502, func(w http.ResponseWriter, r *http.Request) {
			w.Write(zipBytes[:len(zipBytes)-30])
		}},
		{"zip over the x/mod limits", path(modA, "zip"), 502, func(w http.ResponseWriter, r *http.Request) {
			w.Write(overLimitZip(t))
		}},
		{"endless trickle", path(modA, "zip"), 504, func(w http.ResponseWriter, r *http.Request) {
			for i := 0; i < 1000 && r.Context().Err() == nil; i++ { // bounded: 10 s at most
				w.Write([]byte("PK"))
				w.(http.Flusher).Flush()
				time.Sleep(10 * time.Millisecond)
			}
		}},
		{"slow headers", path(modA, "mod"), 504, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := testenv.NewUpstream(t, modA)
			up.Override(tt.path, tt.handler)
			e := newEnv(t, up, options{memory: true, timeout: 300 * time.Millisecond})
			resp, body := e.do("GET", tt.path)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%q); want %d", resp.StatusCode, body, tt.status)
			}
			assertNotCached(t, e, tt.path)
			up.Override(tt.path, nil)
			e.get(tt.path, 200)
		})
	}
}

func TestDiskDirectoryRemoved(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "cache")
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{diskRoot: root})
	e.get(path(modA, "info"), 200)
	if err := os.RemoveAll(root); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"info", "zip", "zip"} {
		e.get(path(modA, k), 200)
	}
	if n := up.Requests(path(modA, "zip")); n != 1 {
		t.Errorf("zip fetched %d times; want 1: the tier rebuilds its directories", n)
	}
	if _, ok := e.disk.File(e.key(path(modA, "zip"))); !ok {
		t.Error("zip not on disk after the directory came back")
	}
}

// Upstream redirects are followed as the go command follows them: to
// another host (a CDN) without the upstream's credentials, up to ten hops,
// never from https to http; what the chain ends with is verified like any
// answer. same_host keeps them to the upstream's host.
func TestUpstreamRedirects(t *testing.T) {
	t.Parallel()
	other := testenv.NewUpstream(t, modA) // another host (port)
	up := testenv.NewUpstream(t, modA)
	db := up.VerifiedBy(t)
	var mu sync.Mutex
	auth := map[string]string{} // server: the Authorization header it got
	record := func(server string, r *http.Request) {
		mu.Lock()
		auth[server] = r.Header.Get("Authorization")
		mu.Unlock()
	}
	zip, mod, info := path(modA, "zip"), path(modA, "mod"), path(modA, "info")
	up.Override(zip, func(w http.ResponseWriter, r *http.Request) {
		record("upstream", r)
		http.Redirect(w, r, other.URL+"/"+zip, http.StatusFound)
	})
	other.Override(zip, func(w http.ResponseWriter, r *http.Request) {
		record("other", r)
		w.Write(modA.Zip(t))
	})
	up.Override(mod, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/"+mod+"x", http.StatusFound) // same host
	})
	up.Override(mod+"x", func(w http.ResponseWriter, r *http.Request) { w.Write(modA.Mod()) })
	// .info bounces between the two hosts forever.
	up.Override(info, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/"+info, http.StatusFound)
	})
	other.Override(info, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, up.URL+"/"+info, http.StatusFound) })

	withCreds := strings.Replace(up.URL, "http://", "http://piraeus:hunter2@", 1)
	e := newEnv(t, up, options{upstream: withCreds, sumdb: db})
	if _, got := e.get(zip, 200); !bytes.Equal(got, modA.Zip(t)) {
		t.Error("zip through a cross-host redirect differs")
	}
	mu.Lock()
	if auth["upstream"] == "" || auth["other"] != "" {
		t.Errorf("Authorization: upstream got %q, the other host %q; want it at the upstream only", auth["upstream"], auth["other"])
	}
	mu.Unlock()
	e.get(mod, 200)
	resp, body := e.do("GET", info)
	if resp.StatusCode != 502 || !bytes.Contains(body, []byte("stopped after 10 redirects")) {
		t.Errorf("redirect loop: %d %q", resp.StatusCode, body)
	}
	if n := up.Requests(info) + other.Requests(info); n != 10 {
		t.Errorf("redirect loop: %d requests; want 10 (the first and nine hops)", n)
	}

	// What the chain ends with is verified: a zip that is not the one the
	// checksum database knows is refused and not kept.
	bad := testenv.Module{Path: modA.Path, Version: modA.Version, Files: map[string]string{"a.go": "package a // changed\n"}}
	tampered := testenv.NewUpstream(t)
	tampered.Override(zip, func(w http.ResponseWriter, r *http.Request) { w.Write(bad.Zip(t)) })
	up2 := testenv.NewUpstream(t, modA)
	up2.Override(zip, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, tampered.URL+"/"+zip, http.StatusFound)
	})
	e2 := newEnv(t, up2, options{sumdb: db})
	if resp, body := e2.do("GET", zip); resp.StatusCode == 200 {
		t.Errorf("a tampered zip behind a redirect was served: %q", body)
	}
	if _, ok := e2.disk.File(e2.key(zip)); ok {
		t.Error("a tampered zip behind a redirect was stored")
	}

	// Never from https to http.
	secure := testenv.NewTLSUpstream(t, modA)
	secure.Override(zip, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/"+zip, http.StatusFound)
	})
	before := other.Requests(zip)
	e3 := newEnv(t, secure, options{sumdb: db})
	e3.get(mod, 200) // https works
	resp, body = e3.do("GET", zip)
	if resp.StatusCode != 502 || !bytes.Contains(body, []byte("from https to http")) {
		t.Errorf("https to http: %d %q", resp.StatusCode, body)
	}
	if other.Requests(zip) != before {
		t.Error("the proxy followed a redirect from https to http")
	}

	// same_host: today's rule, for operators who want it.
	e4 := newEnv(t, up, options{sameHost: true, sumdb: db})
	resp, body = e4.do("GET", zip)
	if resp.StatusCode != 502 || !bytes.Contains(body, []byte("to another host")) {
		t.Errorf("same_host, cross-host redirect: %d %q", resp.StatusCode, body)
	}
	if other.Requests(zip) != before {
		t.Error("same_host: the proxy followed a redirect to another host")
	}
	e4.get(mod, 200)
}

// Error answers never echo the upstream's credentials, host or path.
func TestErrorsDoNotLeakUpstream(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	u := strings.Replace(up.URL, "http://", "http://piraeus:hunter2@", 1) + "/internal-prefix"
	dead := "http://piraeus:hunter2@127.0.0.1:1/internal-prefix"
	for _, tt := range []struct {
		upstream string
		fail     int
		delay    time.Duration
	}{
		{u, 500, 0}, {u, 403, 0}, {u, 404, 0}, {u, 0, time.Second}, {dead, 0, 0},
	} {
		up.SetFailure(tt.fail)
		up.SetDelay(tt.delay)
		e := newEnv(t, up, options{upstream: tt.upstream, timeout: 200 * time.Millisecond})
		resp, body := e.do("GET", path(modA, "mod"))
		if resp.StatusCode < 400 {
			t.Errorf("%s with failure %d: status %d", tt.upstream, tt.fail, resp.StatusCode)
		}
		for _, secret := range []string{"hunter2", "piraeus:", "internal-prefix", "127.0.0.1"} {
			if strings.Contains(string(body), secret) {
				t.Errorf("error body %q leaks %q", body, secret)
			}
		}
	}
	up.SetDelay(0)
}

// A reason relayed from the upstream (its 404 body) reaches the client
// without URLs, credentials, addresses or hosts other than the module's.
func TestRelayedReasonsScrubbed(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	up.Override("example.com/a/@v/v1.9.9.info", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found: example.com/a@v1.9.9: reading https://bot:t0ken@git.corp.internal:8443/a.git failed: dial tcp: lookup git.corp.internal on 10.0.0.2:53: no such host; mirror [fd00::7]:443\nsecond line", 404)
	})
	e := newEnv(t, up, options{})
	_, body := e.get("example.com/a/@v/v1.9.9.info", 404)
	for _, secret := range []string{"t0ken", "bot:", "git.corp.internal", "10.0.0.2", "fd00", "second line"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("relayed reason %q keeps %q", body, secret)
		}
	}
	if !strings.Contains(string(body), "example.com/a@v1.9.9") {
		t.Errorf("relayed reason %q lost what the client asked for", body)
	}
}

// An upstream's redirect to a loopback, private or link-local address
// that no configured upstream is on is refused: the mirror does not reach
// its own host's other services, the cloud's metadata service or the
// internal network for an upstream, and nothing they answer reaches the
// client. upstream_redirects allow_private follows them.
func TestRedirectsToPrivateAddressesRefused(t *testing.T) {
	t.Parallel()
	// An internal service on another loopback address than the
	// upstream's (127.0.0.1).
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listening on 127.0.0.2 (Linux routes all of 127.0.0.0/8 to loopback): %v", err)
	}
	var internalHits atomic.Int64
	internal := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		internalHits.Add(1)
		if strings.HasSuffix(r.URL.Path, ".mod") {
			w.Write(modA.Mod())
			return
		}
		http.Error(w, "internal admin console: user alice in group payroll", http.StatusForbidden)
	}))
	internal.Listener.Close()
	internal.Listener = l
	internal.Start()
	t.Cleanup(internal.Close)
	up := testenv.NewUpstream(t, modA)
	for _, kind := range []string{"mod", "zip", "info"} {
		p := path(modA, kind)
		up.Override(p, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, internal.URL+"/"+p, http.StatusFound)
		})
	}
	// IPv6 loopback too (no upstream is on it).
	up.Override("example.com/a/@v/list", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://[::1]:1/list", http.StatusFound)
	})
	e := newEnv(t, up, options{})
	for _, p := range []string{path(modA, "mod"), path(modA, "zip"), path(modA, "info"), "example.com/a/@v/list"} {
		resp, body := e.do("GET", p)
		if resp.StatusCode != 502 || bytes.Contains(body, []byte("alice")) || bytes.Contains(body, []byte("module")) {
			t.Errorf("%s: %d %q; want a 502 that says nothing of the internal service", p, resp.StatusCode, body)
		}
		if !bytes.Contains(body, []byte("private address")) {
			t.Errorf("%s: reason %q does not say why", p, body)
		}
	}
	if n := internalHits.Load(); n != 0 {
		t.Errorf("the internal service was reached %d times", n)
	}
	// allow_private follows them.
	e2 := newEnv(t, up, options{allowPrivate: true})
	if _, body := e2.get(path(modA, "mod"), 200); !bytes.Equal(body, modA.Mod()) {
		t.Errorf("allow_private: %q", body)
	}
	// A configured upstream on a private address is reached, and so is a
	// redirect to the address it is on (another port of 127.0.0.1, as in
	// TestUpstreamRedirects).
	e3 := newEnv(t, up, options{upstream: internal.URL})
	if _, body := e3.get(path(modA, "mod"), 200); !bytes.Equal(body, modA.Mod()) {
		t.Errorf("a configured upstream on 127.0.0.2: %q", body)
	}
}
