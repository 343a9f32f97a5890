package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// tlsStorage is the storage of every https site the tests serve: Caddy
// keeps the certificates it issued in memory for the process, so that
// sites loaded one after the other must share the internal CA that
// signed them.
var tlsStorage string

// TestMain gives the test binary's Caddy a data directory of its own
// (what Piraeus keeps there, such as the fleet's purge positions, goes to
// a temp dir removed at the end, not the home directory).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "piraeus-caddymodule-data-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Setenv("XDG_DATA_HOME", dir)
	tlsStorage = filepath.Join(dir, "tls")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
