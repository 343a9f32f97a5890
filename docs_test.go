package piraeus_test

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/piraeus-go/piraeus"
)

var caddyfileFence = regexp.MustCompile("(?s)```caddyfile\n(.*?)```")

// Every Caddyfile the documentation shows is a whole config that adapts,
// formatted as `caddy fmt` formats it; so is Caddyfile.example, which
// listens on localhost only.
func TestDocumentedCaddyfiles(t *testing.T) {
	snippets := map[string]string{}
	for _, doc := range []string{"README.md", "xcaddy.md"} {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range caddyfileFence.FindAllStringSubmatch(string(data), -1) {
			snippets[doc+"#"+string(rune('A'+i))] = m[1]
		}
	}
	example, err := os.ReadFile("Caddyfile.example")
	if err != nil {
		t.Fatal(err)
	}
	snippets["Caddyfile.example"] = string(example)
	if len(snippets) < 9 {
		t.Fatalf("found %d Caddyfiles in the documentation; the pattern must be broken", len(snippets))
	}
	for name, cf := range snippets {
		if formatted := string(caddyfile.Format([]byte(cf))); formatted != cf {
			t.Errorf("%s is not as caddy fmt formats it:\n%s\n--- caddy fmt:\n%s", name, cf, formatted)
		}
		adapted, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cf), map[string]any{"filename": name})
		if err != nil {
			t.Errorf("%s does not adapt: %v\n%s", name, err, cf)
			continue
		}
		for _, w := range warnings {
			t.Errorf("%s: adapting warns: %s", name, w.Message)
		}
		if name == "Caddyfile.example" && !strings.Contains(string(adapted), `"listen":["127.0.0.1:8080","[::1]:8080"]`) {
			t.Errorf("Caddyfile.example does not listen on localhost only: %s", adapted)
		}
	}
	t.Logf("%d Caddyfiles checked", len(snippets))
}
