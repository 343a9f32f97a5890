package goproxy

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A private module fetched from the test environment's git server whose
// tag is moved after the first fetch: once the cached version is purged,
// the moved tag's content is refused with a SECURITY ERROR, on this edge
// and on a second edge that never saw the version (the record of first
// sight is in the fleet's Redis), until an operator accepts it.
func TestMovedTagRefused(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	g := testenv.NewGitServer(t)
	repo := g.NewRepo(t, "tagged")
	mod := repo.Path
	repo.Commit(map[string]string{"go.mod": "module " + mod + "\n\ngo 1.21\n", "t.go": "package tagged\n\nconst V = 1\n"}, "v1")
	repo.Git("tag", "v1.0.0")
	repo.Push()

	r := testenv.StartRedis(t)
	o := options{upstream: "direct", private: testenv.GitHost, redis: r,
		direct: DirectOptions{GitConfig: g.GitConfig, Netrc: g.Netrc(), Workers: 2}, sandboxDir: t.TempDir()}
	e := newEnv(t, nil, o)
	_, zip1 := e.get(mod+"/@v/v1.0.0.zip", 200)
	e.get(mod+"/@v/v1.0.0.mod", 200)

	// The tag moves to other code.
	repo.Commit(map[string]string{"t.go": "package tagged\n\nconst V = 666 // backdoor\n"}, "moved")
	repo.Git("tag", "-f", "v1.0.0")
	repo.Git("push", "-q", "-f", "origin", "v1.0.0")

	if err := e.proxy.PurgeVersion(context.Background(), mod, "v1.0.0"); err != nil {
		t.Fatal(err)
	}
	resp, body := e.do("GET", mod+"/@v/v1.0.0.zip")
	if resp.StatusCode != 502 || !strings.Contains(string(body), "SECURITY ERROR") || !strings.Contains(string(body), "changed since first seen") {
		t.Fatalf("the moved tag's zip: %d %q; want 502 SECURITY ERROR", resp.StatusCode, body)
	}
	t.Logf("moved tag: %d %s", resp.StatusCode, body)
	// Its go.mod did not change: still served.
	e.get(mod+"/@v/v1.0.0.mod", 200)

	// A second edge of the fleet, with a disk of its own.
	o2 := o
	o2.diskRoot, o2.sandboxDir = t.TempDir(), t.TempDir()
	e2 := newEnv(t, nil, o2)
	if resp, body := e2.do("GET", mod+"/@v/v1.0.0.zip"); resp.StatusCode != 502 || !strings.Contains(string(body), "SECURITY ERROR") {
		t.Fatalf("the moved tag on a second edge: %d %q; want 502", resp.StatusCode, body)
	}
	if n := e.proxy.VerifyFailures(); n == 0 {
		t.Error("the refusal was not counted")
	}

	// The operator accepts the new content: served from then on.
	kinds, err := e.proxy.AcceptChanged(context.Background(), mod, "v1.0.0")
	if err != nil || strings.Join(kinds, ",") != "zip" {
		t.Fatalf("accept: %v %v", kinds, err)
	}
	_, zip2 := e.get(mod+"/@v/v1.0.0.zip", 200)
	if string(zip2) == string(zip1) {
		t.Fatal("the accepted content is the old one")
	}
	if _, err := e.proxy.AcceptChanged(context.Background(), mod, "v1.0.0"); err == nil {
		t.Error("accepting with nothing refused: no error")
	}
}

// A module fetched from version control whose tag points at a commit
// dated years ago is as young as the mirror's first sight of it: the
// cooldown holds it back, since an origin can date a commit as it likes.
func TestCooldownDirectUsesFirstSight(t *testing.T) {
	testenv.Slow(t)
	g := testenv.NewGitServer(t)
	repo := g.NewRepo(t, "backdated")
	t.Setenv("GIT_COMMITTER_DATE", "2019-03-04T05:06:07Z")
	t.Setenv("GIT_AUTHOR_DATE", "2019-03-04T05:06:07Z")
	repo.Commit(map[string]string{"go.mod": "module " + repo.Path + "\n\ngo 1.21\n", "b.go": "package backdated\n"}, "old-looking")
	repo.Git("tag", "v1.0.0")
	repo.Push()
	e := newEnv(t, nil, options{upstream: "direct", private: testenv.GitHost,
		direct: DirectOptions{GitConfig: g.GitConfig, Netrc: g.Netrc(), Workers: 2}, sandboxDir: t.TempDir()})
	e.proxy.cfg.cooldown, _ = compileCooldown([]CooldownRule{{Age: 7 * 24 * time.Hour}})

	resp, body := e.do("GET", repo.Path+"/@v/v1.0.0.info")
	if resp.StatusCode != 403 || !strings.Contains(string(body), "newer than the mirror's cooldown of 7d") {
		t.Fatalf("a backdated commit fetched now: %d %q; want 403", resp.StatusCode, body)
	}
	pub, err := e.proxy.published(context.Background(), repo.Path, "v1.0.0")
	if err != nil || time.Since(pub) > time.Minute {
		t.Errorf("published %v (%v); want the first sight, moments ago", pub, err)
	}
}
