//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package cachetier

import (
	"os"
	"syscall"
)

// lockFile takes an exclusive advisory lock on f without waiting. The
// kernel drops it when the process dies, however it dies, so a temp file
// whose lock can be taken was left behind by a dead process.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// orphaned reports whether no live process holds the temp file at p.
func orphaned(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	return lockFile(f) == nil
}
