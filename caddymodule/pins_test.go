package caddymodule

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A private module whose upstream serves other content for a version it
// served before (a moved tag behind a private proxy): refused after a
// purge with the SECURITY ERROR the go command prints, until `caddy
// goproxy accept` takes the new content.
func TestAcceptMovedTag(t *testing.T) {
	corp := testenv.Module{Path: "git.corp.example/lib", Version: "v1.0.0", Files: map[string]string{"lib.go": "package lib\n"}}
	up := testenv.NewUpstream(t, corp)
	base := startCaddy(t, fmt.Sprintf(`goproxy %s {
		private git.corp.example
		private_upstream %s
		cache {
			disk %s
		}
	}`, up.URL, up.URL, t.TempDir()))
	admin := fmt.Sprintf("localhost:%d", testcaddy.AdminPort())
	env := append(testenv.GoEnv(t, base), "GOPRIVATE=git.corp.example", "GONOPROXY=none")
	testenv.RunGo(t, t.TempDir(), env, "mod", "download", "git.corp.example/lib@v1.0.0")

	moved := corp
	moved.Files = map[string]string{"lib.go": "package lib\n\nfunc init() { /* something else */ }\n"}
	up.Add(moved)
	if err := PurgeViaAdmin(admin, "git.corp.example/lib@v1.0.0", &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	out, err := testenv.TryGo(t, t.TempDir(), append(env, "GOMODCACHE="+t.TempDir()), "mod", "download", "git.corp.example/lib@v1.0.0")
	if err == nil || !strings.Contains(out, "502 Bad Gateway") || !strings.Contains(out, "SECURITY ERROR") || !strings.Contains(out, "caddy goproxy accept git.corp.example/lib@v1.0.0") {
		t.Fatalf("the moved version: err %v\n%s", err, out)
	}
	t.Logf("go mod download of the moved version:\n%s", out)

	var res bytes.Buffer
	if err := AcceptViaAdmin(admin, "git.corp.example/lib@v1.0.0", &res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.String(), "accepted the new zip") {
		t.Errorf("accept printed %q", res.String())
	}
	testenv.RunGo(t, t.TempDir(), append(env, "GOMODCACHE="+t.TempDir()), "mod", "download", "git.corp.example/lib@v1.0.0")
	if err := AcceptViaAdmin(admin, "git.corp.example/lib@v1.0.0", &res); err == nil {
		t.Error("accepting twice: no error")
	}
}
