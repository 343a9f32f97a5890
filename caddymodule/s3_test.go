package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/dirhash"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// s3Site is a Caddy edge with no disk: memory (unless off), optionally
// Redis for the fleet's locks, and the bucket as the tier of record.
func s3Site(port int, up *testenv.Upstream, db *testenv.SumDB, s3 *testenv.S3, memory, redis, s3extra string) string {
	return fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	goproxy %s {
		sumdb %s
		health
		fleet_key piraeus-test-fleet-key-not-a-secret-0123456789
		cache {
			memory %s
			%s
			s3 {
				endpoint   %s
				bucket     piraeus
				access_key %s
				secret_key %s
				timeout    500ms
				%s
			}
		}
	}
}
`, port, up.URL, db.VKey, memory, redis, s3.Endpoint, s3.AccessKey, s3.SecretKey, s3extra)
}

// adminConfig reads the running config's tiers of the site on port.
func siteTiers(t *testing.T, port int) []string {
	t.Helper()
	body := testenv.MustGet(t, fmt.Sprintf("http://localhost:%d/config/apps/http/servers", testcaddy.AdminPort()))
	var servers map[string]struct {
		Listen []string `json:"listen"`
		Routes []struct {
			Handle []struct {
				Routes []struct {
					Handle []struct {
						Handler string `json:"handler"`
						Tiers   []struct {
							Tier string `json:"tier"`
						} `json:"tiers"`
					} `json:"handle"`
				} `json:"routes"`
			} `json:"handle"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(body, &servers); err != nil {
		t.Fatal(err)
	}
	for _, srv := range servers {
		if len(srv.Listen) != 1 || !strings.HasSuffix(srv.Listen[0], fmt.Sprintf(":%d", port)) {
			continue
		}
		for _, r := range srv.Routes {
			for _, h := range r.Handle {
				for _, sr := range h.Routes {
					for _, hh := range sr.Handle {
						if hh.Handler == "goproxy" {
							var names []string
							for _, tier := range hh.Tiers {
								names = append(names, tier.Tier)
							}
							return names
						}
					}
				}
			}
		}
	}
	t.Fatalf("no goproxy handler on port %d in %s", port, body)
	return nil
}

// Three Caddy edges with no disk share one bucket (and one Redis for the
// locks): a cold burst across them costs one upstream request per
// artifact, and an edge started later, with no memory and no Redis,
// serves all of it from the bucket without asking upstream.
func TestS3FleetThroughCaddy(t *testing.T) {
	r := testenv.StartRedis(t)
	s3 := testenv.StartS3(t)
	up := testenv.NewUpstream(t, hello, thing)
	up.SetDelay(200 * time.Millisecond)
	db := up.VerifiedBy(t)
	ports := []int{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
	var sites strings.Builder
	for _, port := range ports {
		sites.WriteString(s3Site(port, up, db, s3, "16MiB", "redis "+r.URL(), ""))
	}
	testcaddy.Load(t, testcaddy.Global()+sites.String())
	if got := strings.Join(siteTiers(t, ports[0]), ","); got != "memory,redis,s3" {
		t.Fatalf("tiers %s; want memory,redis,s3 (no disk)", got)
	}

	coldBurst(t, up, ports, 60)

	// A new edge: its own (no) memory, no Redis, the same bucket.
	late := testenv.FreePort(t)
	sites.WriteString(s3Site(late, up, db, s3, "off", "", ""))
	testcaddy.Load(t, testcaddy.Global()+sites.String())
	before := up.Total()
	env := testenv.GoEnv(t, fmt.Sprintf("http://127.0.0.1:%d", late))
	testenv.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/hello@v1.0.0", "github.com/Azure/Go-Thing@v0.3.0")
	if n := up.Total() - before; n != 0 {
		t.Errorf("the late edge asked upstream %d times; want 0: %q", n, up.Paths()[before:])
	}
}

// A bucket that stalls, then fails: requests are still answered from
// upstream within bounded time, and whatever the bucket holds afterwards
// is whole and right.
func TestS3BucketFailureThroughCaddy(t *testing.T) {
	testenv.Slow(t)
	s3 := testenv.StartS3(t)
	up := testenv.NewUpstream(t, hello, hello11, thing)
	db := up.VerifiedBy(t)
	port := testenv.FreePort(t)
	testcaddy.Load(t, testcaddy.Global()+s3Site(port, up, db, s3, "off", "", ""))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	readyz := func(want int, says string) {
		t.Helper()
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || !strings.Contains(string(body), says) {
			t.Errorf("/readyz: %d %q; want %d saying %q", resp.StatusCode, body, want, says)
		}
		t.Logf("/readyz: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	readyz(200, "ready")
	testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, base), "mod", "download", "example.com/hello@v1.1.0")

	s3.Pause()
	paused := true
	defer func() {
		if paused {
			s3.Resume()
		}
	}()
	// One request waits about one timeout (500ms) for the bucket, then
	// is served from upstream.
	start := time.Now()
	testenv.MustGet(t, base+"/"+testenv.EscapedPath(hello.Path, hello.Version, "info"))
	if d := time.Since(start); d >= 1500*time.Millisecond {
		t.Errorf("a request with a stalled bucket took %v; want about one timeout (500ms)", d)
	}
	start = time.Now()
	testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, base), "mod", "download", "example.com/hello@v1.0.0")
	if d := time.Since(start); d > time.Minute {
		t.Errorf("go mod download with a stalled bucket took %v", d)
	}
	s3.Resume()
	paused = false
	s3.Stop()
	testenv.RunGo(t, t.TempDir(), testenv.GoEnv(t, base), "mod", "download", "github.com/Azure/Go-Thing@v0.3.0")
	readyz(503, "s3 tier")
	s3.Start()

	// Every object in the bucket is the artifact it is named for, whole.
	n := 0
	for _, name := range s3.Objects("piraeus") {
		rest, ok := strings.CutPrefix(name, "o/")
		if !ok {
			continue
		}
		_, p, _ := strings.Cut(rest, "/") // after the namespace
		if strings.HasPrefix(p, "sumdb/") || strings.HasPrefix(p, "sumdb-config/") {
			continue // the checksum database's, checked against it
		}
		want := testenv.MustGet(t, up.URL+"/"+p)
		got, err := os.ReadFile(filepath.Join(s3.Root, "piraeus", filepath.FromSlash(name)))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%s in the bucket: %d bytes, not the %d of the artifact", p, len(got), len(want))
		}
		n++
	}
	if n < 3 {
		t.Errorf("%d artifacts in the bucket; want at least those of example.com/hello@v1.1.0", n)
	}
	t.Logf("%d artifacts in the bucket after the failures, all whole", n)
}

