//go:build !(linux || openbsd || dragonfly || solaris || aix || darwin || freebsd || netbsd || windows)

package cachetier

import "io/fs"

// fileStat falls back to the modification time where the platform's
// stat data is unknown: eviction then orders by write time.
func fileStat(fi fs.FileInfo) sysStat {
	return sysStat{atime: fi.ModTime().UnixNano()}
}
