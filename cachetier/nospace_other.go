//go:build !unix && !windows

package cachetier

// isNoSpace reports whether err says the disk is full: this system's
// errors are not known here, so the probe of Check alone tells.
func isNoSpace(error) bool { return false }
