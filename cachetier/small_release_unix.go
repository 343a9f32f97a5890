//go:build linux || darwin || freebsd

package cachetier

import (
	"unsafe"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// releaseMapped drops the small store's mapped pages from the process's
// resident set. bbolt reads through a shared, read-only map of its file,
// so every page a transaction touched stays counted in the process's RSS
// although the page cache holds it anyway; dropping them
// (MADV_DONTNEED, which for a shared file map only unmaps the pages) keeps
// the RSS near the memory budget, and the next read of a page maps it
// from the page cache again. Within a read transaction the map does not
// move (a remap waits for every reader).
func releaseMapped(db *bolt.DB) {
	db.View(func(tx *bolt.Tx) error {
		info := db.Info()
		size := int(tx.Size())
		if info.Data == 0 || size <= 0 {
			return nil
		}
		// The map is not Go memory: its address, held as a uintptr, read
		// as a pointer.
		base := *(*unsafe.Pointer)(unsafe.Pointer(&info.Data))
		unix.Madvise(unsafe.Slice((*byte)(base), size), unix.MADV_DONTNEED)
		return nil
	})
}
