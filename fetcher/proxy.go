package fetcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
)

// ProxyFetcher fetches from an upstream GOPROXY server over HTTP(S).
type ProxyFetcher struct {
	base   *url.URL
	name   string // host only: safe for logs and client messages
	client *http.Client
}

// NewProxyFetcher returns a fetcher for the GOPROXY at rawURL. A nil client
// means http.DefaultClient.
func NewProxyFetcher(rawURL string, client *http.Client) (*ProxyFetcher, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid proxy URL %q: %v", rawURL, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("invalid proxy URL %q: want http:// or https:// with a host", rawURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("invalid proxy URL %q: no query or fragment allowed", rawURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return &ProxyFetcher{base: u, name: u.Host, client: WithRedirectPolicy(client)}, nil
}

// Name is the upstream's host, for logs.
func (p *ProxyFetcher) Name() string { return p.name }

func (p *ProxyFetcher) Fetch(ctx context.Context, a artifact.Artifact) (*Response, error) {
	// Escaped module paths are valid URL path text ('!' included); setting
	// RawPath keeps them byte for byte instead of percent-encoding '!'.
	u := *p.base
	u.RawPath = p.base.EscapedPath() + "/" + a.Path()
	u.Path += "/" + a.Path()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &httperr.Error{Status: http.StatusBadGateway, Msg: "building upstream request failed", Source: p.name, Err: err}
	}
	// The body is read as sent: a compressed one would be expanded behind
	// the limits on what is read.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, TransportError(ctx, p.name, err)
	}
	if resp.StatusCode == http.StatusOK {
		if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/html" {
			// A login or error page behind a 200 (a private upstream's
			// single sign-on, a captive portal): never an artifact.
			resp.Body.Close()
			return nil, &httperr.Error{Status: http.StatusBadGateway, Msg: "upstream answered an HTML page, not the " + a.Kind.String() + " asked for", Source: p.name,
				Err: errors.New("Content-Type " + resp.Header.Get("Content-Type"))}
		}
		return &Response{Body: resp.Body, Size: resp.ContentLength, Source: p.name}, nil
	}
	defer resp.Body.Close()
	reason := ClientText(bodyText(resp.Body), a.Module)
	switch resp.StatusCode {
	case http.StatusNotFound, http.StatusGone:
		if reason == "" {
			reason = "not found"
		}
		return nil, &httperr.Error{Status: resp.StatusCode, Msg: reason, Source: p.name}
	case http.StatusForbidden, http.StatusBadRequest:
		// A gatekeeper's refusal, a module the upstream will not serve, or
		// a path it will not take ("Go module host not permitted"): the
		// client is told so, with the reason, as it would be going there.
		if reason == "" {
			reason = strings.ToLower(http.StatusText(resp.StatusCode))
		}
		return nil, &httperr.Error{Status: resp.StatusCode, Msg: reason, Source: p.name}
	}
	return nil, &httperr.Error{
		Status: http.StatusBadGateway,
		Msg:    fmt.Sprintf("upstream answered %d", resp.StatusCode),
		Source: p.name,
		Err:    errors.New(reason),
	}
}

// TransportError classifies a failed request: a deadline is a 504, anything
// else a 502. Client messages never name the upstream (it may be an
// internal host); Source and Err, for the log, do.
func TransportError(ctx context.Context, source string, err error) *httperr.Error {
	if errors.Is(err, ErrPrivateAddress) {
		return &httperr.Error{Status: http.StatusBadGateway, Msg: "upstream redirect refused: to a private address", Source: source, Err: err}
	}
	if errors.Is(err, ErrRedirectRefused) {
		msg := "upstream redirect refused"
		if ue := (*url.Error)(nil); errors.As(err, &ue) { // the policy's words, without the URL
			msg = "upstream " + ue.Err.Error()
		}
		return &httperr.Error{Status: http.StatusBadGateway, Msg: msg, Source: source, Err: err}
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded {
		return &httperr.Error{Status: http.StatusGatewayTimeout, Msg: "upstream timed out", Source: source, Err: err}
	}
	return &httperr.Error{Status: http.StatusBadGateway, Msg: "upstream unreachable", Source: source, Err: err}
}

// bodyText reads the start of an error body, as much as ClientText
// scans.
func bodyText(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, maxScannedText))
	return string(b)
}
