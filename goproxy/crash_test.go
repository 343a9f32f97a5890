package goproxy

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// startChild starts a proxy process (this test binary in child mode).
func startChild(t *testing.T, disk, upstream string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PIRAEUS_TEST_CHILD=1", "PIRAEUS_TEST_DISK="+disk,
		"PIRAEUS_TEST_UPSTREAM="+upstream, "PIRAEUS_TEST_ADDR_FILE="+addrFile)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 500 { // up to 10 s
		if addr, err := os.ReadFile(addrFile); err == nil {
			return cmd, "http://" + string(addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("child proxy did not start")
	return nil, ""
}

// A proxy killed with SIGKILL in the middle of streaming a zip leaves no
// partial artifact; the next process sweeps the dead spool and serves the
// zip correctly.
func TestKillDuringFetch(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	// Larger than a spool holds in memory: half of it is on disk.
	big := testenv.Module{Path: "example.com/big", Version: "v1.0.0"}
	zipFile := testenv.WriteBigZip(t, t.TempDir(), big, 256<<10)
	zip, err := os.ReadFile(zipFile)
	if err != nil {
		t.Fatal(err)
	}
	up := testenv.NewUpstream(t)
	up.AddBigZip(big, zipFile)
	halfSent := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	up.Override(path(big, "zip"), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(zip)))
		w.Write(zip[:len(zip)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(halfSent) })
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-time.After(10 * time.Second):
		}
		w.Write(zip[len(zip)/2:])
	})
	disk := t.TempDir()
	child, base := startChild(t, disk, up.URL)
	go func() {
		if resp, err := http.Get(base + "/" + path(big, "zip")); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	select {
	case <-halfSent:
	case <-time.After(10 * time.Second):
		t.Fatal("fetch never started")
	}
	// Wait until the child has spooled part of the zip, then kill it.
	for i := 0; i < 500; i++ {
		if spools, _ := os.ReadDir(filepath.Join(disk, "tmp")); len(spools) > 0 {
			if info, err := spools[0].Info(); err == nil && info.Size() > 0 {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	child.Process.Kill() // SIGKILL
	child.Wait()
	close(release)

	filepath.WalkDir(filepath.Join(disk, "v2"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			t.Errorf("artifact on disk after a crash mid-fetch: %s", p)
		}
		return nil
	})
	if spools, _ := os.ReadDir(filepath.Join(disk, "tmp")); len(spools) != 1 {
		t.Fatalf("want the dead process's partial spool in tmp, found %v", spools)
	}

	_, base = startChild(t, disk, up.URL)
	resp, err := http.Get(base + "/" + path(big, "zip"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, zip) {
		t.Fatalf("after restart: %d, %d bytes", resp.StatusCode, len(body))
	}
	if left, _ := os.ReadDir(filepath.Join(disk, "tmp")); len(left) != 0 {
		t.Errorf("the dead process's spool was not swept: %v", left)
	}
}

// Shutting the server down lets a download in flight finish whole.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	up.SetDelay(300 * time.Millisecond)
	e := newEnv(t, up, options{})
	srv := httptest.NewServer(e.proxy)
	got := testenv.GetAsync(srv.URL + "/" + path(modA, "zip"))
	up.WaitTotal(t, 1) // the request is in flight, waiting on upstream
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	if b := <-got; !bytes.Equal(b, modA.Zip(t)) {
		t.Fatalf("download cut by shutdown: %d bytes", len(b))
	}
}
