package goproxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/dirhash"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A renamed module (a version whose go.mod names another path, as
// github.com/imdario/mergo@v1.0.2 says dario.cat/mergo) is served as the
// upstream has it: the go command gives the same answers through the
// mirror as from the upstream itself.
func TestRenamedModuleAsUpstream(t *testing.T) {
	t.Parallel()
	old10 := testenv.Module{Path: "example.com/old", Version: "v1.0.0", Files: map[string]string{"old.go": "package old\n\nconst V = 1\n"}}
	old11 := testenv.Module{Path: "example.com/old", Version: "v1.1.0", GoMod: "module example.com/new\n\ngo 1.21\n",
		Files: map[string]string{"old.go": "package old\n\nconst V = 2\n"}}
	lib10 := testenv.Module{Path: "example.com/lib", Version: "v1.0.0", Files: map[string]string{"lib.go": "package lib\n\nconst V = 1\n"}}
	lib12 := testenv.Module{Path: "example.com/lib", Version: "v1.2.0", Files: map[string]string{"lib.go": "package lib\n\nconst V = 12\n"}}
	up := testenv.NewUpstream(t, old10, old11, lib10, lib12)
	e := newEnv(t, up, options{memory: true, sumdb: up.VerifiedBy(t)})
	if _, body := e.get(path(old11, "mod"), 200); string(body) != old11.GoMod {
		t.Fatalf("renamed go.mod served as %q", body)
	}
	app := func() string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/app\n\ngo 1.21\n\nrequire (\n\texample.com/lib v1.0.0\n\texample.com/old v1.0.0\n)\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport (\n\t\"example.com/lib\"\n\t\"example.com/old\"\n)\n\nfunc main() { println(lib.V, old.V) }\n"), 0o644)
		return dir
	}
	run := func(goproxy string) (listU, getU string) {
		dir := app()
		env := append(testenv.GoEnv(t, goproxy), "GOFLAGS=-mod=mod")
		out, err := testenv.TryGo(t, dir, env, "list", "-m", "-u", "all")
		if err != nil {
			t.Errorf("go list -m -u all through %s: %v\n%s", goproxy, err, out)
		}
		listU = out
		if out, err := testenv.TryGo(t, dir, env, "get", "-u", "./..."); err != nil {
			getU = "error: " + out
		}
		gomod, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
		return listU, getU + string(gomod)
	}
	directList, directGet := run(up.URL)
	mirrorList, mirrorGet := run(e.srv.URL)
	t.Logf("go list -m -u all\nfrom the upstream:\n%s\nthrough Piraeus:\n%s", directList, mirrorList)
	t.Logf("go get -u ./...\nfrom the upstream:\n%s\nthrough Piraeus:\n%s", directGet, mirrorGet)
	if directList != mirrorList {
		t.Errorf("go list -m -u all differs")
	}
	if directGet != mirrorGet {
		t.Errorf("go get -u differs")
	}
}

// With the upstream and the checksum database down, what is cached is
// still served, /sumdb/ included: a fully cached `go mod download` with
// checksum verification succeeds, also from a mirror started while they
// are down.
func TestCachedDownloadWithUpstreamDown(t *testing.T) {
	t.Parallel()
	db := testenv.NewSumDB(t, sumdbName)
	up := testenv.NewUpstream(t, modA, modUp)
	disk := t.TempDir()
	e := newEnv(t, up, options{sumdb: db, sumdbProbe: true, diskRoot: disk})
	download := func() (string, error) {
		env := append(testenv.GoEnv(t, e.srv.URL), "GOSUMDB="+db.VKey) // reached through the mirror's /sumdb/
		return testenv.TryGo(t, t.TempDir(), env, "mod", "download", "-json", "example.com/a@v1.0.0", "github.com/Azure/Go-Thing@v0.3.0-RC1")
	}
	if out, err := download(); err != nil || strings.Contains(out, `"Error"`) {
		t.Fatalf("first download: %v\n%s", err, out)
	}
	e.close()
	up.Close()
	db.Close()
	e = newEnv(t, up, options{sumdb: db, sumdbProbe: true, diskRoot: disk}) // restarted
	out, err := download()
	if err != nil || strings.Contains(out, `"Error"`) {
		t.Fatalf("cached download with the upstream down: %v\n%s", err, out)
	}
	resp, _ := e.do("GET", "sumdb/"+sumdbName+"/supported")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("supported: %d %q", resp.StatusCode, ct)
	}
}

