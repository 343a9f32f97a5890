package cachetier

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/piraeus-go/piraeus/internal/fslock"
)

// The lock of a disk tier's directory: one process keeps a disk tier in a
// directory at a time. Two would each count and evict the files as their
// own (after a purge by one, the other reported a negative object count),
// so a server takes the lock before it opens the tier, and a second one
// is refused with the holder's name. The operating system drops the lock
// when its holder dies, however it dies.
const (
	dirLockFile   = "v2-lock"
	dirHolderFile = "v2-holder"
)

// ErrDirInUse is returned by LockDir when another process holds the
// directory.
var ErrDirInUse = errors.New("in use by another process")

// LockDir takes the lock of the disk tier directory root (made if need
// be) for this process, and returns the function that lets go of it.
func LockDir(root string) (unlock func(), err error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(root, dirLockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	if err := fslock.TryLock(f); err != nil {
		f.Close()
		holder, _ := os.ReadFile(filepath.Join(root, dirHolderFile))
		who := strings.TrimSpace(string(holder))
		if who == "" {
			who = "a process that has not said which"
		}
		return nil, fmt.Errorf("disk tier: the directory %s is %w (%s): one process keeps a disk tier in a directory; give each process a directory of its own, and let them share a bucket or Redis", root, ErrDirInUse, who)
	}
	host, _ := os.Hostname()
	holder := filepath.Join(root, dirHolderFile)
	os.WriteFile(holder, fmt.Appendf(nil, "pid %d on %s, since %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339)), 0o644)
	return func() {
		os.Remove(holder)
		f.Close()
	}, nil
}
