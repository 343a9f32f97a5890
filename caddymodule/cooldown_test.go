package caddymodule

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A 7-day cooldown with the real go command: a version published an hour
// ago is left out of the list and @latest, so go get @latest takes the
// newest old enough, and asking for it is refused with the time it becomes
// available; the hidden newest version's retractions still apply (its
// go.mod retracts an older one, which @latest must not pick); a request
// under /cooldown/25d/ holds back more, one under /cooldown/1h/ no less.
func TestCooldown(t *testing.T) {
	now := time.Now()
	lib := func(v string, age time.Duration, gomod string) testenv.Module {
		return testenv.Module{Path: "example.com/lib", Version: v, Time: now.Add(-age), GoMod: gomod,
			Files: map[string]string{"lib.go": "package lib\n"}}
	}
	day := 24 * time.Hour
	up := testenv.NewUpstream(t,
		lib("v1.0.0", 30*day, ""), lib("v1.1.0", 20*day, ""), lib("v1.2.0", 10*day, ""),
		lib("v1.3.0", time.Hour, "module example.com/lib\n\ngo 1.21\n\nretract v1.2.0 // loses data\n"))
	db := up.VerifiedBy(t)
	base := startCaddy(t, fmt.Sprintf(`goproxy %s {
		sumdb %s
		cache {
			disk %s
		}
		cooldown 7d example.com
	}`, up.URL, db.VKey, t.TempDir()))
	env := append(testenv.GoEnv(t, base), "GOSUMDB="+db.VKey)

	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/lib@v1.3.0")
	until := now.Add(-time.Hour).Add(7 * day).UTC().Format(time.RFC3339)[:13] // to the hour
	if err == nil || !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, "newer than the mirror's cooldown of 7d: available from "+until) {
		t.Fatalf("a version an hour old: err %v\n%s", err, out)
	}
	t.Logf("go mod download example.com/lib@v1.3.0:\n%s", out)
	for _, kind := range []string{"mod", "zip"} { // a client with the .info cached asks for these alone
		if code, _, _ := testenv.Get(base + "/" + testenv.EscapedPath("example.com/lib", "v1.3.0", kind)); code != 403 {
			t.Errorf("the young version's %s: %d, want 403", kind, code)
		}
	}

	prog := newProg(t, map[string]string{"go.mod": "module example.com/prog\n\ngo 1.21\n"})
	if out, err := testenv.TryGo(t, prog, env, "get", "example.com/lib@v1.3.0"); err == nil || !strings.Contains(out, "newer than the mirror's cooldown") {
		t.Fatalf("go get of the young version: err %v\n%s", err, out)
	} else {
		t.Logf("go get example.com/lib@v1.3.0:\n%s", out)
	}
	testenv.RunGo(t, prog, env, "get", "example.com/lib@latest")
	if gomod, _ := os.ReadFile(filepath.Join(prog, "go.mod")); !strings.Contains(string(gomod), "example.com/lib v1.1.0") {
		t.Errorf("go get @latest under the cooldown (v1.3.0 too young, v1.2.0 retracted by it):\n%s", gomod)
	}
	list := func(prefix string) string {
		_, body, err := testenv.Get(base + prefix + "/example.com/lib/@v/list")
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(string(body)), " ")
	}
	if got := list(""); got != "v1.0.0 v1.1.0" {
		t.Errorf("list: %q", got)
	}
	_, body, _ := testenv.Get(base + "/example.com/lib/@latest")
	var info struct{ Version string }
	if json.Unmarshal(body, &info); info.Version != "v1.1.0" {
		t.Errorf("@latest: %s", body)
	}
	if got := list("/cooldown/25d"); got != "v1.0.0" {
		t.Errorf("list under /cooldown/25d: %q", got)
	}
	if got := list("/cooldown/1h"); got != "v1.0.0 v1.1.0" {
		t.Errorf("list under /cooldown/1h (no shorter than configured): %q", got)
	}
	testenv.RunGo(t, t.TempDir(), append(env, "GOPROXY="+base+"/cooldown/15d"), "mod", "download", "example.com/lib@v1.1.0")
	if code, _, _ := testenv.Get(base + "/cooldown/bogus/example.com/lib/@v/list"); code != 400 {
		t.Errorf("a bad cooldown prefix: %d, want 400", code)
	}
}
