package artifact

import "testing"

func TestPatterns(t *testing.T) {
	ps := MustParsePatterns("github.com/acme/*, *.corp.example", "gitlab.com/team/proj/")
	tests := []struct {
		mod            string
		match, covered bool
	}{
		{"github.com/acme/x", true, true},
		{"github.com/Acme/X", true, true}, // GitHub resolves both to one repository
		{"GITHUB.COM/ACME/x/v2", true, true},
		{"github.com/acme/x/sub/pkg", true, true},
		{"github.com/acme", false, true}, // probed by the go command for github.com/acme/x/...
		{"github.com/ACME", false, true},
		{"github.com", false, true},
		{"github.com/acmecorp/x", false, false},
		{"github.com/other/x", false, false},
		{"git.corp.example/x", true, true},
		{"GIT.Corp.Example/x", true, true},
		{"corp.example", false, false}, // the glob's first element is not literal
		{"gitlab.com/team/proj", true, true},
		{"gitlab.com/Team/Proj/sub", true, true},
		{"gitlab.com/team", false, true},
		{"gitlab.com/team/other", false, false},
	}
	for _, tt := range tests {
		if got := ps.Match(tt.mod); got != tt.match {
			t.Errorf("Match(%q) = %v; want %v", tt.mod, got, tt.match)
		}
		if got := ps.Covers(tt.mod); got != tt.covered {
			t.Errorf("Covers(%q) = %v; want %v", tt.mod, got, tt.covered)
		}
	}
	var none Patterns
	if none.Match("x.com/y") || none.Covers("x.com") || !none.Empty() {
		t.Error("empty patterns match")
	}
	if _, err := ParsePatterns("github.com/[acme"); err == nil {
		t.Error("malformed glob accepted")
	}
}

// Except takes module paths out of what patterns match and cover, in any
// letter case, and leaves the rest as it was.
func TestPatternsExcept(t *testing.T) {
	ps := MustParsePatterns("golang.org,github.com/acme/*").Except(ToolchainModule)
	for mod, want := range map[string]bool{
		"golang.org/toolchain": false,
		"golang.org/Toolchain": false,
		"golang.org/x/text":    true,
		"golang.org":           true,
		"github.com/acme/x":    true,
		"github.com/acme":      true, // covered as a prefix
	} {
		if got := ps.Covers(mod); got != want {
			t.Errorf("Covers(%q) = %v; want %v", mod, got, want)
		}
		if mod != "github.com/acme" && ps.Match(mod) != want {
			t.Errorf("Match(%q) = %v; want %v", mod, !want, want)
		}
	}
}
