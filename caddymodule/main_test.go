package caddymodule

import (
	"fmt"
	"os"
	"testing"
)

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
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
