package caddymodule

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"golang.org/x/mod/sumdb/note"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/goproxy"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("goproxy", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("goproxy", httpcaddyfile.Before, "file_server")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	goproxy [<upstream list>] {
//		upstream      <list>          # GOPROXY syntax: https://a,https://b|direct
//		cache { ... }                                 # see unmarshalCache
//		private       <module path patterns>          # GOPRIVATE syntax
//		private_upstream <list>                       # default: direct
//		direct { ... }                                # see unmarshalDirect
//		mode          <module path pattern> sync|redirect|offline   # repeatable
//		sumdb         <name or verifier key> [<url>] | off   # repeatable
//		verify off    <module path patterns>
//		list_ttl      <duration>
//		not_found_ttl <duration>
//		fetch_timeout <duration>
//		dial_timeout  <duration>
//		response_header_timeout <duration>
//		upstream_redirects follow|same_host|allow_private
//		prefetch      off|mod|zip [{ workers <n>; depth <n>; max_bytes <size>; fan_out <n>; requests_per_minute <n>; private }]
//		sumdb_timeout <duration>
//		max_conns_per_host <n>
//		max_fetches   <n>
//		spool_max     <size>
//		redirect_large <size>   # zips this large to pre-signed URLs (s3)
//		redirect_private        # ... private modules' too
//		redirect_ttl  <duration>
//		health                  # GET /healthz, /readyz
//		status        [<path>]  # the status page, default /-/status
//		catalog [{ private }]   # GET /catalog (private modules too)
//		fleet_key     <secret> [<older secret>...]   # with a redis or s3 tier
//		cooldown      <age> [<pattern>...]               # versions younger than age held back
//		vulndb        <url>                              # mirrored under /vuln/
//		deny vulnerable [<pattern>...]                   # zips that a vulndb entry affects
//		deny          <pattern>[@<versions>] "<reason>"  # versions held back
//		allow         <pattern>[@<versions>]             # before a broader deny
//		access        { … }     # who may read which module (see access.go)
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		if err := h.setUpstream(d); err != nil {
			return err
		}
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "upstream":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if h.Upstream != "" {
				return d.Err("upstream given twice")
			}
			if err := h.setUpstream(d); err != nil {
				return err
			}
			if d.NextArg() {
				return d.Errf("upstream takes one GOPROXY-style list (no spaces), e.g. https://proxy.golang.org,direct")
			}
		case "cache":
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := h.unmarshalCache(d); err != nil {
				return err
			}
		case "list_ttl":
			if err := parseDuration(d, &h.ListTTL); err != nil {
				return err
			}
		case "not_found_ttl":
			if err := parseDuration(d, &h.NotFoundTTL); err != nil {
				return err
			}
		case "private":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if _, err := artifact.ParsePatterns(args...); err != nil {
				return d.Err(err.Error())
			}
			for _, a := range args {
				h.Private = append(h.Private, strings.Split(a, ",")...)
			}
			continue
		case "private_upstream":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if err := fetcher.CheckList(d.Val()); err != nil {
				return d.Errf("private_upstream %q: %v", d.Val(), err)
			}
			h.PrivateUpstream = d.Val()
		case "direct":
			if d.NextArg() {
				return d.ArgErr()
			}
			if h.Direct == nil {
				h.Direct = new(DirectConfig)
			}
			if err := unmarshalDirect(d, h.Direct); err != nil {
				return err
			}
			continue
		case "cooldown":
			args := d.RemainingArgs()
			if len(args) < 1 {
				return d.Err("want: cooldown <age, e.g. 7d> [<module path pattern>...]")
			}
			age, err := caddy.ParseDuration(args[0])
			if err != nil || age <= 0 || age > goproxy.MaxCooldown {
				return d.Errf("cooldown %q: want a positive age of at most %v, e.g. 7d", args[0], goproxy.MaxCooldown)
			}
			if _, err := artifact.ParsePatterns(args[1:]...); err != nil {
				return d.Err(err.Error())
			}
			h.Cooldown = append(h.Cooldown, CooldownConfig{Age: caddy.Duration(age), Patterns: args[1:]})
			continue
		case "vulndb":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.VulnDB = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "allow", "deny":
			key := d.Val()
			args := d.RemainingArgs()
			if key == "deny" && len(args) > 0 && args[0] == "vulnerable" {
				if _, err := artifact.ParsePatterns(args[1:]...); err != nil {
					return d.Err(err.Error())
				}
				h.DenyVulnerable, h.DenyVulnerablePatterns = true, append(h.DenyVulnerablePatterns, args[1:]...)
				continue
			}
			if len(args) < 1 || len(args) > 2 || key == "allow" && len(args) != 1 {
				return d.Errf(`want: deny <module path pattern>[@<version or range>] "<reason>", or allow <module path pattern>[@<version or range>]`)
			}
			pattern, versions, _ := strings.Cut(args[0], "@")
			if _, err := artifact.ParsePattern(pattern); err != nil {
				return d.Errf("%s: %v", key, err)
			}
			if err := goproxy.ParseVersions(versions); err != nil {
				return d.Errf("%s %s: %v", key, args[0], err)
			}
			rule := PolicyRuleConfig{Pattern: pattern, Versions: versions, Deny: key == "deny"}
			if len(args) == 2 {
				rule.Reason = args[1]
			}
			h.Policy = append(h.Policy, rule)
			continue
		case "access":
			if h.Access == nil {
				h.Access = new(AccessConfig)
			}
			if err := unmarshalAccess(d, h.Access); err != nil {
				return err
			}
			continue
		case "mode":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Err("want: mode <module path pattern> sync|redirect|offline")
			}
			if _, err := goproxy.ParseMode(args[1]); err != nil {
				return d.Err(err.Error())
			}
			if _, err := artifact.ParsePatterns(args[0]); err != nil {
				return d.Err(err.Error())
			}
			h.Modes = append(h.Modes, ModeConfig{Pattern: args[0], Mode: args[1]})
			continue
		case "sumdb":
			args := d.RemainingArgs()
			switch {
			case len(args) == 1 && args[0] == "off":
				h.SumDBOff = true
			case len(args) == 1 || len(args) == 2:
				if _, ok := checksumdb.KnownKeys[args[0]]; !ok {
					if _, err := note.NewVerifier(args[0]); err != nil {
						return d.Errf("sumdb %q: not a known checksum database name or a verifier key", args[0])
					}
				}
				c := SumDBConfig{Name: args[0]}
				if len(args) == 2 {
					if u, err := url.Parse(args[1]); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
						return d.Errf("sumdb %s: invalid URL %q", args[0], args[1])
					}
					c.URL = args[1]
				}
				h.SumDBs = append(h.SumDBs, c)
			default:
				return d.ArgErr()
			}
			continue
		case "verify":
			args := d.RemainingArgs()
			if len(args) < 2 || args[0] != "off" {
				return d.Err("want: verify off <module path patterns>")
			}
			if _, err := artifact.ParsePatterns(args[1:]...); err != nil {
				return d.Err(err.Error())
			}
			h.NoVerify = append(h.NoVerify, args[1:]...)
			continue
		case "fetch_timeout", "dial_timeout", "response_header_timeout", "sumdb_timeout", "redirect_ttl":
			dst := map[string]*caddy.Duration{"fetch_timeout": &h.FetchTimeout, "dial_timeout": &h.DialTimeout,
				"response_header_timeout": &h.ResponseHeaderTimeout, "sumdb_timeout": &h.SumDBTimeout, "redirect_ttl": &h.RedirectTTL}[d.Val()]
			if err := parseDuration(d, dst); err != nil {
				return err
			}
		case "max_conns_per_host", "max_fetches":
			dst := map[string]*int{"max_conns_per_host": &h.MaxConnsPerHost, "max_fetches": &h.MaxFetches}[d.Val()]
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 || n > 1<<16 {
				return d.Errf("invalid count %q", d.Val())
			}
			*dst = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "prefetch":
			if err := h.unmarshalPrefetch(d); err != nil {
				return err
			}
		case "upstream_redirects":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if v := d.Val(); v != "follow" && v != "same_host" && v != "allow_private" {
				return d.Errf("upstream_redirects %q: want follow, same_host or allow_private", v)
			}
			h.UpstreamRedirects = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "health", "catalog":
			key := d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			*map[string]*bool{"health": &h.Health, "catalog": &h.Catalog}[key] = true
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if key != "catalog" || d.Val() != "private" || d.NextArg() {
					return d.Errf("%s: unknown option %q (catalog takes { private })", key, d.Val())
				}
				h.CatalogPrivate = true
			}
		case "status":
			h.StatusPath = "/-/status"
			if d.NextArg() {
				if !strings.HasPrefix(d.Val(), "/") || strings.ContainsAny(d.Val(), "?#") {
					return d.Errf("status %q: want a path such as /-/status", d.Val())
				}
				h.StatusPath = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "spool_max", "redirect_large":
			dst := map[string]*int64{"spool_max": &h.SpoolMax, "redirect_large": &h.RedirectLarge}[d.Val()]
			if !d.NextArg() {
				return d.ArgErr()
			}
			if err := parseSize(d, dst); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "redirect_private":
			h.RedirectPrivate = true
			if d.NextArg() {
				return d.ArgErr()
			}

		case "fleet_key":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.FleetKey = d.Val()
			h.FleetKeyOld = append(h.FleetKeyOld[:0], d.RemainingArgs()...)
		default:
			return d.Errf("unknown goproxy subdirective %q", d.Val())
		}
	}
	return nil
}

