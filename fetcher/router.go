package fetcher

import (
	"context"
	"errors"
	"net/http"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
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
		resp, err := r.Private.Fetch(ctx, a)
		return resp, privateError(a, err)
	}
	return r.Public.Fetch(ctx, a)
}

// privateError is what a client is told of a private source's failure: its
// status and a fixed reason naming what was asked for, never the source's
// own words, which may name internal users, groups, hosts or tokens (the
// log keeps them, scrubbed of token-shaped strings).
func privateError(a artifact.Artifact, err error) error {
	var fe *httperr.Error
	if err == nil || !errors.As(err, &fe) {
		return err
	}
	reason := map[int]string{
		http.StatusNotFound:           "not found",
		http.StatusGone:               "not found",
		http.StatusForbidden:          "forbidden by the private source",
		http.StatusGatewayTimeout:     "private source timed out",
		http.StatusServiceUnavailable: "private source unavailable",
	}[fe.Status]
	if reason == "" {
		reason = "private source failed"
	}
	out := *fe
	out.Msg = reason + ": " + a.String()
	if fe.Msg != out.Msg {
		detail := Secrets(fe.Msg)
		if fe.Err != nil {
			detail += ": " + Secrets(fe.Err.Error())
		}
		out.Err = errors.New(detail)
	}
	return &out
}
