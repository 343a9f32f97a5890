package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// vulnSource is a Go vulnerability database in its documented layout
// (index/db.json, index/modules.json, ID/<id>.json) on loopback.
func vulnSource(t *testing.T) (*httptest.Server, *atomic.Int64) {
	files := map[string]string{
		"/index/db.json":      `{"modified":"2026-11-30T10:00:00Z"}`,
		"/index/modules.json": `[{"path":"example.com/vuln","vulns":[{"id":"GO-2099-0001","modified":"2026-11-30T10:00:00Z","fixed":"1.1.0"}]}]`,
		"/index/vulns.json":   `[{"id":"GO-2099-0001","modified":"2026-11-30T10:00:00Z","aliases":["CVE-2099-12345"]}]`,
		"/ID/GO-2099-0001.json": `{"schema_version":"1.3.1","id":"GO-2099-0001","modified":"2026-11-30T10:00:00Z","published":"2026-11-29T10:00:00Z",
"aliases":["CVE-2099-12345"],"summary":"Bad runs arbitrary code in example.com/vuln","details":"Bad evaluates its input.",
"affected":[{"package":{"name":"example.com/vuln","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.1.0"}]}],
"ecosystem_specific":{"imports":[{"path":"example.com/vuln","symbols":["Bad"]}]}}],
"references":[{"type":"FIX","url":"https://example.com/vuln/fix"}],"database_specific":{"url":"https://pkg.go.dev/vuln/GO-2099-0001"}}`,
	}
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		body, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// The Go vulnerability database through the mirror: the real govulncheck
// finds the vulnerable call with GOVULNDB naming the mirror, and again
// once the source is gone (a reloaded config serves the cached database);
// deny vulnerable then refuses the affected version's zip (not its .mod)
// with the entry and the fixed version, and the status page lists it.
func TestVulnDBAndGovulncheck(t *testing.T) {
	govulncheck := testenv.FindTool("govulncheck")
	if govulncheck == "" {
		t.Fatal("govulncheck is needed: GOBIN=$PWD/bin/tools go install golang.org/x/vuln/cmd/govulncheck@v1.9.0 (make tools does)")
	}
	vuln10 := testenv.Module{Path: "example.com/vuln", Version: "v1.0.0", Files: map[string]string{
		"vuln.go": "package vuln\n\nfunc Bad(s string) string { return s }\n"}}
	vuln11 := testenv.Module{Path: "example.com/vuln", Version: "v1.1.0", Files: map[string]string{
		"vuln.go": "package vuln\n\nfunc Bad(s string) string { return \"\" }\n"}}
	up := testenv.NewUpstream(t, vuln10, vuln11)
	db := up.VerifiedBy(t)
	src, srcRequests := vulnSource(t)
	port, disk := testenv.FreePort(t), t.TempDir()
	site := func(extra string) {
		testcaddy.Site(t, port, fmt.Sprintf(`goproxy %s {
		sumdb %s
		status
		cache {
			disk %s
		}
		vulndb %s
		%s
	}`, up.URL, db.VKey, disk, src.URL, extra))
	}
	site("")
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	env := append(testenv.GoEnv(t, base), "GOSUMDB="+db.VKey, "GOFLAGS=-mod=mod")

	prog := newProg(t, map[string]string{
		"go.mod":  "module example.com/prog\n\ngo 1.21\n\nrequire example.com/vuln v1.0.0\n",
		"main.go": "package main\n\nimport (\n\t\"os\"\n\n\t\"example.com/vuln\"\n)\n\nfunc main() { println(vuln.Bad(os.Args[0])) }\n",
	})
	testenv.RunGo(t, prog, env, "mod", "download", "example.com/vuln@v1.0.0")
	run := func() string {
		cmd := exec.Command(govulncheck, "-db", base+"/vuln", "./...")
		cmd.Dir, cmd.Env = prog, env
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 { // 3: vulnerabilities found
			t.Fatalf("govulncheck through the mirror: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "GO-2099-0001") || !strings.Contains(string(out), "vuln.Bad") {
			t.Fatalf("govulncheck did not report GO-2099-0001 at vuln.Bad:\n%s", out)
		}
		return string(out)
	}
	out := run()
	t.Logf("govulncheck -db %s/vuln ./...:\n%s", base, out)
	if srcRequests.Load() == 0 {
		t.Fatal("the source was never asked")
	}

	// The source goes away; a new config (the same cache) serves what the
	// mirror holds.
	src.Close()
	site("deny vulnerable example.com")
	// The new config has counted nothing yet: the status page lists the
	// affected version because the cache holds it.
	type vulnStatus struct {
		Vulnerable []struct {
			Module, Version, Fixed string
			IDs                    []string
			Served, Refused        int
		}
	}
	var st0 vulnStatus
	if _, body, err := testenv.Get(base + "/-/status?format=json"); err != nil || json.Unmarshal(body, &st0) != nil ||
		len(st0.Vulnerable) != 1 || st0.Vulnerable[0].Version != "v1.0.0" || st0.Vulnerable[0].Served+st0.Vulnerable[0].Refused != 0 {
		t.Errorf("the cached vulnerable version on a fresh status page: %+v %v", st0, err)
	}
	run()

	out, err := testenv.TryGo(t, t.TempDir(), append(env, "GOMODCACHE="+t.TempDir()), "mod", "download", "example.com/vuln@v1.0.0")
	if err == nil || !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, "GO-2099-0001") || !strings.Contains(out, "fixed in v1.1.0") {
		t.Fatalf("deny vulnerable: err %v\n%s", err, out)
	}
	t.Logf("go mod download example.com/vuln@v1.0.0 with deny vulnerable:\n%s", out)
	if code, _, _ := testenv.Get(base + "/" + testenv.EscapedPath("example.com/vuln", "v1.0.0", "mod")); code != 200 {
		t.Errorf("the affected version's .mod: %d, want 200 (graph resolution reads it)", code)
	}
	testenv.RunGo(t, t.TempDir(), append(env, "GOMODCACHE="+t.TempDir()), "mod", "download", "example.com/vuln@v1.1.0")

	_, body, err := testenv.Get(base + "/-/status?format=json")
	var st struct {
		Vulnerable []struct {
			Module, Version, Fixed string
			IDs                    []string
			Refused                int
		}
	}
	if err != nil || json.Unmarshal(body, &st) != nil || len(st.Vulnerable) != 1 || st.Vulnerable[0].Version != "v1.0.0" ||
		st.Vulnerable[0].Refused == 0 || st.Vulnerable[0].Fixed != "v1.1.0" || st.Vulnerable[0].IDs[0] != "GO-2099-0001" {
		t.Errorf("status page's vulnerable versions: %s", body)
	}
}

// newProg writes files (name -> content) to a new temp dir: a module for
// the go command to work in.
func newProg(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