func (h *Handler) setUpstream(d *caddyfile.Dispenser) error {
	if err := fetcher.CheckList(d.Val()); err != nil {
		return d.Errf("upstream %q: %v", d.Val(), err)
	}
	h.Upstream = d.Val()
	return nil
}

// unmarshalCache reads the cache block into tier modules: memory first
// (unless "memory off"), the other tiers in the order given, then the tier
// of record: the disk, or, with s3, the bucket (below a local disk only
// if disk or disk_max is given). Each tier's line (and block) is read by
// its module's own Caddyfile unmarshaler:
//
//	cache {
//		memory            <size>|off
//		memory_max_object <size>
//		disk              <dir>
//		disk_max          <size>
//		redis             [<url>] { ... }    # see RedisTier
//		s3                { ... }            # see S3Tier
//		<tier>            ...                # any goproxy.tiers module
//	}
func (h *Handler) unmarshalCache(d *caddyfile.Dispenser) error {
	if len(h.TiersRaw) > 0 {
		return d.Err("cache given twice")
	}
	mem, disk := new(MemoryTier), new(DiskTier)
	var store json.RawMessage // a bucket, the tier of record
	memOff := false
	var others []json.RawMessage
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] {
			return d.Errf("%s given twice", name)
		}
		seen[name] = true
		switch name {
		case "memory":
			seg := d.NewFromNextSegment()
			seg.Next()
			if seg.NextArg() && seg.Val() == "off" {
				if seg.NextArg() || seg.NextBlock(0) {
					return seg.Err("memory off takes nothing more")
				}
				memOff = true
				continue
			}
			seg.Reset()
			if err := mem.UnmarshalCaddyfile(seg); err != nil {
				return err
			}
		case "memory_max_object", "disk_max":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dst := map[string]*int64{"memory_max_object": &mem.MaxObject, "disk_max": &disk.Max}[name]
			if err := parseSize(d, dst); err != nil {
				return err
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "disk":
			if err := disk.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return err
			}
		case "s3":
			s3 := new(S3Tier)
			if err := s3.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return err
			}
			store = caddyconfig.JSONModuleObject(s3, "tier", "s3", nil)
		default:
			// Any other tier module that reads its own Caddyfile line.
			info, err := caddy.GetModule("goproxy.tiers." + name)
			if err != nil {
				return d.Errf("unknown cache subdirective %q", name)
			}
			mod := info.New()
			u, ok := mod.(caddyfile.Unmarshaler)
			if !ok {
				return d.Errf("cache tier %q has no Caddyfile syntax", name)
			}
			if err := u.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
				return err
			}
			others = append(others, caddyconfig.JSONModuleObject(mod, "tier", name, nil))
		}
	}
	if memOff && seen["memory_max_object"] {
		return d.Err("memory_max_object with memory off")
	}
	if !memOff {
		h.TiersRaw = append(h.TiersRaw, caddyconfig.JSONModuleObject(mem, "tier", "memory", nil))
	}
	h.TiersRaw = append(h.TiersRaw, others...)
	// The disk is the tier of record, or, above a bucket, a local copy
	// when one is asked for.
	if store == nil || seen["disk"] || seen["disk_max"] {
		h.TiersRaw = append(h.TiersRaw, caddyconfig.JSONModuleObject(disk, "tier", "disk", nil))
	}
	if store != nil {
		h.TiersRaw = append(h.TiersRaw, store)
	}
	return nil
}

