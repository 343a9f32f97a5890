package testenv

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// VersityGWModule is the S3 server the tests run, at the version .ci/run
// and the Makefile install.
const VersityGWModule = "github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// S3 is a real S3 server (versitygw on its posix backend, in a temp dir)
// on a random loopback port, which a test can stop, pause and resume.
type S3 struct {
	Endpoint  string // http://127.0.0.1:port
	AccessKey string
	SecretKey string
	// Root holds one directory per bucket; the objects are files under it.
	Root string

	t    testing.TB
	bin  string
	addr string
	meta string

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartS3 starts versitygw with one bucket, "piraeus", failing the test
// with how to install it when it is missing.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := findVersityGW()
	if bin == "" {
		t.Fatal("versitygw is needed by this test: install it with `go install " + VersityGWModule + "` (into PATH or $GOPATH/bin) — .ci/run and `make tools` do this")
	}
	dir := t.TempDir()
	s := &S3{
		AccessKey: "piraeus-test", SecretKey: "piraeus-test-secret",
		Root: filepath.Join(dir, "buckets"), meta: filepath.Join(dir, "meta"),
		t: t, bin: bin, addr: "127.0.0.1:" + strconv.Itoa(FreePort(t)),
	}
	s.Endpoint = "http://" + s.addr
	for _, d := range []string{s.Root, s.meta} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.NewBucket("piraeus")
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

func findVersityGW() string { return FindTool("versitygw") }

// FindTool finds a command the tests use: on PATH, in GOBIN, in the
// module's bin/tools (where make tools and .ci/run install them) or in
// GOPATH/bin; "" if none.
func FindTool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	out, err := exec.Command("go", "env", "GOBIN", "GOPATH", "GOMOD").Output()
	if err != nil {
		return ""
	}
	env := strings.Split(string(out), "\n") // GOBIN may be empty
	if len(env) < 3 {
		return ""
	}
	gobin, gopath, gomod := strings.TrimSpace(env[0]), strings.TrimSpace(env[1]), strings.TrimSpace(env[2])
	dirs := []string{gobin}
	if gomod != "" && gomod != os.DevNull {
		dirs = append(dirs, filepath.Join(filepath.Dir(gomod), "bin", "tools")) // make tools, .ci/run
	}
	for _, d := range filepath.SplitList(gopath) {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); d != "" && err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// NewBucket makes an empty bucket.
func (s *S3) NewBucket(name string) {
	s.t.Helper()
	if err := os.Mkdir(filepath.Join(s.Root, name), 0o755); err != nil {
		s.t.Fatal(err)
	}
}

// Start starts the server (again) and waits until it answers.
func (s *S3) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(s.bin, "--port", s.addr, "--access", s.AccessKey, "--secret", s.SecretKey,
		"--quiet", "posix", "--sidecar", s.meta, s.Root)
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("starting versitygw: %v", err)
	}
	s.cmd = cmd
	var err error
	for range 250 { // up to 5 s
		var resp *http.Response
		if resp, err = http.Get(s.Endpoint + "/"); err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("versitygw on %s did not answer: %v", s.addr, err)
}

// Stop kills the server (SIGKILL, as a crash would) and waits for it.
func (s *S3) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}

// Pause stops the server process (SIGSTOP): it accepts connections and
// never answers, as a stalled store does.
func (s *S3) Pause() { s.signal(pauseProcess) }

// Resume lets a paused server go on.
func (s *S3) Resume() { s.signal(resumeProcess) }

func (s *S3) signal(send func(*os.Process) error) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.t.Fatal("versitygw is not running")
	}
	if err := send(s.cmd.Process); err != nil {
		s.t.Fatalf("signalling versitygw: %v", err)
	}
}

// Objects lists the names of the files under a bucket's directory: the
// objects the server holds (multipart uploads in progress live elsewhere).
func (s *S3) Objects(bucket string) []string {
	s.t.Helper()
	var names []string
	root := filepath.Join(s.Root, bucket)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return names
}
