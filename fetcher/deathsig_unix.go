//go:build unix && !linux

package fetcher

import "syscall"

// setDeathSignal does nothing where the kernel has no parent-death signal:
// a go command outlives a server killed by SIGKILL until its own timeouts
// (git's stall limits) end it; its sandbox is swept at the next start.
func setDeathSignal(*syscall.SysProcAttr) {}
