package goproxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// mountTmpfs mounts a small tmpfs on dir; disk-full and read-only faults
// are real file systems, which needs root (CI runs as root).
func mountTmpfs(t *testing.T, dir string, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs to fill or freeze the disk tier needs root; CI runs these as root")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("mounting a tmpfs was refused (%v): this sandbox lacks CAP_SYS_ADMIN", err)
		}
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
}

func TestDiskFull(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mountTmpfs(t, root, "96k")
	big := testenv.Module{Path: "example.com/big", Version: "v1.0.0"}
	up := testenv.NewUpstream(t, modA)
	up.AddBigZip(big, testenv.WriteBigZip(t, t.TempDir(), big, 256<<10))
	e := newEnv(t, up, options{diskRoot: root})
	want, _ := os.ReadFile(testenv.WriteBigZip(t, t.TempDir(), big, 256<<10))
	// Larger than the whole file system: served, not cached.
	for range 2 {
		_, body := e.get(path(big, "zip"), 200)
		if !bytes.Equal(body, want) {
			t.Fatal("wrong bytes with a full disk")
		}
	}
	assertNotCached(t, e, path(big, "zip"))
	// Small artifacts still fit and are cached.
	e.get(path(modA, "mod"), 200)
	// Recovery: the file system grows, as a cleaned disk would.
	if err := syscall.Mount("", root, "", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatal(err)
	}
	before := up.Requests(path(big, "zip"))
	e.get(path(big, "zip"), 200)
	e.get(path(big, "zip"), 200)
	if n := up.Requests(path(big, "zip")) - before; n != 1 {
		t.Errorf("after recovery the zip was fetched %d times; want 1 (then cached)", n)
	}
}

// The object files and spools on a file system that turns read-only:
// what is there is still served, what is fetched is served uncached, and
// stored again once the file system is writable. (The small store's
// database stays open for writing, which a read-only remount refuses:
// its write failures are those of a full disk, TestDiskFull.)
func TestDiskReadOnly(t *testing.T) {
	t.Parallel()
	// The tier's v2/ and tmp/ on one tmpfs (a rename between them stays
	// on one device), its small store beside them on the test's disk.
	root := t.TempDir()
	fsys := filepath.Join(root, "fs")
	if err := os.Mkdir(fsys, 0o755); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, fsys, "1m")
	for _, dir := range []string{"v2", "tmp"} {
		if err := os.Mkdir(filepath.Join(fsys, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(fsys, dir), filepath.Join(root, dir)); err != nil {
			t.Fatal(err)
		}
	}
	big := testenv.Module{Path: "example.com/big", Version: "v1.0.0"}
	up := testenv.NewUpstream(t)
	up.AddBigZip(big, testenv.WriteBigZip(t, t.TempDir(), big, 64<<10))
	e := newEnv(t, up, options{diskRoot: root})
	zip := path(big, "zip")
	e.get(path(big, "info"), 200)
	remount := func(flags uintptr) {
		if err := syscall.Mount("", fsys, "", syscall.MS_REMOUNT|flags, ""); err != nil {
			t.Fatal(err)
		}
	}
	remount(syscall.MS_RDONLY)
	e.get(zip, 200)
	e.get(zip, 200)
	e.get(path(big, "info"), 200) // still readable
	if n := up.Requests(zip); n != 2 {
		t.Errorf("zip fetched %d times on a read-only disk; want 2 (never cached)", n)
	}
	remount(0)
	e.get(zip, 200)
	e.get(zip, 200)
	if n := up.Requests(zip); n != 3 {
		t.Errorf("zip fetched %d times after the disk came back; want 3", n)
	}
}

