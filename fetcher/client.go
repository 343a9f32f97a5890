package fetcher

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// NewHTTPClient returns the client used for upstream proxies: keep-alive
// pools sized for a proxy's fan-out, and bounded connection set-up. The
// whole fetch is bounded by the caller's context.
func NewHTTPClient() *http.Client {
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{Transport: t}
}

// ErrRedirectRefused is returned when an upstream redirects elsewhere.
var ErrRedirectRefused = errors.New("redirect to another host refused")

// SameHostClient returns a copy of client that follows at most five
// redirects, and only to the same host and scheme (or http to https): an
// upstream cannot send the proxy to hosts it was not configured for.
func SameHostClient(client *http.Client, scheme, host string) *http.Client {
	c := *client
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return fmt.Errorf("%w: too many redirects", ErrRedirectRefused)
		}
		if req.URL.Host != host || (req.URL.Scheme != scheme && req.URL.Scheme != "https") {
			return fmt.Errorf("%w: %s", ErrRedirectRefused, req.URL.Host)
		}
		return nil
	}
	return &c
}
