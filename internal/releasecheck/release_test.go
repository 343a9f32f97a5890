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
	"golang.org/x/tools/go/analysis"
	"golang.org/x/tools/go/analysis/checker"
	"golang.org/x/tools/go/analysis/passes/appends"
	"golang.org/x/tools/go/analysis/passes/asmdecl"
	"golang.org/x/tools/go/analysis/passes/assign"
	"golang.org/x/tools/go/analysis/passes/atomic"
	"golang.org/x/tools/go/analysis/passes/bools"
	"golang.org/x/tools/go/analysis/passes/buildtag"
	"golang.org/x/tools/go/analysis/passes/cgocall"
	"golang.org/x/tools/go/analysis/passes/composite"
	"golang.org/x/tools/go/analysis/passes/copylock"
	"golang.org/x/tools/go/analysis/passes/defers"
	"golang.org/x/tools/go/analysis/passes/directive"
	"golang.org/x/tools/go/analysis/passes/errorsas"
	"golang.org/x/tools/go/analysis/passes/framepointer"
	"golang.org/x/tools/go/analysis/passes/hostport"
	"golang.org/x/tools/go/analysis/passes/httpresponse"
	"golang.org/x/tools/go/analysis/passes/ifaceassert"
	"golang.org/x/tools/go/analysis/passes/loopclosure"
	"golang.org/x/tools/go/analysis/passes/lostcancel"
	"golang.org/x/tools/go/analysis/passes/nilfunc"
	"golang.org/x/tools/go/analysis/passes/printf"
	"golang.org/x/tools/go/analysis/passes/shift"
	"golang.org/x/tools/go/analysis/passes/sigchanyzer"
	"golang.org/x/tools/go/analysis/passes/slog"
	"golang.org/x/tools/go/analysis/passes/stdmethods"
	"golang.org/x/tools/go/analysis/passes/stdversion"
	"golang.org/x/tools/go/analysis/passes/stringintconv"
	"golang.org/x/tools/go/analysis/passes/structtag"
	"golang.org/x/tools/go/analysis/passes/testinggoroutine"
	"golang.org/x/tools/go/analysis/passes/tests"
	"golang.org/x/tools/go/analysis/passes/timeformat"
	"golang.org/x/tools/go/analysis/passes/unmarshal"
	"golang.org/x/tools/go/analysis/passes/unreachable"
	"golang.org/x/tools/go/analysis/passes/unsafeptr"
	"golang.org/x/tools/go/analysis/passes/unusedresult"
	"golang.org/x/tools/go/analysis/passes/waitgroup"
	"golang.org/x/tools/go/packages"

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
	for _, tg := range targets {
		t.Run(tg.goos+"_"+tg.goarch, func(t *testing.T) {
			start := time.Now()
			n, problems, err := checkPlatform(root, tg.goos, tg.goarch, "./...")
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range problems {
				t.Error(p)
			}
			if n < 20 {
				t.Errorf("only %d packages loaded for %s/%s", n, tg.goos, tg.goarch)
			}
			t.Logf("%d packages and their tests type-checked and vetted in %v", n, time.Since(start).Round(time.Second))
		})
	}
}

// The check finds what a platform's own files break: a type error in a
// file for Windows alone, a vet finding in one for FreeBSD on arm64, and
// nothing on Linux, where neither file is built.
func TestPlatformsCheckFails(t *testing.T) {
	releaseOnly(t)
	t.Parallel()
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
		_, problems, err := checkPlatform(dir, tt.goos, tt.goarch, "./...")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(problems, "\n")
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("%s/%s: problems %q; want one at %q", tt.goos, tt.goarch, got, tt.want)
		}
	}
}

// checkPlatform loads the packages matching patterns in dir, with their
// tests, for GOOS and GOARCH, type-checks them and everything they import
// from source, and runs the analyzers of go vet on them. It returns the
// number of packages matched and each problem found, with its position.
func checkPlatform(dir, goos, goarch string, patterns ...string) (int, []string, error) {
	cfg := &packages.Config{
		Mode:  packages.LoadAllSyntax,
		Dir:   dir,
		Tests: true,
		Env:   append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=-mod=readonly"),
	}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		return 0, nil, fmt.Errorf("GOOS=%s GOARCH=%s: loading %v: %w", goos, goarch, patterns, err)
	}
	seen := map[string]bool{}
	var problems []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			problems = append(problems, p)
		}
	}
	packages.Visit(pkgs, nil, func(p *packages.Package) {
		for _, e := range p.Errors {
			add(fmt.Sprintf("%s/%s: %s", goos, goarch, e))
		}
	})
	if len(problems) > 0 {
		return len(pkgs), problems, nil // the analyzers need packages that type-check
	}
	graph, err := checker.Analyze(vetAnalyzers, pkgs, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("GOOS=%s GOARCH=%s: vet: %w", goos, goarch, err)
	}
	matched := map[string]bool{}
	for act := range graph.All() {
		if !act.IsRoot {
			continue
		}
		matched[act.Package.PkgPath] = true
		for _, d := range act.Diagnostics {
			add(fmt.Sprintf("%s/%s: %s: %s (vet %s)", goos, goarch, act.Package.Fset.Position(d.Pos), d.Message, act.Analyzer.Name))
		}
	}
	slices.Sort(problems)
	return len(matched), problems, nil
}

// vetAnalyzers are the analyzers go vet runs (cmd/vet's suite).
var vetAnalyzers = []*analysis.Analyzer{
	appends.Analyzer, asmdecl.Analyzer, assign.Analyzer, atomic.Analyzer, bools.Analyzer,
	buildtag.Analyzer, cgocall.Analyzer, composite.Analyzer, copylock.Analyzer, defers.Analyzer,
	directive.Analyzer, errorsas.Analyzer, framepointer.Analyzer, hostport.Analyzer,
	httpresponse.Analyzer, ifaceassert.Analyzer, loopclosure.Analyzer, lostcancel.Analyzer,
	nilfunc.Analyzer, printf.Analyzer, shift.Analyzer, sigchanyzer.Analyzer, slog.Analyzer,
	stdmethods.Analyzer, stdversion.Analyzer, stringintconv.Analyzer, structtag.Analyzer,
	testinggoroutine.Analyzer, tests.Analyzer, timeformat.Analyzer, unmarshal.Analyzer,
	unreachable.Analyzer, unsafeptr.Analyzer, unusedresult.Analyzer, waitgroup.Analyzer,
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
