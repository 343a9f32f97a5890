package artifact

import (
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/httperr"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		path      string
		kind      Kind
		mod, ver  string
		immutable bool
	}{
		{"example.com/m/@v/list", List, "example.com/m", "", false},
		{"example.com/m/@latest", Latest, "example.com/m", "", false},
		{"example.com/m/@v/v1.2.3.info", Info, "example.com/m", "v1.2.3", true},
		{"example.com/m/@v/v1.2.3.mod", Mod, "example.com/m", "v1.2.3", true},
		{"example.com/m/@v/v1.2.3.zip", Zip, "example.com/m", "v1.2.3", true},
		{"github.com/!azure/go-!thing/@v/v0.1.0.zip", Zip, "github.com/Azure/go-Thing", "v0.1.0", true},
		{"example.com/m/v2/@v/v2.0.0.mod", Mod, "example.com/m/v2", "v2.0.0", true},
		{"example.com/m/@v/v2.0.0+incompatible.zip", Zip, "example.com/m", "v2.0.0+incompatible", true},
		{"example.com/m/@v/v0.0.0-20240102030405-abcdefabcdef.info", Info, "example.com/m", "v0.0.0-20240102030405-abcdefabcdef", true},
		{"gopkg.in/yaml.v3/@v/v3.0.1.info", Info, "gopkg.in/yaml.v3", "v3.0.1", true},
		{"example.com/m/@v/main.info", Info, "example.com/m", "main", false},
		{"example.com/m/@v/v1.2.info", Info, "example.com/m", "v1.2", false},
		{"example.com/m/@v/v1.0.0-!r!c1.info", Info, "example.com/m", "v1.0.0-RC1", true},
	}
	for _, tt := range tests {
		a, err := Parse(tt.path)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.path, err)
			continue
		}
		if a.Kind != tt.kind || a.Module != tt.mod || a.Version != tt.ver || a.Immutable() != tt.immutable {
			t.Errorf("Parse(%q) = %v %q %q immutable=%v; want %v %q %q %v", tt.path, a.Kind, a.Module, a.Version, a.Immutable(), tt.kind, tt.mod, tt.ver, tt.immutable)
		}
		if a.Path() != tt.path {
			t.Errorf("Parse(%q).Path() = %q", tt.path, a.Path())
		}
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		path   string
		status int
	}{
		{"", 404},
		{"favicon.ico", 404},
		{"example.com/m", 404},
		{"example.com/m/@v/", 404},
		{"example.com/m/@v/v1.0.0.tar", 404},
		{"example.com/m/@v/v1.0.0", 404},
		{"@v/list", 404},
		{"/example.com/m/@v/list", 400},
		{"../etc/passwd/@v/list", 400},
		{"example.com/../../etc/@v/list", 400},
		{"example.com/./m/@v/list", 400},
		{"example.com//m/@v/list", 400},
		{"Example.com/m/@v/list", 400},
		{"example.com/M/@v/list", 400},
		{"example.com/!!m/@v/list", 400},
		{"example.com/m!/@v/list", 400},
		{"example.com/m\x00/@v/list", 400},
		{"example.com/m/@v/v1.0.0\x00.zip", 400},
		{"example.com/m%2f..%2f/@v/list", 400},
		{"example.com/m/@v/%2e%2e.info", 400},
		{"example.com/m\\..\\x/@v/list", 400},
		{"example.com/m/@v/v1.0.0\r\nX: y.info", 400},
		{"example.com/m/@v/1.0.0.zip", 400},
		{"example.com/m/@v/v1.0.zip", 400},
		{"example.com/m/@v/v1.0.0-RC1.zip", 400},
		{"example.com/m/@v/v01.0.0.mod", 400},
		{"example.com/m/@v/v2.0.0.mod", 400},
		{"example.com/m/v2/@v/v1.0.0.mod", 400},
		{"example.com/m/@v/../../x.info", 400},
		{"example.com/m/@v/a/b.info", 400},
		{"example.com/m/@v/.info", 400},
		{"example.com/m/@v/..info", 400},
		{"example.com/m/@v/" + strings.Repeat("v", 200) + ".info", 400},
		{"example.com/" + strings.Repeat("a", 300) + "/@v/list", 400},
		{strings.Repeat("a/", 600) + "@v/list", 400},
		{"example.com/mоdule/@v/list", 400}, // Cyrillic о
		{"exa mple.com/m/@v/list", 400},
		{".example.com/m/@v/list", 400},
		{"-example.com/m/@v/list", 400},
	}
	for _, tt := range tests {
		_, err := Parse(tt.path)
		e, ok := httperr.As(err)
		if !ok {
			t.Errorf("Parse(%q) = %v; want an *httperr.Error with status %d", tt.path, err, tt.status)
			continue
		}
		if e.Status != tt.status {
			t.Errorf("Parse(%q) status %d (%s); want %d", tt.path, e.Status, e.Msg, tt.status)
		}
		if strings.ContainsAny(e.Msg, "\r\n") || len(e.Msg) > 300 {
			t.Errorf("Parse(%q) message is not one short line: %q", tt.path, e.Msg)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("example.com/m/@v/v1.2.3.zip")
	f.Add("github.com/!azure/x/@v/list")
	f.Add("example.com/m/@latest")
	f.Add("example.com/m/@v/main.info")
	f.Fuzz(func(t *testing.T, p string) {
		a, err := Parse(p)
		if err != nil {
			return
		}
		// Whatever parses must round-trip and be safe as a relative path.
		if a.Path() != p {
			t.Fatalf("Parse(%q).Path() = %q", p, a.Path())
		}
		for _, elem := range strings.Split(p, "/") {
			if elem == "" || elem == "." || elem == ".." {
				t.Fatalf("Parse(%q) accepted path element %q", p, elem)
			}
		}
	})
}