// The conformance table: every endpoint and status the go command tells
// apart, asked of the upstream fixture (the reference) and of the mirror,
// cold and then cached. A row whose answers differ is a divergence; the
// one documented mapping is that an upstream's 5xx reaches clients as 502.
func TestConformance(t *testing.T) {
	t.Parallel()
	pseudo := "v1.0.1-0.20240102030405-abcdefabcdef"
	up := testenv.NewUpstream(t, modA, modA11, modUp, modV2)
	up.Add(testenv.Module{Path: "example.com/untagged", Version: pseudo})
	overrides := map[string]http.HandlerFunc{
		"example.com/pseudo/@v/list": func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "v1.0.0\n"+pseudo+"\n")
		},
		"example.com/untagged/@v/list": func(w http.ResponseWriter, r *http.Request) {}, // no tagged version
		"example.com/nolatest/@latest": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "not found: no @latest here", http.StatusNotFound)
		},
		"example.com/a/@v/v1.0.5.info": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "gone: example.com/a@v1.0.5 was retracted from this proxy", http.StatusGone)
		},
		"example.com/refused/@v/list": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "forbidden: example.com/refused is not allowed by policy", http.StatusForbidden)
		},
		"example.com/refused/@v/v1.0.0.zip": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "forbidden: example.com/refused is not allowed by policy", http.StatusForbidden)
		},
		"badhost.example/x/@v/list": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "bad request: Go module host not permitted", http.StatusBadRequest)
		},
		"example.com/broken/@v/v1.0.0.info": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "internal error", http.StatusInternalServerError)
		},
		"example.com/unavailable/@latest": func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "try later", http.StatusServiceUnavailable)
		},
	}
	for p, h := range overrides {
		up.Override(p, h)
	}
	rows := []string{
		path(modA, "list"),
		"example.com/pseudo/@v/list",
		"example.com/untagged/@v/list",
		"example.com/unknown/@v/list",
		path(modA, "latest"),
		"example.com/nolatest/@latest",
		"example.com/unknown/@latest",
		path(modA, "info"),
		path(modA, "mod"),
		path(modA, "zip"),
		path(modUp, "info"),
		path(modUp, "zip"),
		path(modV2, "mod"),
		"example.com/a/@v/main.info",
		"example.com/a/@v/v1.info",
		"example.com/a/@v/nobranch.info",
		"example.com/a/@v/v1.9.9.info",
		"example.com/a/@v/v1.9.9.mod",
		"example.com/a/@v/v1.9.9.zip",
		"example.com/a/@v/v1.0.5.info",
		"example.com/refused/@v/list",
		"example.com/refused/@v/v1.0.0.zip",
		"example.com/broken/@v/v1.0.0.info",
		"example.com/unavailable/@latest",
		"badhost.example/x/@v/list",
	}
	e := newEnv(t, up, options{memory: true})
	get := func(base, p string) (int, string, []byte) {
		resp, err := http.Get(base + "/" + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), body
	}
	for _, p := range rows {
		wantStatus, _, wantBody := get(up.URL, p)
		if wantStatus >= 500 {
			wantStatus = http.StatusBadGateway
		}
		for _, round := range []string{"cold", "cached"} {
			status, ctype, body := get(e.srv.URL, p)
			switch {
			case status != wantStatus:
				t.Errorf("%s (%s): %d %q; the upstream answers %d", p, round, status, body, wantStatus)
			case status == 200 && !bytes.Equal(body, wantBody):
				t.Errorf("%s (%s): body %q; the upstream's is %q", p, round, body, wantBody)
			case status != 200 && (!strings.HasPrefix(ctype, "text/plain") || bytes.Count(body, []byte("\n")) != 1):
				t.Errorf("%s (%s): error answer %q (%s); want one line of text", p, round, body, ctype)
			case status >= 400 && status < 500 && !bytes.Contains(wantBody, bytes.TrimSpace(body)) && !bytes.Contains(body, []byte("not found")):
				t.Errorf("%s (%s): %q; want the upstream's reason %q", p, round, body, wantBody)
			}
		}
	}
	t.Logf("%d rows, each cold and cached", len(rows))
}

