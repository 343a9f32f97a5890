package caddymodule

import (
	"os"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
)

func TestAdapt(t *testing.T) {
	data, err := os.ReadFile("testdata/adapt.caddyfiletest")
	if err != nil {
		t.Fatal(err)
	}
	caddyfile, want, ok := strings.Cut(string(data), "----------\n")
	if !ok {
		t.Fatal("testdata/adapt.caddyfiletest: no ---------- separator")
	}
	// The goproxy directive orders itself before file_server: the block
	// above has no global order option.
	caddytest.AssertAdapt(t, caddyfile, "caddyfile", strings.TrimSpace(want))
}

func TestAdaptShorthandAndMemoryOff(t *testing.T) {
	got := adapt(t, ":8080 {\n\tgoproxy https://proxy.golang.org,direct {\n\t\tcache {\n\t\t\tmemory off\n\t\t}\n\t}\n}\n")
	if want := `"tiers":[{"tier":"disk"}],"upstream":"https://proxy.golang.org,direct"`; !strings.Contains(got, want) {
		t.Errorf("adapted config lacks %s:\n%s", want, got)
	}
}

func TestAdaptRedis(t *testing.T) {
	got := adapt(t, `:8080 {
	goproxy {
		fleet_key {env.PIRAEUS_FLEET_KEY}
		cache {
			redis redis://127.0.0.1:6379/2
		}
	}
	goproxy /other/* {
		fleet_key {env.NEW_KEY} {env.OLD_KEY} {env.OLDER_KEY}
		cache {
			memory 64MiB
			redis {
				addrs 10.0.0.1:26379 10.0.0.2:26379
				master_name mymaster
				password secret
				db 3
				tls
				max_object 4MiB
				max_transfer 64MiB
				key_prefix edge-eu:
				timeout 500ms
				failover_wait 20s
				lock_ttl 5s
			}
			disk /tmp/x
		}
	}
}
`)
	for _, want := range []string{
		`"tiers":[{"tier":"memory"},{"tier":"redis","url":"redis://127.0.0.1:6379/2"},{"tier":"disk"}]`,
		`"fleet_key":"{env.PIRAEUS_FLEET_KEY}"`,
		`"fleet_key":"{env.NEW_KEY}","fleet_key_old":["{env.OLD_KEY}","{env.OLDER_KEY}"]`,
		`"tiers":[{"max":67108864,"tier":"memory"},{"addrs":["10.0.0.1:26379","10.0.0.2:26379"],"db":3,"failover_wait":20000000000,"key_prefix":"edge-eu:","lock_ttl":5000000000,"master_name":"mymaster","max_object":4194304,"max_transfer":67108864,"password":"secret","tier":"redis","timeout":500000000,"tls":true},{"root":"/tmp/x","tier":"disk"}]`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, got)
		}
	}
}

func TestAdaptSumDB(t *testing.T) {
	got := adapt(t, `:8080 {
	goproxy {
		sumdb sum.golang.org
		sumdb sum.example.com+c617a8e9+Af5xwt8s2ozfOXiK1+l+4sOKffD61CCwUQMZ8Y7d1dJl https://sum.example.com
		verify off github.com/acme/* *.corp.example
	}
	goproxy /b/* {
		sumdb off
	}
}
`)
	for _, want := range []string{
		`"sumdbs":[{"name":"sum.golang.org"},{"name":"sum.example.com+c617a8e9+Af5xwt8s2ozfOXiK1+l+4sOKffD61CCwUQMZ8Y7d1dJl","url":"https://sum.example.com"}]`,
		`"no_verify":["github.com/acme/*","*.corp.example"]`,
		`"sumdb_off":true`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, got)
		}
	}
}

