package goproxy

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/piraeus-go/piraeus/cachetier"
)

func TestMain(m *testing.M) {
	if os.Getenv("PIRAEUS_TEST_CHILD") != "" {
		runChild()
		return
	}
	code := m.Run()
	if code == 0 {
		// Idle keep-alive connections of the shared client are not leaks.
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// runChild is a proxy in its own process, for tests that kill it:
// PIRAEUS_TEST_DISK, PIRAEUS_TEST_UPSTREAM, and the listen address is
// written to PIRAEUS_TEST_ADDR_FILE.
func runChild() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	diskRoot := os.Getenv("PIRAEUS_TEST_DISK")
	disk, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: diskRoot})
	if err != nil {
		fail(err)
	}
	p, err := New(Options{
		Upstream:   os.Getenv("PIRAEUS_TEST_UPSTREAM"),
		SumDBOff:   true,
		Direct:     DirectOptions{GitConfig: os.Getenv("PIRAEUS_TEST_GITCONFIG"), StallTimeout: 2 * time.Second},
		SandboxDir: filepath.Join(diskRoot, "direct"),
		Cache:      cachetier.NewTiered(nil, disk),
	})
	if err != nil {
		fail(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	tmp := os.Getenv("PIRAEUS_TEST_ADDR_FILE") + ".tmp"
	if err := os.WriteFile(tmp, []byte(l.Addr().String()), 0o644); err != nil {
		fail(err)
	}
	os.Rename(tmp, os.Getenv("PIRAEUS_TEST_ADDR_FILE"))
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	fail(srv.Serve(l))
}
