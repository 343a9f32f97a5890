package testenv

import (
	"fmt"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// GitHost is the made-up host of fixture module paths
// (git.piraeus.test/<repo>.git/...), rewritten to the loopback git server
// by the git config in GitServer.GitConfig.
const GitHost = "git.piraeus.test"

// GitServer is `git http-backend` behind net/http/cgi on loopback, serving
// bare repositories that tests create. Paths under /private/ require
// basic auth with User and Password.
type GitServer struct {
	URL       string
	Root      string
	GitConfig string // a git config with url.<server>.insteadOf https://git.piraeus.test/

	User, Password string

	mu       sync.Mutex
	paths    []string
	withAuth []string // paths of requests that carried credentials
}

// NewGitServer starts a git server; it fails the test with how to install
// git when git or git-http-backend is missing.
func NewGitServer(t testing.TB) *GitServer {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Fatal("git is needed by this test: install it with `apt-get install git` (Debian) — .ci/run does this")
	}
	out, err := exec.Command(gitBin, "--exec-path").Output()
	if err != nil {
		t.Fatalf("git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("git-http-backend not found at %s: install git's full package (`apt-get install git`)", backend)
	}
	g := &GitServer{Root: t.TempDir(), User: "piraeus-bot", Password: "s3cret-token"}
	cgiHandler := &cgi.Handler{
		Path: backend,
		Env:  []string{"GIT_PROJECT_ROOT=" + g.Root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.paths = append(g.paths, r.URL.Path)
		if r.Header.Get("Authorization") != "" {
			g.withAuth = append(g.withAuth, r.URL.Path)
		}
		g.mu.Unlock()
		if strings.HasPrefix(r.URL.Path, "/private/") {
			if u, p, ok := r.BasicAuth(); !ok || u != g.User || p != g.Password {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "authentication required", http.StatusUnauthorized)
				return
			}
		}
		cgiHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.URL = srv.URL
	g.GitConfig = filepath.Join(t.TempDir(), "gitconfig")
	config := "[url \"" + srv.URL + "/\"]\n\tinsteadOf = https://" + GitHost + "/\n"
	if err := os.WriteFile(g.GitConfig, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return g
}

// Netrc is a netrc granting access to the server's private repositories.
func (g *GitServer) Netrc() string {
	return "machine 127.0.0.1 login " + g.User + " password " + g.Password + "\n"
}

// Paths lists the request paths the server saw.
func (g *GitServer) Paths() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.paths...)
}

// PathsWithCredentials lists the request paths that carried credentials.
func (g *GitServer) PathsWithCredentials() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.withAuth...)
}

// Rewrite adds a url.insteadOf rule to GitConfig: module paths under the
// made-up host reach base (e.g. a Blackhole) instead.
func (g *GitServer) Rewrite(t testing.TB, host, base string) {
	t.Helper()
	f, err := os.OpenFile(g.GitConfig, os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = fmt.Fprintf(f, "[url \"%s/\"]\n\tinsteadOf = https://%s/\n", strings.TrimSuffix(base, "/"), host)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Blackhole accepts connections and never answers, as a host that hangs
// does.
type Blackhole struct {
	URL string // http://127.0.0.1:<port>

	l        net.Listener
	accepted chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	conns    []net.Conn
	closed   bool
}

// NewBlackhole starts a Blackhole; it is closed when the test ends.
func NewBlackhole(t testing.TB) *Blackhole {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Blackhole{URL: "http://" + l.Addr().String(), l: l, accepted: make(chan struct{}, 1024), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			if b.closed {
				c.Close()
			} else {
				b.conns = append(b.conns, c) // held open, never read or answered
			}
			b.mu.Unlock()
			select {
			case b.accepted <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(b.Close)
	return b
}

// Accepted receives once per accepted connection.
func (b *Blackhole) Accepted() <-chan struct{} { return b.accepted }

// Close stops accepting and drops every connection held.
func (b *Blackhole) Close() {
	b.l.Close()
	<-b.done
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, c := range b.conns {
		c.Close()
	}
	b.conns = nil
}

// Repo is a work tree whose pushes go to a bare repository on the server.
type Repo struct {
	t    testing.TB
	Dir  string
	Path string // module path prefix: git.piraeus.test/<name>.git
}

// NewRepo creates the bare repository <name> on the server and a work tree.
func (g *GitServer) NewRepo(t testing.TB, name string) *Repo {
	t.Helper()
	bare := filepath.Join(g.Root, name)
	if err := os.MkdirAll(filepath.Dir(bare), 0o755); err != nil {
		t.Fatal(err)
	}
	runGit(t, "", "init", "-q", "--bare", "-b", "main", bare)
	runGit(t, bare, "config", "http.receivepack", "true")
	r := &Repo{t: t, Dir: t.TempDir(), Path: GitHost + "/" + name + ".git"}
	runGit(t, r.Dir, "init", "-q", "-b", "main")
	runGit(t, r.Dir, "remote", "add", "origin", bare)
	return r
}

// Commit writes files (path -> content) and commits them.
func (r *Repo) Commit(files map[string]string, msg string) {
	r.t.Helper()
	for p, content := range files {
		full := filepath.Join(r.Dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	runGit(r.t, r.Dir, "add", "-A")
	runGit(r.t, r.Dir, "commit", "-q", "-m", msg)
}

// Git runs a git command in the work tree.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return runGit(r.t, r.Dir, args...)
}

// Push pushes all branches and tags.
func (r *Repo) Push() {
	r.t.Helper()
	runGit(r.t, r.Dir, "push", "-q", "--all", "origin")
	runGit(r.t, r.Dir, "push", "-q", "--tags", "origin")
}

func runGit(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL="+os.DevNull,
		"GIT_AUTHOR_NAME=Piraeus Test", "GIT_AUTHOR_EMAIL=test@piraeus.test",
		"GIT_COMMITTER_NAME=Piraeus Test", "GIT_COMMITTER_EMAIL=test@piraeus.test")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
