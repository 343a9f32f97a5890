package goproxy

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

const sumdbName = "sum.piraeus.test"

func TestSumDBVerifiesAndServes(t *testing.T) {
	t.Parallel()
	db := testenv.NewSumDB(t, sumdbName, modA, modUp)
	up := testenv.NewUpstream(t, modA, modUp)
	e := newEnv(t, up, options{memory: true, sumdb: db})
	_, body := e.get(path(modA, "zip"), 200)
	if !bytes.Equal(body, modA.Zip(t)) {
		t.Fatal("zip differs")
	}
	e.get(path(modA, "mod"), 200)
	e.get(path(modUp, "mod"), 200)

	// The protocol paths of the database, as the go command uses them.
	resp, _ := e.do("GET", "sumdb/"+sumdbName+"/supported")
	if resp.StatusCode != 200 {
		t.Errorf("supported: %d", resp.StatusCode)
	}
	_, latest := e.get("sumdb/"+sumdbName+"/latest", 200)
	if !strings.HasPrefix(string(latest), "go.sum database tree\n") {
		t.Errorf("latest: %q", latest)
	}
	resp, lookup := e.get("sumdb/"+sumdbName+"/lookup/example.com/a@v1.0.0", 200)
	if !strings.Contains(string(lookup), "example.com/a v1.0.0 h1:") || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Errorf("lookup: %q %q", lookup, resp.Header.Get("Cache-Control"))
	}
	e.get("sumdb/"+sumdbName+"/lookup/github.com/!azure/!go-!thing@v0.3.0-!r!c1", 200)
	e.get("sumdb/"+sumdbName+"/tile/8/0/000.p/2", 200)
	e.get("sumdb/"+sumdbName+"/lookup/example.com/unknown@v1.0.0", 404)
	e.get("sumdb/sum.golang.org/latest", 404)
	e.get("sumdb/"+sumdbName+"/lookup/example.com/a@v1.0", 400)
	e.get("sumdb/"+sumdbName+"/lookup/../../x@v1.0.0", 400)
	e.get("sumdb/"+sumdbName+"/tile/8/0/../../../x", 400)
	e.get("sumdb/"+sumdbName+"/bogus", 404)

	// Lookups answered before are served from the cache.
	before := db.Requests()
	e.get("sumdb/"+sumdbName+"/lookup/example.com/a@v1.0.0", 200)
	if n := db.Requests() - before; n != 0 {
		t.Errorf("a verified lookup went to the database again (%d requests)", n)
	}
}

func TestGoCommandWithSumDBThroughProxy(t *testing.T) {
	t.Parallel()
	db := testenv.NewSumDB(t, sumdbName, modA, modUp)
	up := testenv.NewUpstream(t, modA, modUp)
	e := newEnv(t, up, options{memory: true, sumdb: db})
	// The database's name does not resolve: every check goes through the
	// proxy, whether the go command finds it through GOPROXY's /sumdb/ or
	// is given its URL.
	for _, gosumdb := range []string{db.VKey, db.VKey + " " + e.srv.URL + "/sumdb/" + sumdbName} {
		env := append(testenv.GoEnv(t, e.srv.URL), "GOSUMDB="+gosumdb)
		out := testenv.RunGo(t, t.TempDir(), env, "mod", "download", "-json", "example.com/a@v1.0.0", "github.com/Azure/Go-Thing@v0.3.0-RC1")
		if strings.Contains(out, `"Error"`) {
			t.Fatalf("go mod download with GOSUMDB=%q: %s", gosumdb, out)
		}
	}
	env := append(testenv.GoEnv(t, e.srv.URL), "GOSUMDB="+db.VKey)
	// A module the database does not know fails verification in the go
	// command, as it would against sum.golang.org.
	up.Add(modA11)
	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/a@v1.1.0")
	if err == nil {
		t.Fatalf("module unknown to the checksum database downloaded: %s", out)
	}
}

