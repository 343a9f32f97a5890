package fetcher

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
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
	// SameHostRedirects keeps redirects to the host first asked (see
	// CheckRedirect).
	SameHostRedirects bool
	// TLS, if set, configures TLS (e.g. the roots of a private CA).
	TLS *tls.Config
	// Hosts are the configured upstreams' hosts (proxies, checksum
	// databases). Any other host — one only a redirect leads to — is not
	// dialed on a loopback, private, link-local or otherwise non-public
	// address, unless that address is one a configured host has, or
	// AllowPrivateRedirects is set.
	Hosts []string
	// AllowPrivateRedirects lets redirects lead to private addresses.
	AllowPrivateRedirects bool
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
	guard := newDialGuard(cfg.Hosts, cfg.AllowPrivateRedirects, &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second})
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           guard.DialContext,
		ForceAttemptHTTP2:     true,
		DisableCompression:    true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   cfg.MaxConnsPerHost,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		ResponseHeaderTimeout: cfg.HeaderTimeout,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig:       cfg.TLS,
	}
	return &http.Client{Transport: t, CheckRedirect: CheckRedirect(cfg.SameHostRedirects)}
}

// WithRedirectPolicy returns client, or a copy of it with the default
// redirect policy if it has none (nil means http.DefaultClient).
func WithRedirectPolicy(client *http.Client) *http.Client {
	if client == nil {
		client = http.DefaultClient
	}
	if client.CheckRedirect != nil {
		return client
	}
	c := *client
	c.CheckRedirect = CheckRedirect(false)
	return &c
}

// ErrRedirectRefused is returned when an upstream redirect is not
// followed.
var ErrRedirectRefused = errors.New("redirect refused")

// MaxRedirects is how many redirects a request follows, as the go
// command does.
const MaxRedirects = 10

// CheckRedirect returns the redirect policy of upstream requests, the go
// command's: at most MaxRedirects hops, never from https to plain http,
// and no credentials (an Authorization header, URL userinfo, cookies)
// carried to a host other than the first request's. sameHost refuses any
// other host at all (http to https on the same host is allowed). The
// answer at the end of the chain is read, checked and verified like any.
func CheckRedirect(sameHost bool) func(req *http.Request, via []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= MaxRedirects {
			return fmt.Errorf("%w: stopped after %d redirects", ErrRedirectRefused, MaxRedirects)
		}
		first := via[0].URL
		if req.URL.Scheme != "https" && (req.URL.Scheme != "http" || first.Scheme == "https") {
			return fmt.Errorf("%w: from %s to %s", ErrRedirectRefused, first.Scheme, req.URL.Scheme)
		}
		if strings.EqualFold(req.URL.Host, first.Host) {
			return nil
		}
		if sameHost {
			return fmt.Errorf("%w: to another host", ErrRedirectRefused)
		}
		req.URL.User = nil
		for _, h := range []string{"Authorization", "Cookie"} {
			req.Header.Del(h)
		}
		return nil
	}
}
