package artifact

import (
	"fmt"
	"path"
	"strings"

	"golang.org/x/mod/module"
)

// Patterns are module path patterns in the go command's GOPRIVATE syntax:
// comma-separated globs, each matching a module path that it matches as a
// whole or as a prefix of path elements.
//
// They are matched the way code hosts resolve paths rather than byte for
// byte: GitHub and GitLab serve github.com/Acme/x and github.com/acme/x
// from one repository, so letter case never decides whether a path is
// covered.
type Patterns struct {
	list     string              // as configured, for logs
	folded   string              // lower case, for module.MatchPrefixPatterns
	prefixes map[string]struct{} // lower-case strict literal prefixes, see Covers
	except   map[string]struct{} // lower-case module paths never matched, see Except
}

// ParsePatterns parses comma-separated patterns; each argument may hold
// several. Empty entries are skipped; a malformed glob is an error.
func ParsePatterns(lists ...string) (Patterns, error) {
	var all []string
	for _, l := range lists {
		for _, p := range strings.Split(l, ",") {
			if p = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(p), "/")); p != "" {
				all = append(all, p)
			}
		}
	}
	ps := Patterns{list: strings.Join(all, ",")}
	if len(all) == 0 {
		return ps, nil
	}
	ps.folded = strings.ToLower(ps.list)
	ps.prefixes = map[string]struct{}{}
	for _, p := range all {
		if _, err := path.Match(p, ""); err != nil {
			return Patterns{}, fmt.Errorf("module path pattern %q: %v", p, err)
		}
		elems := strings.Split(strings.ToLower(p), "/")
		for i := 1; i < len(elems); i++ {
			if strings.ContainsAny(elems[i-1], `*?[\`) {
				break
			}
			ps.prefixes[strings.Join(elems[:i], "/")] = struct{}{}
		}
	}
	return ps, nil
}

// ParsePattern parses one module path pattern, as a rule takes it (an
// access or policy rule): not empty, no comma.
func ParsePattern(p string) (Patterns, error) {
	ps, err := ParsePatterns(p)
	if err == nil && (ps.Empty() || strings.Contains(p, ",")) {
		err = fmt.Errorf("module path pattern %q: want one pattern, e.g. github.com/acme/* or *", p)
	}
	return ps, err
}

// ToolchainModule is the module the go command downloads Go toolchains
// from (GOTOOLCHAIN=auto, go toolchain). The private and verify-off
// patterns of a proxy except it (Patterns.Except): it is fetched from the
// public upstream and verified, since a private or unverified toolchain
// would be code that every build then runs.
const ToolchainModule = "golang.org/toolchain"

// MustParsePatterns is ParsePatterns for patterns known to be valid.
func MustParsePatterns(lists ...string) Patterns {
	ps, err := ParsePatterns(lists...)
	if err != nil {
		panic(err)
	}
	return ps
}

// Empty reports whether there are no patterns.
func (ps Patterns) Empty() bool { return ps.list == "" }

// String is the patterns as configured.
func (ps Patterns) String() string { return ps.list }

// Except returns the patterns with the given module paths never matched
// nor covered, whatever the patterns say.
func (ps Patterns) Except(mods ...string) Patterns {
	except := make(map[string]struct{}, len(ps.except)+len(mods))
	for m := range ps.except {
		except[m] = struct{}{}
	}
	for _, m := range mods {
		except[strings.ToLower(m)] = struct{}{}
	}
	ps.except = except
	return ps
}

// Match reports whether mod matches a pattern, ignoring letter case.
func (ps Patterns) Match(mod string) bool {
	if ps.folded == "" {
		return false
	}
	lower := strings.ToLower(mod)
	if _, ok := ps.except[lower]; ok {
		return false
	}
	return module.MatchPrefixPatterns(ps.folded, lower)
}

// Covers reports whether mod matches a pattern or is a strict prefix of a
// pattern's literal leading elements, ignoring letter case. Such prefixes
// name private code too: resolving github.com/acme/x/pkg, the go command
// asks for github.com/acme/@v/list, which must not reach a public proxy
// when github.com/acme/x is private.
func (ps Patterns) Covers(mod string) bool {
	if ps.folded == "" {
		return false
	}
	lower := strings.ToLower(mod)
	if _, ok := ps.except[lower]; ok {
		return false
	}
	if _, ok := ps.prefixes[lower]; ok {
		return true
	}
	return ps.Match(mod)
}