// A module of more than 65,535 files is a zip64 archive (as
// github.com/hashicorp/go-azure-sdk/resource-manager's is): the go command
// downloads it through a cold and then a warm mirror, verified against the
// checksum database, with the h1: it computes for the zip itself (what it
// gets going direct: dirhash of the upstream's zip).
func TestZip64Module(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	files := make(map[string]string, 66000)
	for i := range 66000 {
		files[fmt.Sprintf("d%02d/f%d.txt", i/1000, i)] = "x"
	}
	many := testenv.Module{Path: "example.com/many", Version: "v1.0.0", Files: files}
	zipFile := filepath.Join(t.TempDir(), "many.zip")
	f, err := os.Create(zipFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := many.WriteZip(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !isZip64(t, zipFile) {
		t.Fatal("the fixture is not a zip64 archive: the test proves nothing")
	}
	up := testenv.NewUpstream(t)
	up.AddBigZip(many, zipFile)
	db := up.VerifiedBy(t)
	e := newEnv(t, up, options{sumdb: db, sumdbProbe: true})

	sum := func(goproxy, gosumdb string) string {
		env := append(testenv.GoEnv(t, goproxy), "GOSUMDB="+gosumdb)
		out := testenv.RunGo(t, t.TempDir(), env, "mod", "download", "-json", "example.com/many@v1.0.0")
		var m struct{ Sum, GoModSum, Error string }
		if err := json.Unmarshal([]byte(out), &m); err != nil || m.Error != "" || m.Sum == "" {
			t.Fatalf("go mod download through %s: %v\n%s", goproxy, err, out)
		}
		return m.Sum
	}
	direct, err := dirhash.HashZip(zipFile, dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	cold := sum(e.srv.URL, db.VKey)
	warm := sum(e.srv.URL, db.VKey)
	if cold != direct || warm != direct {
		t.Errorf("h1: direct %s, cold %s, warm %s", direct, cold, warm)
	}
	if n := up.Requests(path(many, "zip")); n != 1 {
		t.Errorf("upstream asked for the zip %d times; want 1 (cold)", n)
	}
}

// isZip64 reports whether the zip file has a zip64 end of central
// directory record.
func isZip64(t *testing.T, name string) bool {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	tail := data[max(0, len(data)-1024):]
	return bytes.Contains(tail, []byte("PK\x06\x06")) && bytes.Contains(tail, []byte("PK\x06\x07"))
}

// The deprecation and retraction checks of `go list -m -u` (and of `go
// install mod@old`) read @latest's or the list's newest version and its
// go.mod: they answer the same through the mirror as from the upstream,
// and from the cache alone once the upstream is down (stale lists).
func TestDeprecationAndRetractionOffline(t *testing.T) {
	t.Parallel()
	old := testenv.Module{Path: "example.com/dep", Version: "v1.0.0", Files: map[string]string{"dep.go": "package dep\n"}}
	newest := testenv.Module{Path: "example.com/dep", Version: "v1.1.0",
		GoMod: "// Deprecated: use example.com/dep/v2.\nmodule example.com/dep\n\ngo 1.21\n\nretract v1.0.0 // broken\n",
		Files: map[string]string{"dep.go": "package dep\n"}}
	up := testenv.NewUpstream(t, old, newest)
	e := newEnv(t, up, options{listTTL: time.Nanosecond})
	listU := func(goproxy string) string {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/app\n\ngo 1.21\n\nrequire example.com/dep v1.0.0\n"), 0o644)
		env := append(testenv.GoEnv(t, goproxy), "GOFLAGS=-mod=mod")
		out, err := testenv.TryGo(t, dir, env, "list", "-m", "-u", "-retracted", "all")
		if err != nil {
			t.Fatalf("go list -m -u all through %s: %v\n%s", goproxy, err, out)
		}
		return out
	}
	direct := listU(up.URL)
	if !strings.Contains(direct, "(retracted)") || !strings.Contains(direct, "(deprecated)") {
		t.Fatalf("the fixture shows no retraction or deprecation: %s", direct)
	}
	if mirror := listU(e.srv.URL); mirror != direct {
		t.Errorf("through the mirror:\n%s\nfrom the upstream:\n%s", mirror, direct)
	}
	up.Close()
	if offline := listU(e.srv.URL); offline != direct {
		t.Errorf("through the mirror with the upstream down:\n%s\nfrom the upstream:\n%s", offline, direct)
	}
}

// GOTOOLCHAIN switches download golang.org/toolchain through GOPROXY: it
// is fetched from the public upstream and verified even where private and
// verify off patterns would cover it (private "golang.org" here routes
// to a direct fetcher that cannot work).
func TestToolchainNeverPrivate(t *testing.T) {
	t.Parallel()
	tc := testenv.Module{Path: "golang.org/toolchain", Version: "v0.0.1-go1.99.0.linux-amd64",
		GoMod: "module golang.org/toolchain\n", Files: map[string]string{"bin/go": "#!/bin/sh\necho go1.99.0\n", "VERSION": "go1.99.0\n"}}
	up := testenv.NewUpstream(t, tc)
	db := up.VerifiedBy(t)
	e := newEnv(t, up, options{sumdb: db, sumdbProbe: true, private: "golang.org", noVerify: "golang.org",
		direct: DirectOptions{GoBinary: "/nonexistent/go"}})
	e.get("golang.org/toolchain/@v/list", 200)
	out := testenv.RunGo(t, t.TempDir(), append(testenv.GoEnv(t, e.srv.URL), "GOSUMDB="+db.VKey), "mod", "download", "-json", tc.Path+"@"+tc.Version)
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("go mod download of the toolchain: %s", out)
	}
	if !slices.ContainsFunc(db.Paths(), func(p string) bool { return strings.HasPrefix(p, "/lookup/golang.org/toolchain@") }) {
		t.Errorf("the toolchain was not verified: the checksum database saw %v", db.Paths())
	}
	if n := up.Requests(path(tc, "zip")); n != 1 {
		t.Errorf("the public upstream was asked for the toolchain zip %d times; want 1", n)
	}
}

// The Origin of a .info (the VCS, URL, ref and hash it was built from) is
// kept byte for byte, so `go mod download -reuse` sees through the mirror
// what it sees from the upstream.
func TestInfoOriginKeptForReuse(t *testing.T) {
	t.Parallel()
	m := testenv.Module{Path: "example.com/origin", Version: "v1.0.0", Files: map[string]string{"o.go": "package o\n"}}
	info := `{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z","Origin":{"VCS":"git","URL":"https://example.com/origin","Ref":"refs/tags/v1.0.0","Hash":"0123456789abcdef0123456789abcdef01234567"}}`
	up := testenv.NewUpstream(t, m)
	up.Override(path(m, "info"), func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, info) })
	e := newEnv(t, up, options{})
	for range 2 { // cold, then cached
		if _, body := e.get(path(m, "info"), 200); string(body) != info {
			t.Fatalf(".info through the mirror: %s; the upstream's: %s", body, info)
		}
	}
	download := func(goproxy string) string {
		env := testenv.GoEnv(t, goproxy)
		first := testenv.RunGo(t, t.TempDir(), env, "mod", "download", "-json", m.Path+"@"+m.Version)
		prev := filepath.Join(t.TempDir(), "prev.json")
		os.WriteFile(prev, []byte(first), 0o644)
		again := testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, goproxy), "mod", "download", "-json", "-reuse="+prev, m.Path+"@"+m.Version)
		// The module cache differs between runs: compare all but paths.
		var fields map[string]any
		if err := json.Unmarshal([]byte(again), &fields); err != nil {
			t.Fatalf("go mod download -reuse: %v\n%s", err, again)
		}
		for _, k := range []string{"Info", "GoMod", "Zip", "Dir"} {
			delete(fields, k)
		}
		b, _ := json.Marshal(fields)
		return string(b)
	}
	direct, mirror := download(up.URL), download(e.srv.URL)
	if direct != mirror {
		t.Errorf("go mod download -reuse through the mirror:\n%s\nfrom the upstream:\n%s", mirror, direct)
	}
	if !strings.Contains(mirror, `"Hash":"0123456789abcdef0123456789abcdef01234567"`) {
		t.Errorf("the Origin did not reach the go command: %s", mirror)
	}
}
