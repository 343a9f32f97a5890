//go:build darwin || freebsd || netbsd

package cachetier

import (
	"io/fs"
	"syscall"
)

// fileStat returns what the platform records of a file beyond fs.FileInfo:
// the access time (eviction order), the status-change time and the
// device and inode (the identity of checked content).
func fileStat(fi fs.FileInfo) sysStat {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return sysStat{atime: fi.ModTime().UnixNano()}
	}
	return sysStat{
		atime: st.Atimespec.Nano(),
		ctime: st.Ctimespec.Nano(),
		dev:   uint64(st.Dev),
		ino:   uint64(st.Ino),
	}
}
