package caddymodule

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

var (
	hello = testenv.Module{Path: "example.com/hello", Version: "v1.0.0", Files: map[string]string{
		"hello.go": "package hello\n\nfunc Greet() string { return \"hello from piraeus\" }\n",
	}}
	hello11 = testenv.Module{Path: "example.com/hello", Version: "v1.1.0", Files: map[string]string{
		"hello.go": "package hello\n\nfunc Greet() string { return \"hello again\" }\n",
	}}
	thing = testenv.Module{Path: "github.com/Azure/Go-Thing", Version: "v0.3.0", Files: map[string]string{
		"thing.go": "package thing\n\nconst Name = \"Thing\"\n",
	}}
)

// startCaddy loads a site block serving goproxy on a loopback port
// through Caddy's test harness and returns the site's base URL.
func startCaddy(t *testing.T, goproxyBlock string) string {
	t.Helper()
	return testcaddy.Site(t, testenv.FreePort(t), goproxyBlock)
}

func TestGoCommandThroughCaddy(t *testing.T) {
	up := testenv.NewUpstream(t, hello, hello11, thing)
	disk := t.TempDir()
	base := startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tcache {\n\t\t\tmemory 32MiB\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, up.VerifiedBy(t).VKey, disk))

	prog := t.TempDir()
	writeFile(t, filepath.Join(prog, "go.mod"), "module example.com/prog\n\ngo 1.21\n\nrequire (\n\texample.com/hello v1.0.0\n\tgithub.com/Azure/Go-Thing v0.3.0\n)\n")
	writeFile(t, filepath.Join(prog, "main.go"), `package main

import (
	"fmt"

	thing "github.com/Azure/Go-Thing"
	"example.com/hello"
)

func main() { fmt.Println(hello.Greet(), thing.Name) }
`)
	env := testenv.GoEnv(t, base)
	out := testenv.RunGo(t, prog, env, "mod", "download", "-json", "example.com/hello@v1.0.0", "github.com/Azure/Go-Thing@v0.3.0")
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("go mod download reported an error:\n%s", out)
	}
	testenv.RunGo(t, prog, env, "build", "-mod=mod", "-o", filepath.Join(prog, "prog"), ".")
	run, err := exec.Command(filepath.Join(prog, "prog")).Output()
	if err != nil || string(run) != "hello from piraeus Thing\n" {
		t.Fatalf("built program printed %q (%v)", run, err)
	}
	// list, @latest and a branch query go through the proxy as well.
	if out := testenv.RunGo(t, prog, env, "list", "-m", "-versions", "example.com/hello"); !strings.Contains(out, "v1.0.0 v1.1.0") {
		t.Errorf("go list -m -versions: %q", out)
	}
	if out := testenv.RunGo(t, prog, env, "list", "-m", "example.com/hello@latest"); strings.TrimSpace(out) != "example.com/hello v1.1.0" {
		t.Errorf("go list -m @latest: %q", out)
	}
	if out := testenv.RunGo(t, prog, env, "mod", "download", "-json", "example.com/hello@main"); !strings.Contains(out, `"Version": "v1.1.0"`) {
		t.Errorf("go mod download @main: %s", out)
	}
	for _, kind := range []string{"info", "mod", "zip"} {
		if n := up.Requests(testenv.EscapedPath(thing.Path, thing.Version, kind)); n != 1 {
			t.Errorf("upstream asked %d times for the %s of %s; want 1", n, kind, thing.Path)
		}
	}

	// A second client with an empty module cache is served from the cache
	// alone: upstream gets no request for the immutable artifacts.
	before := up.Total()
	env2 := testenv.GoEnv(t, base)
	testenv.RunGo(t, prog, env2, "mod", "download", "example.com/hello@v1.0.0", "github.com/Azure/Go-Thing@v0.3.0")
	if n := up.Total() - before; n != 0 {
		t.Errorf("second download asked upstream %d times: %v", n, up.Paths()[before:])
	}

	// An unknown version is a clean error that the go command shows.
	out, err = testenv.TryGo(t, prog, env2, "mod", "download", "example.com/hello@v1.9.9")
	if err == nil || !strings.Contains(out, "unknown revision v1.9.9") {
		t.Errorf("downloading an unknown version: err %v, output %q", err, out)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestGoCommandVerifiedThroughCaddy(t *testing.T) {
	db := testenv.NewSumDB(t, "sum.piraeus.test", hello, thing)
	up := testenv.NewUpstream(t, hello, thing)
	evil := testenv.Module{Path: thing.Path, Version: thing.Version, Files: map[string]string{"thing.go": "package thing\n\nconst Name = \"Evil\"\n"}}
	up.Override(testenv.EscapedPath(thing.Path, thing.Version, "zip"), func(w http.ResponseWriter, r *http.Request) { w.Write(evil.Zip(t)) })
	base := startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s %s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, db.VKey, db.URL, t.TempDir()))
	env := append(testenv.GoEnv(t, base), "GOSUMDB="+db.VKey)
	testenv.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/hello@v1.0.0")
	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "github.com/Azure/Go-Thing@v0.3.0")
	if err == nil || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("tampered zip: err %v, output %q; want the proxy's checksum mismatch", err, out)
	}
}