func parseSize(d *caddyfile.Dispenser, dst *int64) error {
	n, err := humanize.ParseBytes(d.Val())
	if err != nil || n == 0 || n > 1<<50 {
		return d.Errf("invalid size %q: want e.g. 256MiB", d.Val())
	}
	*dst = int64(n)
	return nil
}

func parseDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur <= 0 {
		return d.Errf("invalid duration %q: want e.g. 1m", d.Val())
	}
	*dst = caddy.Duration(dur)
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

var _ caddyfile.Unmarshaler = (*Handler)(nil)

// unmarshalDirect reads:
//
//	direct {
//		workers       <n>          # per pool: public and private modules
//		per_host      <n>
//		timeout       <duration>
//		stall_timeout <duration>
//		go_binary   <path>
//		env         <key> <value>               # repeatable
//		netrc       <file>
//		credentials <host> <login> <password>   # repeatable; {env.X} works
//		git_config  <file>
//	}
func unmarshalDirect(d *caddyfile.Dispenser, c *DirectConfig) error {
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		args := d.RemainingArgs()
		want := map[string]int{"workers": 1, "per_host": 1, "timeout": 1, "stall_timeout": 1, "go_binary": 1, "env": 2, "netrc": 1, "credentials": 3, "git_config": 1}[key]
		if want == 0 {
			return d.Errf("unknown direct subdirective %q", key)
		}
		if len(args) != want {
			return d.ArgErr()
		}
		switch key {
		case "workers", "per_host":
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 1 || n > 1024 {
				return d.Errf("invalid %s %q", key, args[0])
			}
			*map[string]*int{"workers": &c.Workers, "per_host": &c.PerHost}[key] = n
		case "timeout", "stall_timeout":
			dur, err := caddy.ParseDuration(args[0])
			if err != nil || dur <= 0 {
				return d.Errf("invalid duration %q: want e.g. 10m", args[0])
			}
			*map[string]*caddy.Duration{"timeout": &c.Timeout, "stall_timeout": &c.StallTimeout}[key] = caddy.Duration(dur)
		case "go_binary":
			c.GoBinary = args[0]
		case "env":
			if c.Env == nil {
				c.Env = map[string]string{}
			}
			c.Env[args[0]] = args[1]
		case "netrc":
			c.Netrc = args[0]
		case "credentials":
			c.Credentials = append(c.Credentials, Credential{Host: args[0], Login: args[1], Password: args[2]})
		case "git_config":
			c.GitConfig = args[0]
		}
	}
	return nil
}

// unmarshalPrefetch reads `prefetch off|mod|selected|zip [{ workers <n>; depth <n>;
// max_bytes <size>; fan_out <n>; requests_per_minute <n>; private }]`.
func (h *Handler) unmarshalPrefetch(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	c := &PrefetchConfig{Mode: d.Val()}
	if c.Mode != "off" && c.Mode != "mod" && c.Mode != "selected" && c.Mode != "zip" {
		return d.Errf("prefetch %q: want off, mod, selected or zip", c.Mode)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "workers", "depth", "fan_out", "requests_per_minute":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("prefetch %s %q: want a positive number", key, d.Val())
			}
			*map[string]*int{"workers": &c.Workers, "depth": &c.Depth, "fan_out": &c.FanOut,
				"requests_per_minute": &c.RequestsPerMinute}[key] = n
		case "max_bytes":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if err := parseSize(d, &c.MaxBytes); err != nil {
				return err
			}
		case "private":
			c.Private = true
		default:
			return d.Errf("unknown prefetch subdirective %q", key)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	h.Prefetch = c
	return nil
}
