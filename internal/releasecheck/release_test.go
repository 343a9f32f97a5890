package releasecheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

const modulePath = "github.com/piraeus-go/piraeus"

// TestXcaddyBuild builds Caddy the way users install the plugin, with
// xcaddy: once from a tagged module version served by a module proxy, and
// once from this checkout (--with <module>=<dir>). Each binary must list
// the plugin's modules, the tagged one with its version.
func TestXcaddyBuild(t *testing.T) {
	releaseOnly(t)
	t.Parallel()
	xcaddy := lookTool(t, "xcaddy", "github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5")
	root := moduleRoot(t)
	caddyVersion := requiredVersion(t, root, "github.com/caddyserver/caddy/v2")
	gomodcache := goEnv(t, "GOMODCACHE")

	// The go commands that xcaddy runs use a module proxy on loopback: it
	// serves this checkout as a tagged version (for the tagged build only),
	// answers a plain 404 for the module otherwise (as the public proxy
	// does for an unpublished module, so that the go command takes the
	// local replacement), and serves every other module from the module
	// cache, or else from the network's proxy. GOSUMDB is off because the
	// tagged version is made here; the modules from the cache were
	// verified when they were downloaded.
	const tag = "v0.99.0"
	proxyDir := t.TempDir()
	publish(t, root, proxyDir, tag)
	cacheDir := filepath.Join(gomodcache, "cache", "download")
	// Both builds share one fresh module cache (the second extracts
	// nothing again) and the machine's build cache.
	modcache := t.TempDir()

	tests := []struct {
		name, with, version string
		served              bool // the tagged version is on the proxy
	}{
		{"tagged", modulePath + "@" + tag, tag, true},
		{"checkout", modulePath + "=" + root, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "caddy"+exeSuffix())
			cmd := exec.Command(xcaddy, "build", caddyVersion, "--with", tt.with, "--output", out)
			cmd.Dir = t.TempDir()
			dirs := []string{cacheDir}
			if tt.served {
				dirs = []string{proxyDir, cacheDir}
			}
			proxy := newModuleProxy(t, dirs, networkProxy(t))
			cmd.Env = xcaddyEnv(t, proxy.URL, modcache)
			start := time.Now()
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("xcaddy build --with %s: %v\n%s", tt.with, err, b)
			}
			t.Logf("xcaddy build --with %s: %v", tt.with, time.Since(start).Round(time.Second))

			mods := run(t, out, "list-modules", "--versions")
			for _, id := range []string{"http.handlers.goproxy", "admin.api.goproxy"} {
				line := findLine(mods, id)
				if line == "" {
					t.Fatalf("list-modules does not list %s:\n%s", id, mods)
				}
				if tt.version != "" && !strings.Contains(line, tt.version) {
					t.Errorf("list-modules --versions shows %q; want version %s", line, tt.version)
				}
				t.Logf("%s", line)
			}
			// The directive and the command are registered too.
			cf := filepath.Join(t.TempDir(), "Caddyfile")
			os.WriteFile(cf, []byte(":8080 {\n\tgoproxy http://127.0.0.1:1\n}\n"), 0o644)
			adapted := run(t, out, "adapt", "--config", cf, "--adapter", "caddyfile")
			if !strings.Contains(adapted, `"handler":"goproxy"`) {
				t.Errorf("the goproxy directive did not adapt: %s", adapted)
			}
			if help := run(t, out, "goproxy", "--help"); !strings.Contains(help, "warm") {
				t.Errorf("caddy goproxy --help: %s", help)
			}
		})
	}
}

// xcaddyEnv is the environment for xcaddy and the go commands it runs: a
// module cache that the test removes, the given module proxy, and the
// machine's build cache (xcaddy builds with -trimpath, whose cache
// entries do not depend on where the module cache is).
func xcaddyEnv(t *testing.T, goproxy, modcache string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "GO") && k != "GOCACHE" && k != "GOROOT" || strings.HasPrefix(k, "XCADDY_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"GOPROXY="+goproxy,
		"GOSUMDB=off",
		"GOMODCACHE="+modcache,
		"GOPATH="+t.TempDir(),
		"GOFLAGS=-modcacherw",
		"GOTOOLCHAIN=local",
		"GOWORK=off",
		"GOCACHE="+goEnv(t, "GOCACHE"),
		"XCADDY_SETCAP=0",
		"XCADDY_SUDO=0",
	)
}

