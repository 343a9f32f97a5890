package fetcher

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"golang.org/x/net/http/httpproxy"
)

// ErrPrivateAddress is returned when a host that only a redirect led to
// is on a non-public address.
var ErrPrivateAddress = fmt.Errorf("%w: to a private address", ErrRedirectRefused)

// dialGuard dials the configured hosts as they are, and any other host
// only on public addresses: a redirect from an upstream cannot make the
// mirror reach its own loopback, the cloud's metadata service or the
// internal network. The check is made on the address dialed, after the
// name was resolved, so a name that resolves differently the second time
// changes nothing.
type dialGuard struct {
	hosts        map[string]bool // lower-case host names and literal addresses
	allowPrivate bool
	dialer       *net.Dialer
	resolver     *net.Resolver

	mu    sync.Mutex
	known map[netip.Addr]bool // addresses the configured hosts were found on
}

func newDialGuard(hosts []string, allowPrivate bool, d *net.Dialer) *dialGuard {
	g := &dialGuard{hosts: map[string]bool{}, allowPrivate: allowPrivate, dialer: d, resolver: net.DefaultResolver, known: map[netip.Addr]bool{}}
	for _, h := range append(hosts, envProxyHosts()...) {
		if h = strings.ToLower(strings.Trim(h, "[]")); h != "" {
			g.hosts[h] = true
			if a, err := netip.ParseAddr(h); err == nil {
				g.known[a.Unmap()] = true
			}
		}
	}
	return g
}

// envProxyHosts are the hosts of the proxies the environment names
// (HTTPS_PROXY, HTTP_PROXY, read as net/http reads them): the client dials
// them, not the upstream, so they are trusted like a configured host.
func envProxyHosts() []string {
	var hosts []string
	cfg := httpproxy.FromEnvironment()
	for _, raw := range []string{cfg.HTTPSProxy, cfg.HTTPProxy} {
		if raw == "" {
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "http://" + raw
		}
		if u, err := url.Parse(raw); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	return hosts
}

func (g *dialGuard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	host = strings.ToLower(host)
	if g.allowPrivate {
		return g.dialer.DialContext(ctx, network, addr)
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		ips, err := g.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
		for _, a := range ips {
			addrs = append(addrs, a.Unmap())
		}
	}
	configured := g.hosts[host]
	g.mu.Lock()
	var allowed []netip.Addr
	for _, a := range addrs {
		switch {
		case configured:
			g.known[a] = true
			allowed = append(allowed, a)
		case isPublic(a) || g.known[a]:
			allowed = append(allowed, a)
		}
	}
	g.mu.Unlock()
	if len(allowed) == 0 {
		return nil, fmt.Errorf("%w (%s is on %v; upstream_redirects allow_private follows it)", ErrPrivateAddress, host, addrs)
	}
	var firstErr error
	for _, a := range allowed {
		c, err := g.dialer.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return c, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// isPublic reports whether a is an address of the public internet: not
// loopback, private (RFC 1918, fc00::/7), link-local, unspecified,
// multicast, shared (100.64.0.0/10) or otherwise reserved.
func isPublic(a netip.Addr) bool {
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range reserved {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

var reserved = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "64:ff9b:1::/48", "100::/64", "2001:db8::/32",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// ListHosts returns the hosts of the proxy URLs of a GOPROXY-style list.
func ListHosts(list string) []string {
	var hosts []string
	for _, f := range strings.FieldsFunc(list, func(r rune) bool { return r == ',' || r == '|' }) {
		f = strings.TrimSpace(f)
		if f == "direct" || f == "off" || f == "" {
			continue
		}
		if u, err := url.Parse(f); err == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}
	return hosts
}
