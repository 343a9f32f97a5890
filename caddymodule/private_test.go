package caddymodule

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A company mirror: public modules from the upstream proxy, private ones
// from a git server that needs a token, given as a placeholder.
func TestPrivateModulesThroughCaddy(t *testing.T) {
	g := testenv.NewGitServer(t)
	repo := g.NewRepo(t, "private/lib")
	repo.Commit(map[string]string{"go.mod": "module " + repo.Path + "\n\ngo 1.21\n", "lib.go": "package lib\n\nconst Secret = 42\n"}, "lib")
	repo.Git("tag", "v1.0.0")
	repo.Push()
	up := testenv.NewUpstream(t, hello)
	t.Setenv("PIRAEUS_TEST_GIT_TOKEN", g.Password)

	block := fmt.Sprintf(`goproxy %s {
		sumdb %s
		private %s
		direct {
			workers 2
			git_config %s
			credentials 127.0.0.1 %s {env.PIRAEUS_TEST_GIT_TOKEN}
		}
		cache {
			disk %s
		}
	}`, up.URL, up.VerifiedBy(t).VKey, testenv.GitHost, g.GitConfig, g.User, t.TempDir())
	if adapted := adapt(t, ":80 {\n\t"+block+"\n}\n"); strings.Contains(adapted, g.Password) {
		t.Fatalf("the token is in the adapted config: %s", adapted)
	}
	base := startCaddy(t, block)
	env := testenv.GoEnv(t, base)
	out := testenv.RunGo(t, t.TempDir(), env, "mod", "download", "-json", repo.Path+"@v1.0.0", "example.com/hello@v1.0.0")
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("go mod download: %s", out)
	}
	for _, p := range up.Paths() {
		if strings.Contains(p, testenv.GitHost) {
			t.Errorf("public upstream saw private path %s", p)
		}
	}
	if up.Requests(testenv.EscapedPath(hello.Path, hello.Version, "zip")) != 1 {
		t.Error("public module not fetched from the upstream")
	}
}

// privateFixture is a git server with a private repository behind basic
// auth, and a public upstream verified by its own checksum database.
type privateFixture struct {
	git  *testenv.GitServer
	repo *testenv.Repo // git.piraeus.test/private/lib.git, v1.0.0
	up   *testenv.Upstream
	db   *testenv.SumDB
}

func newPrivateFixture(t *testing.T) *privateFixture {
	g := testenv.NewGitServer(t)
	repo := g.NewRepo(t, "private/lib")
	repo.Commit(map[string]string{"go.mod": "module " + repo.Path + "\n\ngo 1.21\n", "lib.go": "package lib\n"}, "lib")
	repo.Git("tag", "v1.0.0")
	repo.Push()
	up := testenv.NewUpstream(t, hello)
	t.Setenv("PIRAEUS_TEST_GIT_TOKEN", g.Password)
	return &privateFixture{git: g, repo: repo, up: up, db: up.VerifiedBy(t)}
}

// leaks reports the requests that named anything under the git host on the
// public upstream or the checksum database, in any letter case.
func (f *privateFixture) leaks() []string {
	var leaked []string
	for _, p := range append(f.up.Paths(), f.db.Paths()...) {
		if strings.Contains(strings.ToLower(p), testenv.GitHost) {
			leaked = append(leaked, p)
		}
	}
	return leaked
}

