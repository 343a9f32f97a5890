package fetcher

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Defaults for HTTPConfig fields left zero.
const (
	DefaultMaxConnsPerHost = 64
	DefaultDialTimeout     = 10 * time.Second
	DefaultHeaderTimeout   = time.Minute
)

// HTTPConfig bounds the client used for upstream proxies and checksum
// databases.
type HTTPConfig struct {
	// MaxConnsPerHost caps the connections to one upstream host; requests
	// beyond it wait for one to be free.
	MaxConnsPerHost int
	// DialTimeout bounds connecting (TCP and TLS handshake each).
	DialTimeout time.Duration
	// HeaderTimeout bounds the wait for an answer's headers.
	HeaderTimeout time.Duration
}

// NewHTTPClient returns the client used for upstream proxies: keep-alive
// pools sized for a proxy's fan-out, bounded connections per host and
// bounded connection set-up. It never asks for compressed answers, so no
// body is expanded behind the size limits of what is read. The whole
// fetch is bounded by the caller's context.
func NewHTTPClient(cfg HTTPConfig) *http.Client {
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = DefaultMaxConnsPerHost
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.HeaderTimeout <= 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   cfg.MaxConnsPerHost,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		ResponseHeaderTimeout: cfg.HeaderTimeout,
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
