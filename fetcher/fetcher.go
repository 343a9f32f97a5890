// Package fetcher gets artifacts from the sources a proxy sits in front of:
// upstream GOPROXY servers, and chains of them with the go command's
// GOPROXY-list semantics.
package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/piraeus-go/piraeus/artifact"
)

// Fetcher fetches one artifact.
type Fetcher interface {
	Fetch(ctx context.Context, a artifact.Artifact) (*Response, error)
}

// Response is a successful fetch. The caller closes Body.
type Response struct {
	Body   io.ReadCloser
	Size   int64  // from Content-Length, -1 if unknown
	Source string // which source answered, for logs
}

// Error is a failed fetch with its HTTP meaning. Msg is one line that is
// safe to show to clients: it never holds upstream URLs or credentials,
// which stay in Err for the log.
type Error struct {
	Status int    // 404 or 410: not found; 403: refused; 502, 503, 504: could not fetch
	Msg    string // client-safe reason
	Source string // which source failed
	Err    error  // underlying cause, for logs only
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Source, e.Msg, e.Err)
	}
	return e.Source + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// IsNotFound reports whether err says the source does not have the
// artifact (404 or 410), the only answer on which a ',' chain falls through.
func IsNotFound(err error) bool {
	var fe *Error
	return errors.As(err, &fe) && (fe.Status == http.StatusNotFound || fe.Status == http.StatusGone)
}

// IsRefusal reports whether err is the source's deliberate answer that it
// will not serve the artifact (403), which, like a not-found, is passed on
// rather than papered over with a stale copy.
func IsRefusal(err error) bool {
	var fe *Error
	return errors.As(err, &fe) && fe.Status == http.StatusForbidden
}

// Off is the GOPROXY-list entry "off": it answers every request with "not
// found", so the proxy serves only what it has cached.
type Off struct{}

func (Off) Fetch(context.Context, artifact.Artifact) (*Response, error) {
	return nil, &Error{Status: http.StatusNotFound, Msg: "not cached, and fetching is off", Source: "off"}
}
