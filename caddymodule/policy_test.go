package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// Deny and allow rules, with the real go command: a denied version is
// refused with its reason (which the go command prints) and never
// fetched, left out of the list, so that go get @latest and go list
// -versions skip it, and @latest names the newest allowed version; an
// allow rule before a broad deny lets one version through.
func TestPolicyDenyAllow(t *testing.T) {
	var mods []testenv.Module
	for _, v := range []string{"v1.0.0", "v1.1.0", "v1.2.0"} {
		mods = append(mods, testenv.Module{Path: "example.com/lib", Version: v, Files: map[string]string{"lib.go": "package lib\n"}})
	}
	for _, v := range []string{"v0.1.0", "v0.2.0"} {
		mods = append(mods, testenv.Module{Path: "example.com/squat", Version: v, Files: map[string]string{"s.go": "package squat\n"}})
	}
	up := testenv.NewUpstream(t, mods...)
	db := up.VerifiedBy(t)
	base := startCaddy(t, fmt.Sprintf(`goproxy %s {
		sumdb %s
		cache {
			disk %s
		}
		deny example.com/lib@>=v1.2.0,<v1.2.1 "v1.2.0 corrupts data on upgrade (INC-4711); use v1.1.0"
		allow example.com/squat@v0.1.0
		deny example.com/squat "a typosquat of example.com/sqat"
	}`, up.URL, db.VKey, t.TempDir()))
	env := append(testenv.GoEnv(t, base), "GOSUMDB="+db.VKey)

	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/lib@v1.2.0")
	if err == nil || !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, "corrupts data on upgrade (INC-4711)") {
		t.Fatalf("a denied version: err %v\n%s", err, out)
	}
	t.Logf("go mod download example.com/lib@v1.2.0:\n%s", out)
	if n := up.Requests(testenv.EscapedPath("example.com/lib", "v1.2.0", "info")); n != 0 {
		t.Errorf("the denied version was fetched upstream %d times", n)
	}

	prog := newProg(t, map[string]string{"go.mod": "module example.com/prog\n\ngo 1.21\n"})
	if out, err := testenv.TryGo(t, prog, env, "get", "example.com/lib@v1.2.0"); err == nil || !strings.Contains(out, "INC-4711") {
		t.Fatalf("go get of the denied version: err %v\n%s", err, out)
	} else {
		t.Logf("go get example.com/lib@v1.2.0:\n%s", out)
	}
	testenv.RunGo(t, prog, env, "get", "example.com/lib@latest")
	gomod, _ := os.ReadFile(filepath.Join(prog, "go.mod"))
	if !strings.Contains(string(gomod), "example.com/lib v1.1.0") {
		t.Errorf("go get @latest with v1.2.0 denied: go.mod\n%s", gomod)
	}
	if out := testenv.RunGo(t, prog, env, "list", "-m", "-versions", "example.com/lib"); strings.TrimSpace(out) != "example.com/lib v1.0.0 v1.1.0" {
		t.Errorf("go list -m -versions: %q", out)
	}
	_, latest, err := testenv.Get(base + "/example.com/lib/@latest")
	var info struct{ Version string }
	if err != nil || json.Unmarshal(latest, &info) != nil || info.Version != "v1.1.0" {
		t.Errorf("@latest: %s %v; want v1.1.0", latest, err)
	}

	testenv.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/squat@v0.1.0")
	out, err = testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/squat@v0.2.0")
	if err == nil || !strings.Contains(out, "a typosquat of example.com/sqat") {
		t.Fatalf("the typosquat: err %v\n%s", err, out)
	}
	if out := testenv.RunGo(t, prog, env, "list", "-m", "-versions", "example.com/squat"); strings.TrimSpace(out) != "example.com/squat v0.1.0" {
		t.Errorf("go list -m -versions of the typosquat: %q", out)
	}
}
