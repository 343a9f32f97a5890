package fetcher

import (
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
