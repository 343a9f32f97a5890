package goproxy

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// sandboxProcesses lists the processes whose working directory is inside
// dir: the go command and the git processes of a direct fetch.
func sandboxProcesses(dir string) []string {
	var pids []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && strings.HasPrefix(cwd, dir+string(filepath.Separator)) {
			if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil && !strings.Contains(string(stat), ") Z ") {
				pids = append(pids, e.Name())
			}
		}
	}
	return pids
}

// A server killed with SIGKILL during a direct fetch takes its go command
// along at once (the kernel's parent-death signal), the go command's git
// ends at its stall timeout, and the next start removes the sandbox with
// its netrc.
func TestDirectChildrenDieWithServer(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	f := newGitFixture(t)
	hole := testenv.NewBlackhole(t)
	f.git.Rewrite(t, "stall.piraeus.test", hole.URL)
	disk := t.TempDir()
	sandboxes := filepath.Join(disk, "direct")
	child, base := startChild(t, disk, "direct", "PIRAEUS_TEST_GITCONFIG="+f.git.GitConfig)
	go func() {
		if resp, err := http.Get(base + "/stall.piraeus.test/x.git/@v/v1.0.0.info"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-hole.Accepted() // git is connected and waiting
	if len(sandboxProcesses(sandboxes)) == 0 {
		t.Fatal("no process runs in the fetch's sandbox")
	}
	child.Process.Kill() // SIGKILL: no cleanup code of the server runs
	child.Wait()
	gone := func(within time.Duration) bool {
		for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if len(sandboxProcesses(sandboxes)) == 0 {
				return true
			}
		}
		return false
	}
	if !gone(30 * time.Second) { // the child's stall timeout is 2 s
		t.Fatalf("processes of the dead server's fetch still run: %v", sandboxProcesses(sandboxes))
	}
	if left, _ := os.ReadDir(sandboxes); len(left) != 1 {
		t.Fatalf("want the dead server's sandbox left behind, found %v", left)
	}
	startChild(t, disk, "off")
	if left, _ := os.ReadDir(sandboxes); len(left) != 0 {
		t.Errorf("the next start did not sweep the dead server's sandbox: %v", left)
	}
}
