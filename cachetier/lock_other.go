//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package cachetier

import (
	"os"
	"time"
)

// lockFile is a no-op where the platform has no advisory file locks.
func lockFile(*os.File) error { return nil }

// orphaned falls back to age where no lock can tell: a temp file untouched
// for longer than any fetch may take was left behind.
func orphaned(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && time.Since(fi.ModTime()) > 24*time.Hour
}
