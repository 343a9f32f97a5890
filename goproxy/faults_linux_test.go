package goproxy

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"

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
	// Recovery: the file system is replaced by the real, roomy directory.
	if err := syscall.Unmount(root, 0); err != nil {
		t.Fatal(err)
	}
	before := up.Requests(path(big, "zip"))
	e.get(path(big, "zip"), 200)
	e.get(path(big, "zip"), 200)
	if n := up.Requests(path(big, "zip")) - before; n != 1 {
		t.Errorf("after recovery the zip was fetched %d times; want 1 (then cached)", n)
	}
}

func TestDiskReadOnly(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	mountTmpfs(t, root, "1m")
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{diskRoot: root})
	e.get(path(modA, "info"), 200)
	if err := syscall.Mount("", root, "", syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mod", "zip", "mod"} {
		e.get(path(modA, k), 200)
	}
	e.get(path(modA, "info"), 200) // still readable
	if n := up.Requests(path(modA, "mod")); n != 2 {
		t.Errorf("mod fetched %d times on a read-only disk; want 2 (never cached)", n)
	}
	if err := syscall.Mount("", root, "", syscall.MS_REMOUNT, ""); err != nil {
		t.Fatal(err)
	}
	e.get(path(modA, "mod"), 200)
	e.get(path(modA, "mod"), 200)
	if n := up.Requests(path(modA, "mod")); n != 3 {
		t.Errorf("mod fetched %d times after the disk came back; want 3", n)
	}
}
