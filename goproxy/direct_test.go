package goproxy

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

type gitFixture struct {
	git                 *testenv.GitServer
	hello, old, private *testenv.Repo
}

// newGitFixture makes repositories covering what direct must resolve:
// tags, a branch, a major-version subdirectory, a module without go.mod
// tagged v3 (+incompatible), and a repository behind basic auth.
func newGitFixture(t *testing.T) *gitFixture {
	g := testenv.NewGitServer(t)
	f := &gitFixture{git: g}

	f.hello = g.NewRepo(t, "hello")
	mod := f.hello.Path
	f.hello.Commit(map[string]string{"go.mod": "module " + mod + "\n\ngo 1.21\n", "hello.go": "package hello\n\nconst V = 1\n"}, "v1.0.0")
	f.hello.Git("tag", "v1.0.0")
	f.hello.Commit(map[string]string{"hello.go": "package hello\n\nconst V = 11\n"}, "v1.1.0")
	f.hello.Git("tag", "v1.1.0")
	f.hello.Commit(map[string]string{"v2/go.mod": "module " + mod + "/v2\n\ngo 1.21\n", "v2/hello.go": "package hello\n\nconst V = 2\n"}, "v2")
	f.hello.Git("tag", "v2.0.0")
	f.hello.Git("checkout", "-q", "-b", "feature", "v1.1.0")
	f.hello.Commit(map[string]string{"feature.go": "package hello\n\nconst Feature = true\n"}, "feature")
	f.hello.Git("checkout", "-q", "main")
	f.hello.Push()

	f.old = g.NewRepo(t, "old")
	f.old.Commit(map[string]string{"old.go": "package old\n"}, "no go.mod")
	f.old.Git("tag", "v3.0.0")
	f.old.Push()

	f.private = g.NewRepo(t, "private/secret")
	f.private.Commit(map[string]string{"go.mod": "module " + f.private.Path + "\n\ngo 1.21\n", "s.go": "package secret\n"}, "secret")
	f.private.Git("tag", "v1.0.0")
	f.private.Push()
	return f
}

func TestDirect(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	f := newGitFixture(t)
	up := testenv.NewUpstream(t, modA) // the public proxy
	tmp := t.TempDir()
	e := newEnv(t, up, options{
		upstream: up.URL + ",direct",
		private:  testenv.GitHost,
		direct:   DirectOptions{GitConfig: f.git.GitConfig, Netrc: f.git.Netrc(), Workers: 2}, sandboxDir: tmp,
	})
	hello := f.hello.Path

	info := func(p string) string {
		t.Helper()
		_, body := e.get(p, 200)
		var v struct{ Version string }
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("%s: %q", p, body)
		}
		return v.Version
	}
	if v := info(hello + "/@v/v1.0.0.info"); v != "v1.0.0" {
		t.Errorf("tagged info: %s", v)
	}
	_, mod := e.get(hello+"/@v/v1.0.0.mod", 200)
	if !strings.HasPrefix(string(mod), "module "+hello+"\n") {
		t.Errorf("go.mod %q", mod)
	}
	_, z := e.get(hello+"/@v/v1.1.0.zip", 200)
	zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
	if err != nil || len(zr.File) != 2 || zr.File[0].Name != hello+"@v1.1.0/go.mod" && zr.File[1].Name != hello+"@v1.1.0/go.mod" {
		t.Errorf("zip: %v %v", err, zr)
	}
	if _, list := e.get(hello+"/@v/list", 200); string(list) != "v1.0.0\nv1.1.0\n" {
		t.Errorf("list %q", list)
	}
	if v := info(hello + "/@latest"); v != "v1.1.0" {
		t.Errorf("@latest: %s", v)
	}
	pseudo := info(hello + "/@v/feature.info")
	if !strings.HasPrefix(pseudo, "v1.1.1-0.") {
		t.Errorf("branch resolves to %s; want a v1.1.1-0.* pseudo-version", pseudo)
	}
	e.get(hello+"/@v/"+pseudo+".mod", 200)
	e.get(hello+"/@v/"+pseudo+".zip", 200)
	if _, m := e.get(hello+"/v2/@v/v2.0.0.mod", 200); !strings.HasPrefix(string(m), "module "+hello+"/v2\n") {
		t.Errorf("v2 go.mod %q", m)
	}
	if v := info(f.old.Path + "/@v/v3.0.0+incompatible.info"); v != "v3.0.0+incompatible" {
		t.Errorf("+incompatible: %s", v)
	}
	if _, m := e.get(f.old.Path+"/@v/v3.0.0+incompatible.mod", 200); string(m) != "module "+f.old.Path+"\n" {
		t.Errorf("+incompatible go.mod %q", m)
	}
	e.get(f.old.Path+"/@v/v3.0.0+incompatible.zip", 200)
	_, body := e.get(hello+"/@v/v1.9.9.info", 404)
	if !strings.Contains(string(body), "v1.9.9") || strings.Count(string(body), "\n") != 1 {
		t.Errorf("unknown tag: %q", body)
	}
	// Credentials from the netrc reach the private repository.
	e.get(f.private.Path+"/@v/v1.0.0.zip", 200)

	// The public proxy never heard of any private module.
	for _, p := range up.Paths() {
		if strings.Contains(p, testenv.GitHost) {
			t.Errorf("public upstream saw private path %s", p)
		}
	}
	// Every sandbox is gone.
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("temp dirs left: %v", entries)
	}
}

