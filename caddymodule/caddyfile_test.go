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
	for _, want := range []string{`"upstream":"https://proxy.golang.org,direct"`, `"memory_off":true`} {
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
