package fetcher

import (
	"context"

	"golang.org/x/mod/module"

	"github.com/piraeus-go/piraeus/artifact"
)

// Router keeps private modules private: a module matching Patterns
// (GOPRIVATE syntax) is fetched only by Private, never by Public, so its
// path never reaches a public proxy, not even for list or @latest.
type Router struct {
	Patterns string // comma-separated glob patterns of module path prefixes
	Private  Fetcher
	Public   Fetcher
}

// IsPrivate reports whether mod matches the private patterns.
func (r *Router) IsPrivate(mod string) bool {
	return r.Patterns != "" && module.MatchPrefixPatterns(r.Patterns, mod)
}

func (r *Router) Fetch(ctx context.Context, a artifact.Artifact) (*Response, error) {
	if r.IsPrivate(a.Module) {
		return r.Private.Fetch(ctx, a)
	}
	return r.Public.Fetch(ctx, a)
}