func TestAdaptPrivate(t *testing.T) {
	got := adapt(t, `:8080 {
	goproxy https://proxy.golang.org,direct {
		private github.com/acme/*,*.corp.example gitlab.example.com/team
		mode golang.org/x redirect
		mode * offline
		private_upstream https://athens.corp.example|direct
		direct {
			workers 8
			timeout 2m
			go_binary /usr/local/go/bin/go
			env GOFLAGS -mod=mod
			netrc /etc/piraeus/netrc
			credentials github.com x-access-token {env.GITHUB_TOKEN}
			git_config /etc/piraeus/gitconfig
		}
	}
}
`)
	for _, want := range []string{
		`"private":["github.com/acme/*","*.corp.example","gitlab.example.com/team"]`,
		`"private_upstream":"https://athens.corp.example|direct"`,
		`"modes":[{"mode":"redirect","pattern":"golang.org/x"},{"mode":"offline","pattern":"*"}]`,
		`"direct":{"credentials":[{"host":"github.com","login":"x-access-token","password":"{env.GITHUB_TOKEN}"}],"env":{"GOFLAGS":"-mod=mod"},"git_config":"/etc/piraeus/gitconfig","go_binary":"/usr/local/go/bin/go","netrc":"/etc/piraeus/netrc","timeout":120000000000,"workers":8}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, got)
		}
	}
}

func adapt(t *testing.T, caddyfile string) string {
	t.Helper()
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	return string(out)
}

func TestAdaptS3(t *testing.T) {
	got := adapt(t, `:8080 {
	goproxy {
		upstream_redirects same_host
		redirect_large 8MiB
		redirect_private
		redirect_ttl 2m
		cache {
			memory 32MiB
			redis redis://127.0.0.1:6379/0
			s3 {
				endpoint https://s3.eu-west-1.amazonaws.com
				bucket go-modules
				region eu-west-1
				prefix edge/
				access_key {env.S3_KEY}
				secret_key {env.S3_SECRET}
				timeout 20s
			}
		}
	}
	goproxy /b/* {
		cache {
			disk_max 1GiB
			s3 {
				endpoint http://127.0.0.1:7070
				bucket b
			}
		}
	}
}
`)
	for _, want := range []string{
		`"upstream_redirects":"same_host"`,
		`"redirect_large":8388608,"redirect_private":true,"redirect_ttl":120000000000`,
		`"tiers":[{"max":33554432,"tier":"memory"},{"tier":"redis","url":"redis://127.0.0.1:6379/0"},{"access_key":"{env.S3_KEY}","bucket":"go-modules","endpoint":"https://s3.eu-west-1.amazonaws.com","prefix":"edge/","region":"eu-west-1","secret_key":"{env.S3_SECRET}","tier":"s3","timeout":20000000000}]`,
		// A local disk only when asked for, above the bucket.
		`"tiers":[{"tier":"memory"},{"max":1073741824,"tier":"disk"},{"bucket":"b","endpoint":"http://127.0.0.1:7070","tier":"s3"}]`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, got)
		}
	}
}

func TestAdaptPrefetch(t *testing.T) {
	got := adapt(t, `:8080 {
	goproxy {
		prefetch zip {
			workers 4
			depth 6
			max_bytes 1GiB
			fan_out 200
			requests_per_minute 600
			private
		}
	}
	goproxy /b/* {
		prefetch off
	}
}
`)
	for _, want := range []string{
		`"prefetch":{"depth":6,"fan_out":200,"max_bytes":1073741824,"mode":"zip","private":true,"requests_per_minute":600,"workers":4}`,
		`"prefetch":{"mode":"off"}`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("adapted config lacks %s:\n%s", want, got)
		}
	}
}

func TestBadCaddyfile(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{"goproxy {\n\t\tupstream\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tupstream ftp://x\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tupstream https://a,,https://b\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tupstream https://a https://b\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tlist_ttl soon\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tlist_ttl -1s\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tfetch_timeout\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tbogus 1\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tcache {\n\t\t\tmemory lots\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tcache {\n\t\t\tdisk\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis_typo x\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy https://a extra", "Caddyfile:2"},
		{"goproxy {\n\t\tsumdb sum.nobody.example\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tprivate\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tmode * fast\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tmode offline\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tprivate_upstream ftp://x\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tdirect {\n\t\t\tworkers lots\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tdirect {\n\t\t\tcredentials host user\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tdirect {\n\t\t\tbogus\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tsumdb sum.golang.org ftp://x\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tsumdb\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tverify off\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tverify on x\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis {\n\t\t\t\tdb x\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:5"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis {\n\t\t\t\tmax_object\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:5"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis {\n\t\t\t\tbogus\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:5"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis {\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis redis://a {\n\t\t\t\taddrs b:1\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:5"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis {\n\t\t\t\taddrs a:1\n\t\t\t\tcluster\n\t\t\t\tmaster_name m\n\t\t\t}\n\t\t}\n\t}", "two kinds of deployment"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis {\n\t\t\t\taddrs a:1 b:1\n\t\t\t\tdb 2\n\t\t\t}\n\t\t}\n\t}", "only db 0"},
		{"goproxy {\n\t\tcache {\n\t\t\tredis {\n\t\t\t\taddrs a:1\n\t\t\t\tfailover_wait soon\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:6"},
		{"goproxy {\n\t\tcache {\n\t\t\ts3 {\n\t\t\t\tbucket b\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:6"},
		{"goproxy {\n\t\tcache {\n\t\t\ts3 {\n\t\t\t\tbogus 1\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:5"},
		{"goproxy {\n\t\tcache {\n\t\t\ts3 {\n\t\t\t\tredirect_large 1MiB\n\t\t\t}\n\t\t}\n\t}", "Caddyfile:5"},
		{"goproxy {\n\t\tredirect_large big\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tcache {\n\t\t\ts3 x\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tupstream_redirects never\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tprefetch\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tprefetch all\n\t}", "Caddyfile:3"},
		{"goproxy {\n\t\tprefetch zip {\n\t\t\tdepth -1\n\t\t}\n\t}", "Caddyfile:4"},
		{"goproxy {\n\t\tprefetch zip {\n\t\t\tbogus\n\t\t}\n\t}", "Caddyfile:4"},
	}
	for _, tt := range tests {
		caddyfile := ":8080 {\n\t" + tt.body + "\n}\n"
		_, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
		if err == nil {
			t.Errorf("adapting %q succeeded; want an error", tt.body)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("adapting %q: error %q does not name %s", tt.body, err, tt.want)
		}
	}
}

// Prefetch of the .mod files the go command reads, and of the zips of
// the versions clients select, is on unless configured otherwise.
func TestPrefetchDefault(t *testing.T) {
	for _, tt := range []struct {
		h    Handler
		want string
	}{
		{Handler{}, "selected"},
		{Handler{Prefetch: &PrefetchConfig{Workers: 2}}, "selected"},
		{Handler{Prefetch: &PrefetchConfig{Mode: "mod"}}, "mod"},
		{Handler{Prefetch: &PrefetchConfig{Mode: "off"}}, "off"},
		{Handler{Prefetch: &PrefetchConfig{Mode: "zip"}}, "zip"},
	} {
		o, err := tt.h.options()
		if err != nil {
			t.Fatal(err)
		}
		if o.Prefetch.Mode != tt.want {
			t.Errorf("prefetch %+v: mode %q; want %q", tt.h.Prefetch, o.Prefetch.Mode, tt.want)
		}
	}
}