// A private module's name never reaches a public upstream or a checksum
// database: not in another letter case (code hosts resolve paths without
// regard to it), not as a prefix of the pattern (which the go command
// probes), for no endpoint, warm included.
func TestPrivateNamesNeverLeave(t *testing.T) {
	f := newPrivateFixture(t)
	base := startCaddy(t, fmt.Sprintf(`goproxy %s,direct {
		sumdb %s
		private %s
		direct {
			git_config %s
			credentials 127.0.0.1 %s {env.PIRAEUS_TEST_GIT_TOKEN}
		}
		cache {
			disk %s
		}
	}`, f.up.URL, f.db.VKey, f.repo.Path, f.git.GitConfig, f.git.User, t.TempDir()))
	get := func(p string) int {
		resp, err := http.Get(base + "/" + p)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// The exact path works, through direct with the credentials.
	for _, k := range []string{"info", "mod", "zip"} {
		if s := get(testenv.EscapedPath(f.repo.Path, "v1.0.0", k)); s != 200 {
			t.Errorf("private %s: %d", k, s)
		}
	}
	variants := []string{
		f.repo.Path,                           // as configured
		"git.piraeus.test/Private/LIB.git",    // another letter case
		"git.piraeus.test/private",            // prefixes the go command probes
		"git.piraeus.test/Private",            // ... in any case
		"git.piraeus.test/private/lib.git/v2", // below the pattern
	}
	for _, mod := range variants {
		for _, k := range []string{"list", "latest"} {
			get(testenv.EscapedPath(mod, "", k))
		}
		esc := strings.TrimSuffix(testenv.EscapedPath(mod, "", "list"), "/@v/list")
		get(esc + "/@v/main.info")
		for _, k := range []string{"info", "mod", "zip"} {
			get(testenv.EscapedPath(mod, "v1.0.0", k))
		}
		if s := get("sumdb/" + f.db.Name + "/lookup/" + esc + "@v1.0.0"); s != 404 && s != 400 {
			t.Errorf("checksum database lookup of %s through the mirror: %d; want 404 (or 400 for an invalid one)", mod, s)
		}
	}
	admin := fmt.Sprintf("http://localhost:%d/goproxy/warm", testcaddy.AdminPort())
	goMod := "module example.com/app\n\ngo 1.21\n\nrequire (\n\tgit.piraeus.test/Private/LIB.git v1.0.1\n\tgit.piraeus.test/private v0.1.0\n)\n"
	resp, err := http.Post(admin, "text/plain", strings.NewReader(goMod))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if leaked := f.leaks(); len(leaked) > 0 {
		t.Errorf("private names reached the public upstream or the checksum database:\n%s", strings.Join(leaked, "\n"))
	}
	// Public modules still go to both.
	if s := get(testenv.EscapedPath(hello.Path, hello.Version, "zip")); s != 200 || len(f.db.Paths()) == 0 {
		t.Errorf("public module: %d, checksum database asked %d times", s, len(f.db.Paths()))
	}
}

// The direct of the public chain has no credentials: a public module in a
// repository that needs the private modules' token is not found, and the
// git server never sees the token for it.
func TestPublicDirectGetsNoCredentials(t *testing.T) {
	f := newPrivateFixture(t)
	other := f.git.NewRepo(t, "private/other") // same auth realm, not a private module
	other.Commit(map[string]string{"go.mod": "module " + other.Path + "\n\ngo 1.21\n", "o.go": "package other\n"}, "other")
	other.Git("tag", "v1.0.0")
	other.Push()
	base := startCaddy(t, fmt.Sprintf(`goproxy %s,direct {
		sumdb %s
		private %s
		verify off %s
		direct {
			git_config %s
			credentials 127.0.0.1 %s {env.PIRAEUS_TEST_GIT_TOKEN}
		}
		cache {
			disk %s
		}
	}`, f.up.URL, f.db.VKey, f.repo.Path, other.Path, f.git.GitConfig, f.git.User, t.TempDir()))
	resp, err := http.Get(base + "/" + testenv.EscapedPath(other.Path, "v1.0.0", "info"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), "authentication") {
		t.Errorf("public module in a protected repository: %d %q; want 404 (needs authentication)", resp.StatusCode, body)
	}
	testenv.MustGet(t, base+"/"+testenv.EscapedPath(f.repo.Path, "v1.0.0", "info"))
	var private, public int
	for _, p := range f.git.PathsWithCredentials() {
		switch {
		case strings.Contains(p, "/private/other"):
			public++
		case strings.Contains(p, "/private/lib"):
			private++
		}
	}
	if public != 0 || private == 0 {
		t.Errorf("requests with credentials: %d for the public module (want 0), %d for the private one (want some)", public, private)
	}
}

// A host that never answers holds at most per_host workers of the public
// pool: another public host, and private modules (their own pool), are
// fetched meanwhile.
func TestDirectStalledHostDoesNotStarve(t *testing.T) {
	f := newPrivateFixture(t)
	hole := testenv.NewBlackhole(t)
	f.git.Rewrite(t, "stall.piraeus.test", hole.URL)
	hello := f.git.NewRepo(t, "hello")
	hello.Commit(map[string]string{"go.mod": "module " + hello.Path + "\n\ngo 1.21\n", "h.go": "package hello\n"}, "hello")
	hello.Git("tag", "v1.0.0")
	hello.Push()
	base := startCaddy(t, fmt.Sprintf(`goproxy direct {
		sumdb off
		private %s
		direct {
			workers 2
			per_host 1
			git_config %s
			credentials 127.0.0.1 %s {env.PIRAEUS_TEST_GIT_TOKEN}
		}
		cache {
			disk %s
		}
	}`, f.repo.Path, f.git.GitConfig, f.git.User, t.TempDir()))
	var stalled sync.WaitGroup
	var finished atomic.Int32
	for i := range 4 {
		stalled.Add(1)
		go func() {
			defer stalled.Done()
			resp, err := http.Get(base + "/" + testenv.EscapedPath(fmt.Sprintf("stall.piraeus.test/r%d.git", i), "v1.0.0", "info"))
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					t.Errorf("a fetch from the stalled host succeeded")
				}
			}
			finished.Add(1)
		}()
	}
	<-hole.Accepted() // a worker is stuck on the host
	// Bounded: without separate pools and a per-host limit these would
	// wait for the stalled fetches, which never end by themselves here.
	client := &http.Client{Timeout: time.Minute}
	for _, p := range []string{testenv.EscapedPath(hello.Path, "v1.0.0", "info"), testenv.EscapedPath(f.repo.Path, "v1.0.0", "mod")} {
		resp, err := client.Get(base + "/" + p)
		if err != nil {
			t.Fatalf("%s while a host stalls: %v", p, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s while a host stalls: %d", p, resp.StatusCode)
		}
	}
	if n := finished.Load(); n != 0 {
		t.Errorf("%d stalled fetches ended before the others were served; the test proves nothing", n)
	}
	hole.Close() // the host fails: the stalled fetches end
	stalled.Wait()
}
