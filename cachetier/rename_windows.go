//go:build windows

package cachetier

import (
	"os"
)

// renameOpen moves the spool's file to p. Windows renames no file that is
// open without delete sharing, so the file is closed, renamed and opened
// again; if the rename fails, the spool's file is opened again instead.
func renameOpen(f *os.File, p string) (*os.File, error) {
	name := f.Name()
	f.Close()
	if err := os.Rename(name, p); err != nil {
		if g, oerr := os.OpenFile(name, os.O_RDWR, 0); oerr == nil {
			*f = *g
		}
		return nil, err
	}
	return os.Open(p)
}
