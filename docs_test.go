package piraeus_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/piraeus-go/piraeus"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

var caddyfileFence = regexp.MustCompile("(?s)```caddyfile\n(.*?)```")

// Every Caddyfile the documentation shows is a whole config that adapts,
// formatted as `caddy fmt` formats it; so is Caddyfile.example, which
// listens on localhost only.
func TestDocumentedCaddyfiles(t *testing.T) {
	snippets := map[string]string{}
	docs, err := filepath.Glob("docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs/*.md: %v", err)
	}
	for _, doc := range append([]string{"README.md", "xcaddy.md"}, docs...) {
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
	// Validating a config has no side effects: with the paths it names and
	// Caddy's own directories moved below a temp dir, nothing is created
	// there (Caddy's file logs aside: Caddy opens them when it provisions).
	root := t.TempDir()
	for _, env := range []string{"HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "TMPDIR"} {
		t.Setenv(env, filepath.Join(root, strings.ToLower(env)))
	}
	// The fleet key the documented fleets take from the environment.
	t.Setenv("PIRAEUS_FLEET_KEY", testenv.FleetKey)
	for name, cf := range snippets {
		validateWithoutSideEffects(t, name, cf, root)
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

var absPath = regexp.MustCompile(`(^|\s)(/(var|etc|srv|run|tmp)/[^\s]*)`)

// validateWithoutSideEffects validates a Caddyfile as `caddy validate`
// does, with its absolute paths moved below root, and fails if that made
// any file or directory there.
func validateWithoutSideEffects(t *testing.T, name, cf, root string) {
	t.Helper()
	dir := filepath.Join(root, "validate", strings.NewReplacer("#", "-", ".", "-").Replace(name))
	var logs []string
	moved := absPath.ReplaceAllStringFunc(cf, func(m string) string {
		sub := absPath.FindStringSubmatch(m)
		return sub[1] + filepath.Join(dir, sub[2])
	})
	for _, m := range regexp.MustCompile(`output file (\S+)`).FindAllStringSubmatch(moved, -1) {
		logs = append(logs, m[1])
	}
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(moved), map[string]any{"filename": name})
	if err != nil {
		return // reported by the caller
	}
	var cfg caddy.Config
	if err := json.Unmarshal(adapted, &cfg); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Errorf("%s does not validate: %v", name, err)
		return
	}
	var made []string
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return nil
		}
		for _, l := range logs {
			if path == l || strings.HasPrefix(l, path+string(filepath.Separator)) {
				return nil // Caddy's own log file and its directories
			}
		}
		if d.IsDir() && strings.HasPrefix(dir, path) {
			// dir and its parents count only through what is in them
			entries, _ := os.ReadDir(path)
			if len(entries) > 0 {
				return nil
			}
		}
		made = append(made, strings.TrimPrefix(path, root))
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	if len(made) > 0 {
		t.Errorf("validating %s made %s", name, strings.Join(made, ", "))
	}
	os.RemoveAll(filepath.Join(root, "validate"))
}