// publish writes this checkout as version tag of the module into a
// file-system module proxy at dir: the files git tracks (and new ones it
// does not ignore), zipped by x/mod/zip as a tagged release would be.
func publish(t *testing.T, root, dir, tag string) {
	t.Helper()
	out, err := exec.Command("git", "-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files (git is needed to list the checkout's files): %v", err)
	}
	var files []modzip.File
	for _, name := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		if _, err := os.Lstat(filepath.Join(root, name)); err == nil { // deleted but still tracked: skip
			files = append(files, checkoutFile{root: root, name: name})
		}
	}
	mv := module.Version{Path: modulePath, Version: tag}
	base := filepath.Join(dir, filepath.FromSlash(modulePath), "@v")
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	var zipBuf bytes.Buffer
	if err := modzip.Create(&zipBuf, mv, files); err != nil {
		t.Fatalf("zipping the checkout as %s: %v", mv, err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := json.Marshal(map[string]any{"Version": tag, "Time": time.Now().UTC().Truncate(time.Second)})
	for name, data := range map[string][]byte{
		"list": []byte(tag + "\n"), tag + ".info": info, tag + ".mod": gomod, tag + ".zip": zipBuf.Bytes(),
	} {
		if err := os.WriteFile(filepath.Join(base, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// newModuleProxy serves the GOPROXY protocol from file-system proxies
// (dirs, in order, as GOMODCACHE/cache/download is laid out), passing what
// none of them holds to the network proxy. This module's own path is only
// what dirs hold: anything else about it is a plain 404.
func newModuleProxy(t *testing.T, dirs []string, network *url.URL) *httptest.Server {
	var forward http.Handler = http.NotFoundHandler()
	if network != nil {
		forward = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(network)
			r.Out.Host = network.Host
		}}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rel := strings.TrimPrefix(path.Clean(r.URL.Path), "/")
		for _, dir := range dirs {
			p := filepath.Join(dir, filepath.FromSlash(rel))
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				http.ServeFile(w, r, p)
				return
			}
		}
		if strings.HasPrefix(rel, modulePath+"/@") {
			http.Error(w, "not found: "+rel, http.StatusNotFound)
			return
		}
		forward.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// networkProxy is the first proxy URL of the machine's GOPROXY, or nil.
func networkProxy(t *testing.T) *url.URL {
	for _, entry := range strings.FieldsFunc(goEnv(t, "GOPROXY"), func(r rune) bool { return r == ',' || r == '|' }) {
		if u, err := url.Parse(entry); err == nil && (u.Scheme == "https" || u.Scheme == "http") {
			return u
		}
	}
	return nil
}

type checkoutFile struct{ root, name string }

func (f checkoutFile) Path() string { return f.name }
func (f checkoutFile) Lstat() (os.FileInfo, error) {
	return os.Lstat(filepath.Join(f.root, filepath.FromSlash(f.name)))
}
func (f checkoutFile) Open() (io.ReadCloser, error) {
	return os.Open(filepath.Join(f.root, filepath.FromSlash(f.name)))
}

// The platforms Caddy's users run a mirror on.
var targets = []struct{ goos, goarch string }{
	{"linux", "amd64"}, {"linux", "arm64"},
	{"darwin", "amd64"}, {"darwin", "arm64"},
	{"windows", "amd64"}, {"windows", "arm64"},
	{"freebsd", "amd64"}, {"freebsd", "arm64"},
}

// TestPlatforms type-checks and vets every package of the module, with
// its tests, for every platform: what `go vet ./...` proves, at a
// fraction of its cost. go vet compiles every dependency (Caddy's
// thousand packages, some three minutes a target on two cores); this
// check loads the same packages from source, as the go command selects
// their files for the target, type-checks them with go/types and runs go
// vet's own analyzers on them, about ten seconds a target. What a
// compiler could still refuse beyond the type checker (assembly, link
// names) is in Caddy's dependencies, not in the plugin; the linked build
// of the native platform is TestXcaddyBuild's.
func TestPlatforms(t *testing.T) {
	releaseOnly(t)
	t.Parallel()
	root := moduleRoot(t)
	check := buildPlatformCheck(t, root)
	for _, tg := range targets {
		t.Run(tg.goos+"_"+tg.goarch, func(t *testing.T) {
			start := time.Now()
			problems, summary, err := runPlatformCheck(t, check, root, tg.goos, tg.goarch)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Error(p)
			}
			var n int
			if _, err := fmt.Sscanf(summary, "%d packages checked", &n); err != nil || n < 20 {
				t.Errorf("platformcheck said %q: too few packages for %s/%s", summary, tg.goos, tg.goarch)
			}
			t.Logf("%s in %v", summary, time.Since(start).Round(time.Second))
		})
	}
}

// The check finds what a platform's own files break: a type error in a
// file for Windows alone, a vet finding in one for FreeBSD on arm64, and
// nothing on Linux, where neither file is built.
func TestPlatformsCheckFails(t *testing.T) {
	releaseOnly(t)
	t.Parallel()
	check := buildPlatformCheck(t, moduleRoot(t))
	dir := t.TempDir()
	for name, src := range map[string]string{
		"go.mod":               "module example.com/p\n\ngo 1.26\n",
		"p.go":                 "package p\n\nfunc Size() int64 { return size() }\n",
		"size_other.go":        "//go:build !windows\n\npackage p\n\nfunc size() int64 { return 1 }\n",
		"size_windows.go":      "package p\n\nfunc size() int64 { return \"one\" }\n",
		"log_freebsd_arm64.go": "package p\n\nimport \"fmt\"\n\nfunc Log() string { return fmt.Sprintf(\"%d\", \"x\") }\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ goos, goarch, want string }{
		{"linux", "amd64", ""},
		{"windows", "amd64", "size_windows.go:3"},
		{"freebsd", "arm64", "log_freebsd_arm64.go:5"},
		{"freebsd", "amd64", ""},
	} {
		problems, _, err := runPlatformCheck(t, check, dir, tt.goos, tt.goarch)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(problems, "\n")
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("%s/%s: problems %q; want one at %q", tt.goos, tt.goarch, got, tt.want)
		}
	}
}

// buildPlatformCheck builds the platformcheck command, without the race
// detector whatever this test binary was built with: type-checking
// a thousand packages under it takes five times as long.
func buildPlatformCheck(t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "platformcheck"+exeSuffix())
	cmd := exec.Command(testenv.GoBin(t), "build", "-o", bin, "./internal/releasecheck/platformcheck")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building platformcheck: %v\n%s", err, out)
	}
	return bin
}