// A large zip held in the bucket is answered with a pre-signed URL, which
// the go command follows; a private module's is served by the edge unless
// the operator opts in.
func TestS3PresignedRedirect(t *testing.T) {
	s3 := testenv.StartS3(t)
	dir := t.TempDir()
	big := testenv.Module{Path: "example.com/big", Version: "v1.0.0", Files: map[string]string{"big.go": "package big\n"}}
	secret := testenv.Module{Path: "corp.example/secret", Version: "v1.0.0", Files: map[string]string{"s.go": "package secret\n"}}
	up := testenv.NewUpstream(t)
	db := up.VerifiedBy(t)
	bigZip := testenv.WriteBigZip(t, dir, big, 3<<20)
	up.AddBigZip(big, bigZip)
	up.AddBigZip(secret, testenv.WriteBigZip(t, dir, secret, 3<<20))
	ports := []int{testenv.FreePort(t), testenv.FreePort(t)}
	site := func(port int, extra string) string {
		return fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	goproxy %s {
		sumdb %s
		private corp.example
		private_upstream %s
		fleet_key piraeus-test-fleet-key-not-a-secret-0123456789
		redirect_large 1MiB
		%s
		cache {
			memory off
			s3 {
				endpoint   %s
				bucket     piraeus
				access_key %s
				secret_key %s
			}
		}
	}
}
`, port, up.URL, db.VKey, up.URL, extra, s3.Endpoint, s3.AccessKey, s3.SecretKey)
	}
	testcaddy.Load(t, testcaddy.Global()+site(ports[0], "")+site(ports[1], "redirect_private"))
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(port int, m testenv.Module) (int, string) {
		t.Helper()
		resp, err := noFollow.Get(fmt.Sprintf("http://127.0.0.1:%d/%s", port, testenv.EscapedPath(m.Path, m.Version, "zip")))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("Location")
	}
	s3Host := strings.TrimPrefix(s3.Endpoint, "http://")
	for _, m := range []testenv.Module{big, secret} {
		if status, _ := get(ports[0], m); status != 200 {
			t.Fatalf("%s, first (fetched) request: %d; want 200 from the edge", m.Path, status)
		}
	}
	status, loc := get(ports[0], big)
	if u, err := url.Parse(loc); status != 302 || err != nil || u.Host != s3Host {
		t.Fatalf("large zip in the bucket: %d %q; want a 302 to the bucket", status, loc)
	}
	if status, loc := get(ports[0], secret); status != 200 {
		t.Errorf("private module's zip: %d %q; want 200, served by the edge", status, loc)
	}
	if status, loc := get(ports[1], secret); status != 302 {
		t.Errorf("private module's zip with redirect_private: %d %q; want 302", status, loc)
	}

	env := testenv.GoEnv(t, fmt.Sprintf("http://127.0.0.1:%d", ports[0]))
	out := testenv.RunGo(t, t.TempDir(), env, "mod", "download", "-json", "example.com/big@v1.0.0")
	var dl struct{ Sum string }
	if err := json.Unmarshal([]byte(out), &dl); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want, err := dirhash.HashZip(bigZip, dirhash.Hash1)
	if err != nil {
		t.Fatal(err)
	}
	if dl.Sum != want {
		t.Errorf("go command's hash of the zip it got through the redirect: %s; want %s", dl.Sum, want)
	}
	if n := up.Requests(testenv.EscapedPath(big.Path, big.Version, "zip")); n != 1 {
		t.Errorf("zip fetched upstream %d times; want 1", n)
	}
}
