package caddymodule

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// Three Caddy servers (sites on their own ports, each with its own memory
// and disk tiers) share one real Redis: a module fetched by one is a hit
// for all, with one upstream request in total. So they do on a Redis
// Cluster and through Sentinels, configured as docs/fleet.md shows.
func TestFleetThroughCaddy(t *testing.T) {
	for _, tp := range []struct {
		name  string
		start func(t *testing.T) testenv.RedisTarget
	}{
		{"single", func(t *testing.T) testenv.RedisTarget { return testenv.StartRedis(t) }},
		{"cluster", func(t *testing.T) testenv.RedisTarget { return testenv.StartRedisCluster(t) }},
		{"sentinel", func(t *testing.T) testenv.RedisTarget { return testenv.StartRedisSentinel(t) }},
	} {
		t.Run(tp.name, func(t *testing.T) { // one at a time: one Caddy per process
			fleetThroughCaddy(t, tp.start(t))
		})
	}
}

// redisBlock is the Caddyfile's redis line for target, with a block that
// ends in extra.
func redisBlock(target testenv.RedisTarget, extra string) string {
	cfg := target.Config()
	if cfg.URL != "" {
		return fmt.Sprintf("redis %s {\n%s\n}", cfg.URL, extra)
	}
	lines := "addrs " + strings.Join(cfg.Addrs, " ") + "\n"
	if cfg.MasterName != "" {
		lines += "master_name " + cfg.MasterName + "\n"
	}
	if cfg.Cluster {
		lines += "cluster\n"
	}
	// longer than the tests' failovers take
	lines += "failover_wait 10s\n"
	return "redis {\n" + lines + extra + "\n}"
}

func fleetThroughCaddy(t *testing.T, target testenv.RedisTarget) {
	up := testenv.NewUpstream(t, hello, thing)
	up.SetDelay(200 * time.Millisecond)
	ports := []int{testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)}
	var sites strings.Builder
	db := up.VerifiedBy(t)
	for _, port := range ports {
		fmt.Fprintf(&sites, `http://127.0.0.1:%d {
	bind 127.0.0.1
	goproxy %s {
		sumdb %s
		fleet_key piraeus-test-fleet-key-not-a-secret-0123456789
		cache {
			memory 16MiB
			disk %s
			%s
		}
	}
}
`, port, up.URL, db.VKey, t.TempDir(), redisBlock(target, "key_prefix fleet-test:"))
	}
	config := testcaddy.Global() + sites.String()
	testcaddy.Load(t, config)
	if t.Failed() {
		t.FailNow()
	}

	coldBurst(t, up, ports, 100)
}

// coldBurst runs three go commands, one per edge, with empty module
// caches, plus n concurrent GETs of thing's zip spread over the edges,
// and checks that each artifact cost one upstream request.
func coldBurst(t *testing.T, up *testenv.Upstream, ports []int, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, port := range ports {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := testenv.GoEnv(t, fmt.Sprintf("http://127.0.0.1:%d", port))
			if out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/hello@v1.0.0", "github.com/Azure/Go-Thing@v0.3.0"); err != nil {
				t.Errorf("go mod download via :%d: %v\n%s", port, err, out)
			}
		}()
	}
	zip, want := testenv.EscapedPath(thing.Path, thing.Version, "zip"), thing.Zip(t)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := testenv.GetCheck(fmt.Sprintf("http://127.0.0.1:%d/%s", ports[i%len(ports)], zip), want); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, m := range []testenv.Module{hello, thing} {
		for _, kind := range []string{"info", "mod", "zip"} {
			p := testenv.EscapedPath(m.Path, m.Version, kind)
			if n := up.Requests(p); n != 1 {
				t.Errorf("%s: %d upstream requests from %d edges; want 1", p, n, len(ports))
			}
		}
	}
}

// Two deployments with different upstreams share one Redis: the default
// key prefix is derived from what makes their answers differ, so neither
// ever serves the other's objects.
func TestFleetPrefixSeparatesDeployments(t *testing.T) {
	r := testenv.StartRedis(t)
	a := testenv.Module{Path: "example.com/shared", Version: "v1.0.0", Files: map[string]string{"x.go": "package x\n\nconst Who = \"A\"\n"}}
	b := testenv.Module{Path: "example.com/shared", Version: "v1.0.0", Files: map[string]string{"x.go": "package x\n\nconst Who = \"B\"\n"}}
	upA, upB := testenv.NewUpstream(t, a), testenv.NewUpstream(t, b)
	portA, portB := testenv.FreePort(t), testenv.FreePort(t)
	site := func(port int, up *testenv.Upstream) string {
		return fmt.Sprintf(`http://127.0.0.1:%d {
	bind 127.0.0.1
	goproxy %s {
		sumdb off
		fleet_key piraeus-test-fleet-key-not-a-secret-0123456789
		cache {
			memory off
			disk %s
			redis %s
		}
	}
}
`, port, up.URL, t.TempDir(), r.URL())
	}
	config := testcaddy.Global() + site(portA, upA) + site(portB, upB)
	testcaddy.Load(t, config)
	zip := testenv.EscapedPath(a.Path, a.Version, "zip")
	for range 2 {
		for _, tt := range []struct {
			port int
			want []byte
		}{{portA, a.Zip(t)}, {portB, b.Zip(t)}} {
			if got := testenv.MustGet(t, fmt.Sprintf("http://127.0.0.1:%d/%s", tt.port, zip)); !bytes.Equal(got, tt.want) {
				t.Fatalf("site on port %d served the other deployment's zip", tt.port)
			}
		}
	}
	keys, _ := r.Do("KEYS", "*obj:*.zip}")
	if !strings.HasPrefix(keys, "*2") {
		t.Errorf("KEYS *obj:*.zip} = %s; want two zips under two prefixes", keys)
	}
	// Each deployment holds its own record of what it saw first.
	if keys, _ := r.Do("KEYS", "*obj:*piraeus-pins*zip}"); !strings.HasPrefix(keys, "*2") {
		t.Errorf("records of first sight of the zip: %s; want two, one per deployment", keys)
	}
}
