package caddymodule

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

func TestWarmAndPurge(t *testing.T) {
	up := testenv.NewUpstream(t, hello, thing)
	base := startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, up.VerifiedBy(t).VKey, t.TempDir()))
	admin := fmt.Sprintf("localhost:%d", testcaddy.AdminPort())
	dir := t.TempDir()
	var sum []byte
	for _, m := range []testenv.Module{hello, thing} {
		lines, err := testenv.GoSumLines(m, dir)
		if err != nil {
			t.Fatal(err)
		}
		sum = append(sum, lines...)
	}
	goSum := filepath.Join(dir, "go.sum")
	if err := os.WriteFile(goSum, sum, 0o644); err != nil {
		t.Fatal(err)
	}

	// caddy goproxy warm --address <admin> go.sum, through the registered
	// command as the caddy binary wires it.
	var out bytes.Buffer
	if err := runCaddyCommand(&out, "warm", "--address", admin, goSum); err != nil {
		t.Fatalf("warm: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "6 artifacts: 0 already cached, 6 fetched, 0 failed") || strings.Count(out.String(), "fetched ") != 6 {
		t.Errorf("warm progress:\n%s", out.String())
	}
	for _, m := range []testenv.Module{hello, thing} {
		for _, k := range []string{"info", "mod", "zip"} {
			if n := up.Requests(testenv.EscapedPath(m.Path, m.Version, k)); n != 1 {
				t.Errorf("%s@%s %s fetched %d times by warm", m.Path, m.Version, k, n)
			}
		}
	}
	// Builds then need nothing from upstream.
	before := up.Total()
	testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, base), "mod", "download", "example.com/hello@v1.0.0", "github.com/Azure/Go-Thing@v0.3.0")
	if n := up.Total() - before; n != 0 {
		t.Errorf("after warming, go mod download asked upstream %d times", n)
	}
	out.Reset()
	if err := WarmViaAdmin(admin, goSum, &out); err != nil || !strings.Contains(out.String(), "6 already cached") {
		t.Errorf("second warm: %v\n%s", err, out.String())
	}

	// A go.mod works too, through the admin API directly.
	goMod := "module example.com/app\n\ngo 1.21\n\nrequire example.com/hello v1.0.0\n"
	resp, err := http.Post("http://"+admin+"/goproxy/warm", "text/plain", strings.NewReader(goMod))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("warm with a go.mod: %v %v", err, resp)
	}
	resp.Body.Close()

	// caddy goproxy purge example.com/hello@v1.0.0
	out.Reset()
	if err := runCaddyCommand(&out, "purge", "--address", admin, "example.com/hello@v1.0.0"); err != nil {
		t.Fatalf("purge: %v", err)
	}
	if !strings.HasPrefix(out.String(), "purged example.com/hello@v1.0.0 from 1 cache(s)") {
		t.Errorf("purge printed %q; want a line of text", out.String())
	}
	testenv.MustGet(t, base+"/"+testenv.EscapedPath(hello.Path, hello.Version, "zip"))
	if n := up.Requests(testenv.EscapedPath(hello.Path, hello.Version, "zip")); n != 2 {
		t.Errorf("after purge the zip was fetched %d times in all; want 2", n)
	}
	if err := PurgeViaAdmin(admin, "example.com/hello@1.0", &out); err == nil {
		t.Error("purging an invalid version succeeded")
	}
	if err := PurgeViaAdmin(admin, "example.com/hello", &out); err == nil || !strings.Contains(err.Error(), "want <module>@<version>") {
		t.Errorf("purging a module without a version: %v; want the form asked for", err)
	}

	// A go.sum over the size limit is refused whole, not cut.
	resp, err = http.Post("http://"+admin+"/goproxy/warm", "text/plain", io.LimitReader(zeros{}, 16<<20+1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("warm with an oversized body: %d; want 413", resp.StatusCode)
	}

	// The admin routes are on the admin endpoint only, not on the site.
	resp, err = http.Post(base+"/goproxy/warm", "text/plain", strings.NewReader(goMod))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /goproxy/warm on the site: %d; want 405 from goproxy", resp.StatusCode)
	}
}

// runCaddyCommand runs `caddy goproxy <args>` the way caddy's main builds
// its cobra commands from the registered ones.
func runCaddyCommand(out io.Writer, args ...string) error {
	c, ok := caddycmd.Commands()["goproxy"]
	if !ok {
		return errors.New("the goproxy command is not registered")
	}
	cmd := &cobra.Command{Use: c.Name, SilenceUsage: true, SilenceErrors: true}
	c.CobraFunc(cmd)
	cmd.SetOut(out)
	cmd.SetArgs(args)
	return cmd.Execute()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = '\n'
	}
	return len(p), nil
}
