package caddymodule

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/piraeus-go/piraeus/cachetier"
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
	if os.Getenv("PIRAEUS_TEST_CADDY") == "1" {
		runCaddyChild() // a Caddy process, for TestKilledAtRandom
	}
	if dir := os.Getenv("PIRAEUS_TEST_HOLD_DIR"); dir != "" {
		holdDir(dir) // a second process, for TestSecondProcessOnOneDisk
	}
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

// holdDir takes the lock of a disk tier directory as another Caddy would,
// says so on stdout, and holds it until stdin closes or the process is
// killed.
func holdDir(dir string) {
	unlock, err := cachetier.LockDir(dir)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("held")
	io.Copy(io.Discard, os.Stdin)
	unlock()
	os.Exit(0)
}
