package caddymodule

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary goproxy blocks to the parser: it
// may reject them, never panic, and what it accepts must marshal to JSON
// and pass Validate or fail it cleanly.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	f.Add("goproxy https://proxy.golang.org,direct")
	f.Add("goproxy {\n\tupstream https://a|https://b,off\n\tcache {\n\t\tmemory 1MiB\n\t\tdisk /x\n\t\tredis redis://127.0.0.1:1/0 {\n\t\t\tmax_object 1KiB\n\t\t}\n\t}\n\tlist_ttl 1s\n}")
	f.Add("goproxy {\n\tprivate a/* b\n\tdirect {\n\t\tworkers 2\n\t\tcredentials h u {env.X}\n\t}\n\tsumdb sum.golang.org\n\tverify off x\n}")
	f.Fuzz(func(t *testing.T, body string) {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(body)); err != nil {
			return
		}
		if _, err := json.Marshal(&h); err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		_ = h.Validate()
	})
}
