package fetcher

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/fslock"
)

// Opening a DirectFetcher removes the sandboxes (which hold a netrc) that
// a dead process left, and only those.
func TestSandboxesSweptAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mk := func(name string, lock bool, age time.Duration) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "home"), 0o700); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(p, "home", ".netrc"), []byte("machine x login y password z\n"), 0o600)
		if lock {
			os.WriteFile(filepath.Join(p, sandboxLock), nil, 0o600)
		}
		old := time.Now().Add(-age)
		os.Chtimes(p, old, old)
		return p
	}
	orphan := mk("sandbox-private-1", true, 0)             // its owner died: unlocked
	unfinished := mk("sandbox-public-2", false, time.Hour) // died before locking
	fresh := mk("sandbox-public-3", false, 0)              // being made right now
	held := mk("sandbox-private-4", true, 0)
	other := mk("not-a-sandbox", false, time.Hour)
	f, err := os.OpenFile(filepath.Join(held, sandboxLock), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := fslock.TryLock(f); err != nil {
		t.Fatal(err)
	}
	// flock locks belong to an open file, so the sweep's own open of the
	// held lock file finds it taken, as another process's would.
	if _, err := NewDirectFetcher(DirectConfig{SandboxDir: dir}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{orphan: false, unfinished: false, fresh: true, held: true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists: %v; want %v", filepath.Base(p), err == nil, want)
		}
	}
}
