//go:build windows

package cachetier

import (
	"errors"
	"syscall"
)

// Windows' codes for a full disk: ERROR_DISK_FULL and
// ERROR_HANDLE_DISK_FULL.
const (
	errorDiskFull       = syscall.Errno(112)
	errorHandleDiskFull = syscall.Errno(39)
)

// isNoSpace reports whether err says the disk is full.
func isNoSpace(err error) bool {
	return errors.Is(err, errorDiskFull) || errors.Is(err, errorHandleDiskFull)
}
