//go:build !windows

package cachetier

import (
	"os"
)

// renameOpen moves the spool's file to p; the open file stays valid.
func renameOpen(f *os.File, p string) (*os.File, error) {
	if err := os.Rename(f.Name(), p); err != nil {
		return nil, err
	}
	return f, nil
}
