//go:build windows

package cachetier

import (
	"io/fs"
	"syscall"
)

// fileStat returns what Windows records of a file beyond fs.FileInfo: the
// access time (eviction order; Piraeus sets it itself, so NTFS's lazy
// access-time updates do not matter). Windows has no status-change time
// or inode in its find data; the creation time stands in for the ctime,
// so a file replaced by another is still told apart.
func fileStat(fi fs.FileInfo) sysStat {
	d, ok := fi.Sys().(*syscall.Win32FileAttributeData)
	if !ok {
		return sysStat{atime: fi.ModTime().UnixNano()}
	}
	return sysStat{
		atime: d.LastAccessTime.Nanoseconds(),
		ctime: d.CreationTime.Nanoseconds(),
	}
}