func TestSumDBRejectsTampering(t *testing.T) {
	t.Parallel()
	evilZip := testenv.Module{Path: modA.Path, Version: modA.Version, Files: map[string]string{"a.go": "package a\n\nfunc init() { panic(\"pwned\") }\n"}}
	tests := []struct {
		name, path string
		handler    http.HandlerFunc
	}{
		{"zip", path(modA, "zip"), func(w http.ResponseWriter, r *http.Request) { w.Write(evilZip.Zip(t)) }},
		{"go.mod", path(modA, "mod"), func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("module example.com/a\n\nrequire example.com/evil v1.0.0\n"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := testenv.NewSumDB(t, sumdbName, modA)
			up := testenv.NewUpstream(t, modA)
			up.Override(tt.path, tt.handler)
			e := newEnv(t, up, options{memory: true, sumdb: db})
			for range 2 {
				resp, body := e.do("GET", tt.path)
				if resp.StatusCode != 502 || !strings.Contains(string(body), "checksum mismatch") {
					t.Fatalf("tampered %s: %d %q; want 502 checksum mismatch", tt.name, resp.StatusCode, body)
				}
			}
			if n := e.proxy.VerifyFailures(); n != 2 {
				t.Errorf("verification failures counted: %d; want 2", n)
			}
			assertNotCached(t, e, tt.path)
			// The genuine module is accepted once upstream serves it.
			up.Override(tt.path, nil)
			e.get(tt.path, 200)
		})
	}
}

func TestSumDBVerifyOffPattern(t *testing.T) {
	t.Parallel()
	db := testenv.NewSumDB(t, sumdbName) // knows nothing
	private := testenv.Module{Path: "corp.example/internal/x", Version: "v1.0.0"}
	up := testenv.NewUpstream(t, private, modA)
	e := newEnv(t, up, options{sumdb: db, noVerify: "*.example/internal"})
	e.get(path(private, "zip"), 200)
	e.get(path(private, "mod"), 200)
	if n := db.Requests(); n != 0 {
		t.Errorf("a module matched by verify off was looked up in the database (%d requests)", n)
	}
	// Others are still verified: the database has no record of them.
	resp, body := e.do("GET", path(modA, "mod"))
	if resp.StatusCode != 502 {
		t.Errorf("unverifiable module: %d %q; want 502", resp.StatusCode, body)
	}
}

func TestSumDBRejectsTamperedTiles(t *testing.T) {
	t.Parallel()
	db := testenv.NewSumDB(t, sumdbName, modA, modA11)
	db.TamperTiles(true)
	up := testenv.NewUpstream(t, modA, modA11)
	e := newEnv(t, up, options{memory: true, sumdb: db})
	for _, m := range []testenv.Module{modA, modA11} {
		resp, body := e.do("GET", path(m, "mod"))
		if resp.StatusCode != 502 {
			t.Fatalf("module verified with a tampered tile: %d %q", resp.StatusCode, body)
		}
		assertNotCached(t, e, path(m, "mod"))
	}
	// No tile was cached: only verified tiles are.
	filepath.WalkDir(e.diskRoot, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(p, "/tile/") {
			t.Errorf("tile cached: %s", p)
		}
		return nil
	})
	// Tampered tiles are passed through uncached to clients, which reject
	// them; once the database is healthy, verification succeeds.
	db.TamperTiles(false)
	e.get(path(modA, "mod"), 200)
	if _, err := os.Stat(e.diskRoot); err != nil {
		t.Fatal(err)
	}
}

// The real checksum database grows between any two requests, so each
// lookup answer carries the tree of its moment, and the mirror's client,
// which merges the answers in the order they arrive, reads tiles at the
// widths of its own latest tree. Here the answer for x is taken from the
// database first and arrives after y's, taken 300 records later: the
// client never reads a tile of x's tree. Fresh go commands that see x's
// tree still verify offline, with the upstream and the database stopped:
// a partial tile is answered from a wider verified one of the same place.
func TestSumDBGrowingTreeOffline(t *testing.T) {
	t.Parallel()
	db := testenv.NewSumDB(t, sumdbName)
	x := testenv.Module{Path: "example.com/x", Version: "v1.0.0", Files: map[string]string{"x.go": "package x\n"}}
	y := testenv.Module{Path: "example.com/y", Version: "v1.0.0", Files: map[string]string{"y.go": "package y\n"}}
	up := testenv.NewUpstream(t, x, y)
	lookup := func(base string, m testenv.Module) []byte {
		t.Helper()
		resp, err := http.Get(base + "/lookup/" + m.Path + "@" + m.Version)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("lookup of %s at %s: %d %s", m.Path, base, resp.StatusCode, body)
		}
		return body
	}
	filled := 0
	grow := func(n int) { // records the database adds, as others look modules up
		for range n {
			m := testenv.Module{Path: fmt.Sprintf("example.com/other%d", filled), Version: "v1.0.0"}
			filled++
			db.Add(m)
			lookup(db.URL, m)
		}
	}
	grow(300)
	asked, release := make(chan struct{}), make(chan struct{})
	up.Override("sumdb/"+sumdbName+"/lookup/example.com/x@v1.0.0", func(w http.ResponseWriter, r *http.Request) {
		answer := lookup(db.URL, x) // x's record and the tree of this moment
		close(asked)
		<-release
		w.Write(answer)
	})
	e := newEnv(t, up, options{sumdb: db, sumdbProbe: true})
	mirrorDB := e.srv.URL + "/sumdb/" + sumdbName
	xDone := testenv.GetAsync(mirrorDB + "/lookup/example.com/x@v1.0.0")
	<-asked
	grow(300)
	lookup(mirrorDB, y) // merged first: the mirror's client is at y's tree
	close(release)
	if answer := <-xDone; !bytes.Contains(answer, []byte("\nexample.com/x v1.0.0 h1:")) {
		t.Fatalf("lookup of x through the mirror: %q", answer)
	}

	download := func(mods ...string) (string, error) {
		env := append(testenv.GoEnv(t, e.srv.URL), "GOSUMDB="+db.VKey)
		return testenv.TryGo(t, t.TempDir(), env, append([]string{"mod", "download", "-json"}, mods...)...)
	}
	if out, err := download("example.com/x@v1.0.0", "example.com/y@v1.0.0"); err != nil {
		t.Fatalf("download with the upstream up: %v\n%s", err, out)
	}
	up.Close()
	db.Close()
	for _, mods := range [][]string{{"example.com/x@v1.0.0"}, {"example.com/y@v1.0.0"}, {"example.com/x@v1.0.0", "example.com/y@v1.0.0"}} {
		if out, err := download(mods...); err != nil || strings.Contains(out, `"Error"`) {
			t.Errorf("offline download of %v by a fresh go command: %v\n%s", mods, err, out)
		}
	}
}

