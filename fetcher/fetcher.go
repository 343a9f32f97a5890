// Package fetcher gets artifacts from the sources a proxy sits in front of:
// upstream GOPROXY servers, the version control systems themselves through
// the go command ("direct", in a sandbox), chains of them with the go
// command's GOPROXY-list semantics, and a Router that keeps private modules
// on their own sources. It also scrubs the text relayed from them.
package fetcher

import (
	"context"
	"io"
	"net/http"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
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

// Off is the GOPROXY-list entry "off": it answers every request with "not
// found", so the proxy serves only what it has cached.
type Off struct{}

func (Off) Fetch(context.Context, artifact.Artifact) (*Response, error) {
	return nil, &httperr.Error{Status: http.StatusNotFound, Msg: "not cached, and fetching is off", Source: "off"}
}
