//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package fslock

import (
	"os"
	"syscall"
)

// TryLock takes an exclusive advisory lock on f without waiting. The
// kernel drops it when the process dies, however it dies, so a temp file
// whose lock can be taken was left behind by a dead process.
func TryLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// Orphaned reports whether no live process holds the temp file at p.
func Orphaned(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	return TryLock(f) == nil
}
