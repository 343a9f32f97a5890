package fetcher

import (
	"context"

	"github.com/piraeus-go/piraeus/artifact"
)

// Router keeps private modules private: a module that Patterns covers
// (matches, or is a prefix of, in any letter case) is fetched only by
// Private, never by Public, so its path never reaches a public proxy, not
// even for list or @latest.
type Router struct {
	Patterns artifact.Patterns
	Private  Fetcher
	Public   Fetcher
}

// IsPrivate reports whether mod is fetched by Private.
func (r *Router) IsPrivate(mod string) bool { return r.Patterns.Covers(mod) }

func (r *Router) Fetch(ctx context.Context, a artifact.Artifact) (*Response, error) {
	if r.IsPrivate(a.Module) {
		return r.Private.Fetch(ctx, a)
	}
	return r.Public.Fetch(ctx, a)
}
