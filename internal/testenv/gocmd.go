package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// GoBin returns the go command, failing the test with how to install it.
func GoBin(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	t.Fatal("the go command is needed as the proxy's client: install Go (https://go.dev/dl) and put it on PATH")
	return ""
}

// GoEnv is the environment for a go command that uses goproxy and nothing
// else: a fresh module cache, no checksum database, no toolchain download.
func GoEnv(t testing.TB, goproxy string) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GO") && !strings.HasPrefix(kv, "GOCACHE=") && !strings.HasPrefix(kv, "GOROOT=") {
			continue // the parent's Go settings must not leak in
		}
		env = append(env, kv)
	}
	return append(env,
		"GOPROXY="+goproxy,
		"GOMODCACHE="+t.TempDir(),
		"GOPATH="+t.TempDir(),
		"GOFLAGS=-modcacherw",
		"GOSUMDB=off",
		"GOTOOLCHAIN=local",
		"GOWORK=off",
		"GO111MODULE=on",
	)
}

// RunGo runs the go command in dir and returns its combined output; a
// failure fails the test with that output.
func RunGo(t testing.TB, dir string, env []string, args ...string) string {
	t.Helper()
	out, err := TryGo(t, dir, env, args...)
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// TryGo runs the go command and returns its output and error.
func TryGo(t testing.TB, dir string, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(GoBin(t), args...)
	cmd.Dir = dir
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}