// A disk tier that fills up during a cold burst: every client still gets
// the right bytes (or a 5xx with a one-line reason), nothing partial is
// kept, the count agrees with the files, readiness says the disk is full,
// and once there is room again the mirror stores again and is ready, by
// itself.
func TestDiskFullDuringBurst(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mountTmpfs(t, root, "2m")
	up := testenv.NewUpstream(t)
	up.SetDelay(20 * time.Millisecond)
	want := map[string][]byte{}
	for i := range 24 {
		m := testenv.Module{Path: fmt.Sprintf("example.com/full/m%02d", i), Version: "v1.0.0"}
		zipFile := testenv.WriteBigZip(t, t.TempDir(), m, int64(128<<10+i*8<<10))
		up.AddBigZip(m, zipFile)
		data, err := os.ReadFile(zipFile)
		if err != nil {
			t.Fatal(err)
		}
		want[path(m, "zip")], want[path(m, "mod")], want[path(m, "info")] = data, m.Mod(), m.Info()
	}
	// One zip larger than the whole disk, asked for alone after each
	// burst: the last write before a readiness check is one that cannot
	// fit (in the burst, a zip that found no room may be followed by a
	// larger one stored once failed spools freed their space).
	big := testenv.Module{Path: "example.com/full/big", Version: "v1.0.0"}
	bigZip := testenv.WriteBigZip(t, t.TempDir(), big, 3<<20)
	up.AddBigZip(big, bigZip)
	bigData, err := os.ReadFile(bigZip)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, up, options{diskRoot: root})
	burst := func() (ok, failed int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		for p, body := range want {
			for range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, got := e.do("GET", p)
					mu.Lock()
					defer mu.Unlock()
					switch {
					case resp.StatusCode == 200 && bytes.Equal(got, body):
						ok++
					case resp.StatusCode == 502 || resp.StatusCode == 503:
						if lines := strings.Count(strings.TrimSpace(string(got)), "\n"); lines != 0 || len(got) == 0 {
							t.Errorf("%s: %d without a one-line reason: %q", p, resp.StatusCode, got)
						}
						failed++
					default:
						t.Errorf("%s: %d, %d bytes (want %d)", p, resp.StatusCode, len(got), len(body))
					}
				}()
			}
		}
		wg.Wait()
		return ok, failed
	}
	ok, failed := burst()
	t.Logf("cold burst on a 2 MiB disk for %d KiB of zips: %d answers right, %d 5xx", totalKiB(want), ok, failed)
	// What the disk holds is whole and right, and counted.
	stored := 0
	for p, body := range want {
		obj, err := e.disk.Get(t.Context(), e.key(p))
		if err != nil {
			continue
		}
		got, err := io.ReadAll(obj.Reader())
		obj.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Errorf("%s: the disk holds %d bytes that are not the artifact (%v)", p, len(got), err)
		}
		stored++
	}
	if stored == len(want) {
		t.Fatal("everything fit: the disk never filled")
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "tmp")); len(entries) != 0 {
		t.Errorf("temp files left on the full disk: %d", len(entries))
	}
	checkDiskUsage(t, e, root)
	if _, got := e.get(path(big, "zip"), 200); !bytes.Equal(got, bigData) {
		t.Fatal("the zip larger than the disk, served uncached, differs")
	}
	err = e.proxy.Ready(t.Context())
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("readiness on a full disk: %v; want not ready, no space left", err)
	}
	t.Logf("%d of %d artifacts stored; /readyz: %v", stored, len(want), err)

	// Room again (the tmpfs grows, as a cleaned disk would): the mirror
	// stores what it missed, and is ready, without a restart.
	if err := syscall.Mount("", root, "", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatal(err)
	}
	if ok, failed := burst(); failed != 0 || ok != 3*len(want) {
		t.Errorf("after room was made: %d right, %d failed", ok, failed)
	}
	for p := range want {
		if held, _ := e.disk.Holds(t.Context(), e.key(p)); !held {
			t.Errorf("%s not stored once there was room", p)
		}
	}
	if _, got := e.get(path(big, "zip"), 200); !bytes.Equal(got, bigData) {
		t.Fatal("the zip larger than the disk was, once stored, differs")
	}
	if err := e.proxy.Ready(t.Context()); err != nil {
		t.Errorf("not ready once there was room: %v", err)
	}
	checkDiskUsage(t, e, root)
}

func totalKiB(m map[string][]byte) int {
	n := 0
	for _, b := range m {
		n += len(b)
	}
	return n >> 10
}

// checkDiskUsage checks that the disk tier's count is the files on disk.
func checkDiskUsage(t *testing.T, e *env, root string) {
	t.Helper()
	e.disk.Flush()
	objects, bytes := testenv.DiskTierFiles(t, root)
	n, b := e.disk.Usage()
	if n != objects || b != bytes {
		t.Errorf("disk tier counts %d objects, %d bytes; on disk %d files, %d bytes", n, b, objects, bytes)
	}
}
