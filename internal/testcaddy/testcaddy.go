// Package testcaddy runs Caddy configs in tests through Caddy's own test
// harness (caddytest): the global options every test config needs, one
// admin port per test binary, and loading (or reloading) a config.
package testcaddy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
)

// AdminPort is this test binary's Caddy admin port: caddytest runs one
// Caddy per process, and packages tested in parallel must not share one.
var AdminPort = sync.OnceValue(func() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
})

// Global is the global options block of a test config, with extra
// options (e.g. "storage file_system /tmp/x") added.
func Global(extra ...string) string {
	s := fmt.Sprintf("{\n\tadmin localhost:%d\n\tskip_install_trust\n\tpersist_config off\n", AdminPort())
	for _, o := range extra {
		s += "\t" + o + "\n"
	}
	return s + "}\n"
}

// Load loads a Caddyfile (its global options from Global) into the test
// binary's Caddy; loading again is a config reload.
func Load(t *testing.T, caddyfile string) {
	t.Helper()
	caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: AdminPort()}).InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
}

// Site serves a site block body on http://127.0.0.1:<port>, with nothing
// else in the config, and returns its base URL.
func Site(t *testing.T, port int, body string) string {
	t.Helper()
	Load(t, Global()+fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", port, body))
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// TryLoad loads a Caddyfile into the Caddy that Load started, through its
// admin API, and returns the error Caddy answers, if any. A config that
// fails leaves the running one as it was.
func TryLoad(caddyfile string) error {
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("http://localhost:%d/load", AdminPort()), strings.NewReader(caddyfile))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("load: %s: %s", resp.Status, body)
	}
	return nil
}