// upstream "<proxy>,direct": the proxy answers 404 for a module only
// version control has, and direct serves it.
func TestDirectAfterProxyNotFound(t *testing.T) {
	t.Parallel()
	f := newGitFixture(t)
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{upstream: up.URL + ",direct", direct: DirectOptions{GitConfig: f.git.GitConfig}})
	e.get(path(modA, "zip"), 200)
	_, mod := e.get(f.hello.Path+"/@v/v1.1.0.mod", 200)
	if !strings.HasPrefix(string(mod), "module "+f.hello.Path) {
		t.Errorf("go.mod %q", mod)
	}
	if n := up.Requests(f.hello.Path + "/@v/v1.1.0.mod"); n != 1 {
		t.Errorf("the proxy was asked %d times; want 1 (then direct)", n)
	}
	if n := len(f.git.Paths()); n == 0 {
		t.Error("the git server was never asked")
	}
	// Both say no: the answer is a 404.
	e.get(testenv.GitHost+"/nowhere.git/@v/v1.0.0.info", 404)
}

func TestDirectAuthFailureAndTimeout(t *testing.T) {
	t.Parallel()
	f := newGitFixture(t)
	tmp := t.TempDir()
	e := newEnv(t, nil, options{upstream: "direct", direct: DirectOptions{GitConfig: f.git.GitConfig}, sandboxDir: tmp})
	resp, body := e.do("GET", f.private.Path+"/@v/v1.0.0.info")
	if resp.StatusCode != 404 || !strings.Contains(string(body), "authentication") {
		t.Errorf("no credentials: %d %q; want 404 saying authentication", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "127.0.0.1") || strings.Contains(string(body), f.git.Password) {
		t.Errorf("error body leaks the repository URL or credentials: %q", body)
	}

	slow := newEnv(t, nil, options{upstream: "direct", direct: DirectOptions{GitConfig: f.git.GitConfig, Timeout: 10 * time.Millisecond}, sandboxDir: tmp})
	resp, body = slow.do("GET", f.hello.Path+"/@v/v1.0.0.zip")
	if resp.StatusCode != 504 {
		t.Errorf("timed-out fetch: %d %q; want 504", resp.StatusCode, body)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		out, _ := exec.Command("find", tmp).CombinedOutput()
		t.Errorf("temp dirs left after a killed go command: %v\n%s", entries, out)
	}
}

func TestGoCommandThroughDirect(t *testing.T) {
	t.Parallel()
	f := newGitFixture(t)
	e := newEnv(t, nil, options{upstream: "direct", direct: DirectOptions{GitConfig: f.git.GitConfig}})
	env := testenv.GoEnv(t, e.srv.URL)
	out := testenv.RunGo(t, t.TempDir(), env, "mod", "download", "-json", f.hello.Path+"@v1.1.0", f.hello.Path+"/v2@v2.0.0")
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("go mod download: %s", out)
	}
}

func TestPrivateNeverReachesChecksumDB(t *testing.T) {
	t.Parallel()
	f := newGitFixture(t)
	db := testenv.NewSumDB(t, sumdbName, modA)
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{
		upstream: up.URL,
		private:  testenv.GitHost,
		direct:   DirectOptions{GitConfig: f.git.GitConfig},
		sumdb:    db,
	})
	e.get(path(modA, "zip"), 200) // public: verified
	before := db.Requests()
	for _, p := range []string{"/@v/list", "/@latest", "/@v/v1.0.0.info", "/@v/v1.0.0.mod", "/@v/v1.0.0.zip"} {
		e.get(f.hello.Path+p, 200)
	}
	e.get("sumdb/"+sumdbName+"/lookup/"+f.hello.Path+"@v1.0.0", 404)
	if n := db.Requests() - before; n != 0 {
		t.Errorf("checksum database asked %d times about private modules", n)
	}
	for _, p := range up.Paths() {
		if strings.Contains(p, testenv.GitHost) {
			t.Errorf("public upstream saw private path %s", p)
		}
	}
}

// A host that accepts the connection and never answers is given up after
// the stall timeout, not after the whole fetch's timeout.
func TestDirectStallTimeout(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	f := newGitFixture(t)
	hole := testenv.NewBlackhole(t)
	f.git.Rewrite(t, "stall.piraeus.test", hole.URL)
	e := newEnv(t, nil, options{upstream: "direct", timeout: 10 * time.Minute,
		direct: DirectOptions{GitConfig: f.git.GitConfig, StallTimeout: time.Second, Timeout: 10 * time.Minute}})
	done := make(chan int, 1)
	go func() {
		resp, _ := e.do("GET", "stall.piraeus.test/x.git/@v/v1.0.0.info")
		done <- resp.StatusCode
	}()
	select {
	case status := <-done:
		if status != 504 && status != 404 {
			t.Errorf("stalled fetch: %d; want 504 (or 404 after every protocol failed)", status)
		}
	case <-time.After(2 * time.Minute): // a bound, far above the 1 s stall timeout
		t.Fatal("the stalled fetch was not given up at the stall timeout")
	}
}
