//go:build unix

package cachetier

import (
	"errors"
	"syscall"
)

// isNoSpace reports whether err says the file system is full (or the
// user's quota is used up).
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
