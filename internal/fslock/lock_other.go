//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package fslock

import (
	"os"
	"time"
)

// TryLock is a no-op where the platform has no advisory file locks.
func TryLock(*os.File) error { return nil }

// Orphaned falls back to age where no lock can tell: a temp file untouched
// for longer than any fetch may take was left behind.
func Orphaned(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && time.Since(fi.ModTime()) > 24*time.Hour
}
