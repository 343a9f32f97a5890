package caddymodule

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// The health and readiness answers of a healthy mirror, of one whose disk
// cannot be written, and of one whose Redis is down.
func TestHealthAndReadiness(t *testing.T) {
	r := testenv.StartRedis(t)
	up := testenv.NewUpstream(t, hello)
	disk := t.TempDir()
	base := startCaddy(t, fmt.Sprintf(`goproxy %s {
		sumdb %s
		health
		fleet_key piraeus-test-fleet-key-not-a-secret-0123456789
		cache {
			disk %s
			redis %s
		}
	}`, up.URL, up.VerifiedBy(t).VKey, disk, r.URL()))
	probe := func(path string) (int, string) {
		status, body, err := testenv.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		return status, strings.TrimSpace(string(body))
	}
	check := func(state string, wantReady int, wantReason string) {
		t.Helper()
		if status, body := probe("/healthz"); status != 200 || body != "ok" {
			t.Errorf("%s: /healthz %d %q; want 200 ok", state, status, body)
		}
		status, body := probe("/readyz")
		if status != wantReady || !strings.Contains(body, wantReason) {
			t.Errorf("%s: /readyz %d %q; want %d with %q", state, status, body, wantReady, wantReason)
		}
		t.Logf("%s: /readyz %d %q", state, status, body)
	}
	check("healthy", 200, "ready")

	// The disk cannot take a file: its temp directory is a file now.
	tmp := filepath.Join(disk, "tmp")
	os.RemoveAll(tmp)
	os.WriteFile(tmp, nil, 0o644)
	check("disk not writable", 503, "not ready: disk tier: disk not writable: not a directory")
	os.Remove(tmp)
	check("disk back", 200, "ready")

	r.Stop()
	check("redis down", 503, "not ready: redis tier: redis")
	r.Start()
	testenv.MustGet(t, base+"/"+testenv.EscapedPath(hello.Path, hello.Version, "info"))
}

// The checksum database counts for readiness when it verifies.
func TestReadinessNeedsChecksumDatabase(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	up.Override("sumdb/sum.golang.org/supported", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusInternalServerError)
	})
	base := startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\thealth\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, t.TempDir()))
	status, body, _ := testenv.Get(base + "/readyz")
	if status != 503 || !strings.Contains(string(body), "checksum database sum.golang.org") {
		t.Errorf("/readyz with its checksum database unreachable: %d %q", status, body)
	}
	t.Logf("checksum database unreachable: /readyz %d %q", status, bytes.TrimSpace(body))

	// A database whose route is known (configured here; or not proxied by
	// the upstream, so read directly) must answer too.
	closed := fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	base = startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\thealth\n\t\tsumdb sum.golang.org %s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, closed, t.TempDir()))
	status, body, _ = testenv.Get(base + "/readyz")
	if status != 503 || !strings.Contains(string(body), "checksum database sum.golang.org") {
		t.Errorf("/readyz with its configured checksum database down: %d %q", status, body)
	}
	t.Logf("configured checksum database down: /readyz %d %q", status, bytes.TrimSpace(body))
}

// The catalog lists what the mirror holds, in Athens' format and pages;
// another mirror is warmed from it with `caddy goproxy warm <URL>`.
func TestCatalogAndWarmFromIt(t *testing.T) {
	up := testenv.NewUpstream(t, hello, hello11, thing)
	db := up.VerifiedBy(t)
	portA, portB := testenv.FreePort(t), testenv.FreePort(t)
	site := func(port int, extra string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tgoproxy %s {\n\t\tsumdb %s\n\t\tcatalog\n\t\t%s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}\n}\n",
			port, up.URL, db.VKey, extra, t.TempDir())
	}
	// Two mirrors of one upstream; the second lists in another namespace.
	testcaddy.Load(t, testcaddy.Global()+site(portA, "")+site(portB, "private example.org/none"))
	a, b := fmt.Sprintf("http://127.0.0.1:%d", portA), fmt.Sprintf("http://127.0.0.1:%d", portB)
	for _, m := range []testenv.Module{hello, hello11, thing} {
		for _, kind := range []string{"info", "mod", "zip"} {
			testenv.MustGet(t, a+"/"+testenv.EscapedPath(m.Path, m.Version, kind))
		}
	}
	// A version whose zip the upstream refuses: its .info is held, but a
	// mirror warmed from the catalog could not get it, so it is not listed.
	refused := testenv.Module{Path: "example.com/refused", Version: "v1.0.0"}
	up.Add(refused)
	up.Override(testenv.EscapedPath(refused.Path, refused.Version, "zip"), func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "forbidden: not redistributable", http.StatusForbidden)
	})
	testenv.MustGet(t, a+"/"+testenv.EscapedPath(refused.Path, refused.Version, "info"))
	testenv.MustGet(t, a+"/"+testenv.EscapedPath(refused.Path, refused.Version, "mod"))
	if code, _, _ := testenv.Get(a + "/" + testenv.EscapedPath(refused.Path, refused.Version, "zip")); code != 403 {
		t.Fatalf("the refused zip: %d", code)
	}
	read := func(base string) []string {
		var all []string
		token := ""
		for range 10 {
			var page struct {
				Modules []struct{ Module, Version string }
				Next    string
			}
			body := testenv.MustGet(t, base+"/catalog?pagesize=2&token="+token)
			if err := json.Unmarshal(body, &page); err != nil || len(page.Modules) > 2 {
				t.Fatalf("catalog page %q: %v", body, err)
			}
			for _, m := range page.Modules {
				all = append(all, m.Module+"@"+m.Version)
			}
			if token = page.Next; token == "" {
				break
			}
		}
		slices.Sort(all)
		return all
	}
	want := []string{"example.com/hello@v1.0.0", "example.com/hello@v1.1.0", "github.com/Azure/Go-Thing@v0.3.0"}
	if got := read(a); !slices.Equal(got, want) {
		t.Fatalf("catalog of A: %v; want %v", got, want)
	}
	if got := read(b); len(got) != 0 {
		t.Fatalf("catalog of B before warming: %v", got)
	}
	var out bytes.Buffer
	if err := runCaddyCommand(&out, "warm", "--address", fmt.Sprintf("localhost:%d", testcaddy.AdminPort()), a+"/catalog"); err != nil {
		t.Fatalf("warm from A's catalog: %v\n%s", err, out.String())
	}
	if got := read(b); !slices.Equal(got, want) {
		t.Errorf("catalog of B after warming from A's: %v; want %v\n%s", got, want, out.String())
	}
}
