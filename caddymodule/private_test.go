package caddymodule

import (
	"fmt"
	"strings"
	"testing"

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
