package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// validate runs a Caddyfile through the adapter and caddy.Validate, as
// `caddy validate` does.
func validate(t *testing.T, caddyfile string) error {
	t.Helper()
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		return err
	}
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&cfg)
}

// dialed reports whether anything connected to l: a connection whose
// handshake completed waits in the listener's backlog, so an accept with a
// deadline already passed finds it.
func dialed(t *testing.T, l net.Listener) bool {
	t.Helper()
	l.(*net.TCPListener).SetDeadline(time.Now())
	c, err := l.Accept()
	if err == nil {
		c.Close()
		return true
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatal(err)
	}
	return false
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// caddy validate checks the settings and does nothing else: no directory
// (disk tier, spool, direct sandbox, the default disk under Caddy's data
// directory), no connection to Redis, the bucket or an upstream; the same
// config, run, opens them. Values are still checked.
func TestValidateHasNoSideEffects(t *testing.T) {
	root, tmp := t.TempDir(), t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(root, "data"))
	t.Setenv("TMPDIR", tmp) // where the direct sandbox goes without a disk tier
	redis, bucket, upstream := listen(t), listen(t), listen(t)
	up := "http://" + upstream.Addr().String()
	configs := map[string]string{
		"default tiers": fmt.Sprintf(`goproxy %s {
		private git.example.com/*
	}`, up),
		"redis": fmt.Sprintf(`goproxy %s {
		fleet_key piraeus-test-fleet-key-not-a-secret-0123456789
		cache {
			memory 16MiB
			disk %s
			redis redis://%s
		}
	}`, up, filepath.Join(root, "disk"), redis.Addr()),
		"s3": fmt.Sprintf(`goproxy %s|direct {
		fleet_key piraeus-test-fleet-key-not-a-secret-0123456789
		cache {
			memory off
			s3 {
				endpoint http://%s
				bucket piraeus
				spool_dir %s
			}
		}
	}`, up, bucket.Addr(), filepath.Join(root, "spool")),
	}
	for name, body := range configs {
		cf := testcaddy.Global() + fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\t%s\n}\n", testenv.FreePort(t), body)
		if err := validate(t, cf); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, dir := range []string{root, tmp} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("validating made %s", filepath.Join(dir, e.Name()))
		}
	}
	for name, l := range map[string]net.Listener{"redis": redis, "the bucket": bucket, "the upstream": upstream} {
		if dialed(t, l) {
			t.Errorf("validating dialed %s", name)
		}
	}

	// Values are checked all the same, in JSON configs, which no
	// Caddyfile parser has checked before.
	for handler, want := range map[string]string{
		`"upstream":"ftp://x"`:                                                                                       `upstream: invalid proxy URL "ftp://x"`,
		`"upstream":"direct","private":["a["]`:                                                                       `private: module path pattern "a["`,
		`"sumdbs":[{"name":"not-a-key"}]`:                                                                            "not a known name or a valid verifier key",
		`"modes":[{"pattern":"*","mode":"fast"}]`:                                                                    "fast",
		`"tiers":[{"tier":"disk"},{"tier":"memory"}]`:                                                                "the last tier must keep every object (a disk or s3), not memory",
		`"tiers":[{"tier":"s3","endpoint":"http://127.0.0.1:1","bucket":"b"},{"tier":"disk"}]`:                       "the s3 tier must be the last",
		`"tiers":[{"tier":"redis","url":"redis://127.0.0.1:1"},{"tier":"disk"}]`:                                     "a redis or s3 tier needs fleet_key: a secret that every edge of the fleet shares, which signs what they write there; make one with `head -c 32 /dev/urandom | base64`",
		`"fleet_key":"{env.PIRAEUS_UNSET_KEY}","tiers":[{"tier":"s3","endpoint":"http://127.0.0.1:1","bucket":"b"}]`: "needs fleet_key ({env.PIRAEUS_UNSET_KEY} is empty here)",
		`"fleet_key":"short","tiers":[{"tier":"redis","url":"redis://127.0.0.1:1"},{"tier":"disk"}]`:                 "fleet_key is 5 bytes; it must be at least 32 bytes of random text",
		`"fleet_key":"` + testenv.FleetKey + `","fleet_key_old":["old"],"tiers":[{"tier":"redis","url":"redis://127.0.0.1:1"},{"tier":"disk"}]`: "fleet_key's older key 1 is 3 bytes",
		`"fleet_key":"` + testenv.FleetKey + `","tiers":[{"tier":"redis"},{"tier":"disk"}]`:                                                     "redis needs a URL or an addrs line",
		`"fleet_key":"` + testenv.FleetKey + `","tiers":[{"tier":"redis","url":"redis://a:1","addrs":["b:1"]},{"tier":"disk"}]`:                 "give a URL or addrs, not both",
	} {
		cfg := fmt.Sprintf(`{"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:%d"],"routes":[{"handle":[{"handler":"goproxy",%s}]}]}}}}}`,
			testenv.FreePort(t), handler)
		var c caddy.Config
		if err := json.Unmarshal([]byte(cfg), &c); err != nil {
			t.Fatal(err)
		}
		err := caddy.Validate(&c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validating %s = %v; want an error with %q", handler, err, want)
		}
	}

	// Run, the config opens what validating left alone.
	disk := filepath.Join(root, "run-disk")
	testcaddy.Site(t, testenv.FreePort(t), fmt.Sprintf("goproxy %s {\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up, disk))
	if _, err := os.Stat(filepath.Join(disk, "direct")); err != nil {
		t.Errorf("the running config did not open its disk tier: %v", err)
	}
}

// A tier that cannot open fails the config's load, as it did when tiers
// opened in Provision: the previous config keeps running.
func TestStartFailureFailsTheLoad(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	port := testenv.FreePort(t)
	base := testcaddy.Site(t, port, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t}", up.URL, up.VerifiedBy(t).VKey))
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cf := testcaddy.Global() + fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tgoproxy %s {\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}\n}\n",
		port, up.URL, filepath.Join(file, "disk"))
	err := testcaddy.TryLoad(cf)
	if err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("loading a config whose disk tier cannot open = %v; want its error", err)
	}
	url := base + "/" + testenv.EscapedPath(hello.Path, hello.Version, "info")
	if _, _, err := testenv.Get(url); errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		// The failed config's server, stopped by the rollback, closed a
		// connection it had accepted but not read (seen once in CI): the
		// request was never answered, and is sent again below.
		t.Logf("first GET after the failed load: %v", err)
	}
	testenv.MustGet(t, url)
}

// redirect_large needs a tier of record that pre-signs URLs: over a disk
// the config's load fails and says so.
func TestRedirectLargeNeedsPresigningTier(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	port := testenv.FreePort(t)
	cf := testcaddy.Global() + fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tgoproxy %s {\n\t\tsumdb off\n\t\tredirect_large 1MiB\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}\n}\n",
		port, up.URL, t.TempDir())
	if err := testcaddy.TryLoad(cf); err == nil || !strings.Contains(err.Error(), "redirect_large needs a tier that pre-signs URLs") {
		t.Fatalf("loading redirect_large over a disk = %v; want it refused", err)
	}
}