// runPlatformCheck checks the packages of the module in dir for a
// platform: the problems found, and the summary line.
func runPlatformCheck(t *testing.T, check, dir, goos, goarch string) (problems []string, summary string, err error) {
	t.Helper()
	cmd := exec.Command(check, "-C", dir, "-goos", goos, "-goarch", goarch, "./...")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); err != nil && code != 1 {
		return nil, "", fmt.Errorf("platformcheck for %s/%s: %v\n%s", goos, goarch, err, stderr.Bytes())
	}
	if s := strings.TrimSpace(stdout.String()); s != "" {
		problems = strings.Split(s, "\n")
	}
	if err != nil && len(problems) == 0 {
		return nil, "", fmt.Errorf("platformcheck for %s/%s failed and named no problem: %s", goos, goarch, stderr.Bytes())
	}
	return problems, strings.TrimSpace(stderr.String()), nil
}

// releaseOnly skips a release check unless it was asked for.
func releaseOnly(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("a release check: not with -short")
	}
	if os.Getenv("PIRAEUS_RELEASE_CHECKS") != "1" {
		t.Skip("a release check (minutes of compiling on a cold build cache): set PIRAEUS_RELEASE_CHECKS=1 to run it; make test does")
	}
}

func lookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{filepath.Join(moduleRoot(t), "bin", "tools"), os.Getenv("GOBIN"), filepath.Join(goEnv(t, "GOPATH"), "bin")} {
		if p := filepath.Join(dir, name+exeSuffix()); dir != "" && fileExists(p) {
			return p
		}
	}
	t.Fatalf("%s is needed by this test: install it with `go install %s` (make test does this)", name, pkg)
	return ""
}

// moduleRoot is the root of this module's checkout, two levels above
// this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if !fileExists(filepath.Join(root, "go.mod")) {
		t.Fatalf("%s is not the module root", root)
	}
	return root
}

func requiredVersion(t *testing.T, root, mod string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(f.Require, func(r *modfile.Require) bool { return r.Mod.Path == mod })
	if i < 0 {
		t.Fatalf("go.mod does not require %s", mod)
	}
	return f.Require[i].Mod.Version
}

func goEnv(t *testing.T, key string) string {
	t.Helper()
	out, err := exec.Command(testenv.GoBin(t), "env", key).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", key, err)
	}
	return strings.TrimSpace(string(out))
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

func findLine(text, prefix string) string {
	for _, line := range strings.Split(text, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == prefix {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

func exeSuffix() string {
	if runtime.GOOS == "windows" {
		return ".exe"
	}
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
