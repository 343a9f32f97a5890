package caddymodule

import (
	"encoding/json"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzUnmarshalCaddyfile feeds arbitrary goproxy blocks to the parser: it
// may reject them, never panic, and what it accepts must marshal to JSON
// and validate, the handler and each tier module alike.
func FuzzUnmarshalCaddyfile(f *testing.F) {
	f.Add("goproxy https://proxy.golang.org,direct")
	f.Add("goproxy {\n\tupstream https://a|https://b,off\n\tcache {\n\t\tmemory 1MiB\n\t\tdisk /x\n\t\tredis redis://127.0.0.1:1/0 {\n\t\t\tmax_object 1KiB\n\t\t}\n\t}\n\tlist_ttl 1s\n}")
	f.Add("goproxy {\n\tprivate a/* b\n\tdirect {\n\t\tworkers 2\n\t\tcredentials h u {env.X}\n\t}\n\tsumdb sum.golang.org\n\tverify off x\n}")
	f.Add("goproxy {\n\tsumdb off\n\tsumdb sum.golang.org\n}")
	f.Add("goproxy {\n\tcache {\n\t\tmemory 1MiB {\n\t\t\tmax_object 1KiB\n\t\t}\n\t\tdisk /x {\n\t\t\tmax 1GiB\n\t\t}\n\t}\n}")
	f.Fuzz(func(t *testing.T, body string) {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(body)); err != nil {
			return
		}
		data, err := json.Marshal(&h)
		if err != nil {
			t.Fatalf("accepted config does not marshal: %v", err)
		}
		var back Handler
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("adapted JSON does not unmarshal: %v", err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v\n%s", err, data)
		}
		for _, raw := range back.TiersRaw {
			var kind struct{ Tier string }
			if err := json.Unmarshal(raw, &kind); err != nil {
				t.Fatalf("tier %s: %v", raw, err)
			}
			info, err := caddy.GetModule("goproxy.tiers." + kind.Tier)
			if err != nil {
				t.Fatalf("adapted to an unknown tier %q", kind.Tier)
			}
			mod := info.New()
			if err := json.Unmarshal(raw, mod); err != nil {
				t.Fatalf("tier %s: %v", raw, err)
			}
			if v, ok := mod.(caddy.Validator); ok {
				if err := v.Validate(); err != nil {
					t.Fatalf("accepted tier does not validate: %v\n%s", err, raw)
				}
			}
		}
	})
}
