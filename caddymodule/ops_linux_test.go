package caddymodule

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A mirror whose disk is full is not ready.
func TestReadinessFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs to fill the disk needs root; CI runs this as root")
	}
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=2m"); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("mounting a tmpfs was refused (%v): this sandbox lacks CAP_SYS_ADMIN", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })
	up := testenv.NewUpstream(t, hello)
	base := startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\thealth\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, up.VerifiedBy(t).VKey, disk))
	// Fill what is left.
	f, err := os.Create(filepath.Join(disk, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	for range 1024 {
		if _, err := f.Write(make([]byte, 64<<10)); err != nil {
			break
		}
	}
	f.Close()
	status, body, _ := testenv.Get(base + "/readyz")
	if status != 503 || !strings.Contains(string(body), "no space left on device") {
		t.Errorf("/readyz with a full disk: %d %q; want 503 no space left", status, body)
	}
	t.Logf("full disk: /readyz %d %q", status, strings.TrimSpace(string(body)))
	os.Remove(filepath.Join(disk, "filler"))
	if status, body, _ := testenv.Get(base + "/readyz"); status != 200 {
		t.Errorf("/readyz with room again: %d %q", status, body)
	}
}