// A .mod's lookup goes to the checksum database while the upstream is
// asked, not once it has answered, for a client whose .mod requests are
// being found: the go command waits for the .mod of every module of a
// cold graph walk, and the lookup that verifies it is a round trip of its
// own. The upstream here answers the .mod only once the lookup has
// arrived; the zip, asked for later, waits for no lookup. A client asking
// for modules that do not exist causes at most 16 lookups.
func TestModLookupAlongsideFetch(t *testing.T) {
	t.Parallel()
	m := testenv.Module{Path: "example.com/early", Version: "v1.0.0"}
	first := testenv.Module{Path: "example.com/first", Version: "v1.0.0"}
	up := testenv.NewUpstream(t, m, first)
	db := testenv.NewSumDB(t, sumdbName, m, first)
	looked := make(chan struct{})
	var once sync.Once
	up.Override("sumdb/"+sumdbName+"/lookup/example.com/early@v1.0.0", func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(looked) })
		status, body, err := testenv.Get(db.URL + "/lookup/example.com/early@v1.0.0")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(status)
		w.Write(body)
	})
	up.Override(testenv.EscapedPath(m.Path, m.Version, "mod"), func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-looked:
			w.Write(m.Mod())
		case <-time.After(10 * time.Second):
			http.Error(w, "the lookup did not arrive while the .mod was asked for", http.StatusGatewayTimeout)
		case <-r.Context().Done():
		}
	})
	e := newEnv(t, up, options{sumdb: db, sumdbProbe: true, prefetch: PrefetchOptions{Mode: "selected"}})
	e.get(path(first, "mod"), 200) // the client's first .mod: looked up once found
	if _, body := e.get(path(m, "mod"), 200); !bytes.Equal(body, m.Mod()) {
		t.Fatalf(".mod: %q", body)
	}
	if _, body := e.get(path(m, "zip"), 200); !bytes.Equal(body, m.Zip(t)) {
		t.Fatal("zip differs")
	}
	if n := up.Requests("sumdb/" + sumdbName + "/lookup/example.com/early@v1.0.0"); n != 1 {
		t.Errorf("%d lookups; want 1 for the .mod and the zip", n)
	}
	// The client's session decides (the test's client is 127.0.0.1).
	pf := e.proxy.prefetch
	for i := range prefetchTreeFailures {
		if !pf.earlyLookup("127.0.0.1:1") {
			t.Fatalf("after %d .mod requests not found in a row, no early lookup; want one until %d", i, prefetchTreeFailures)
		}
		e.get(fmt.Sprintf("example.com/missing%d/@v/v1.0.0.mod", i), 404)
	}
	if pf.earlyLookup("127.0.0.1:1") {
		t.Errorf("after %d .mod requests not found in a row, early lookups go on", prefetchTreeFailures)
	}
	e.get(path(m, "mod"), 200) // found again (a hit)
	if !pf.earlyLookup("127.0.0.1:1") || pf.earlyLookup("127.0.0.2:1") {
		t.Error("a client's found .mod does not give it early lookups again, or gives them to another client")
	}
}
