package caddymodule

import (
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/goproxy"
)

// AccessConfig decides who may read which module, from the identity that
// Caddy's own authentication established in front of goproxy: basic_auth
// (or a token provider), forward_auth's copied headers, a client
// certificate.
type AccessConfig struct {
	// Rules are tried in order; the first whose pattern matches a module
	// decides: an allow rule lets the subjects it names read it and no one
	// else, a deny rule refuses those it names and leaves the others to
	// the rules after it. A module no rule matches is denied.
	Rules []AccessRuleConfig `json:"rules,omitempty"`
	// Operator are the subjects that may read the status page and the
	// catalog (none by default).
	Operator []string `json:"operator,omitempty"`
	// Identities say where the user and their groups come from, tried in
	// order: the first whose user placeholder is not empty names the user,
	// and its own groups placeholder (values split at commas and spaces)
	// the groups, so that one source's user never gets another's groups.
	// Default: {http.auth.user.id} and {http.auth.user.groups}, which
	// basic_auth and goproxy_token set. A request header is an identity
	// only where forward_auth (which replaces the headers it copies)
	// answers every request that reaches goproxy.
	Identities []IdentityConfig `json:"identities,omitempty"`
	// Realm is the realm of the challenge sent with a 401.
	Realm string `json:"realm,omitempty"`
}

// IdentityConfig is a source of identity: placeholders for the user's id
// and for their groups.
type IdentityConfig struct {
	User   string `json:"user"`
	Groups string `json:"groups,omitempty"`
}

// AccessRuleConfig is one rule: Pattern is a module path pattern in
// GOPRIVATE syntax ("*" for every module); Subjects are user:<id>,
// group:<name>, authenticated or anyone.
type AccessRuleConfig struct {
	Pattern  string   `json:"pattern"`
	Deny     bool     `json:"deny,omitempty"`
	Subjects []string `json:"subjects"`
}

const (
	defaultUserPlaceholder   = "{http.auth.user.id}"
	defaultGroupsPlaceholder = "{http.auth.user.groups}"
	// auditLogger is the logger of the audit trail, so that Caddy's log
	// config can send it apart (include http.handlers.goproxy.audit).
	auditLogger = "http.handlers.goproxy.audit"
)

// options is the access stage's configuration for goproxy.
func (c *AccessConfig) options(audit *zap.Logger) *goproxy.Access {
	ids := c.Identities
	if len(ids) == 0 {
		ids = []IdentityConfig{{User: defaultUserPlaceholder, Groups: defaultGroupsPlaceholder}}
	}
	a := &goproxy.Access{Operator: c.Operator, Realm: c.Realm, Audit: audit,
		Identify: func(r *http.Request) goproxy.Subject { return identify(r, ids) }}
	for _, r := range c.Rules {
		a.Rules = append(a.Rules, goproxy.AccessRule{Pattern: r.Pattern, Deny: r.Deny, Subjects: r.Subjects})
	}
	return a
}

// identify reads who sent r from the request's placeholders. A
// placeholder that nothing set reads as empty: anonymous.
func identify(r *http.Request, ids []IdentityConfig) goproxy.Subject {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return goproxy.Subject{}
	}
	for _, id := range ids {
		user := strings.TrimSpace(repl.ReplaceAll(id.User, ""))
		if user == "" {
			continue
		}
		s := goproxy.Subject{User: user}
		if id.Groups != "" {
			s.Groups = strings.FieldsFunc(repl.ReplaceAll(id.Groups, ""), func(r rune) bool { return r == ',' || r == ' ' })
		}
		return s
	}
	return goproxy.Subject{}
}

// unmarshalAccess reads an access block:
//
//	access {
//		allow <pattern> <subject...>
//		deny <pattern> <subject...>
//		operator <subject...>
//		identity <user placeholder> [<groups placeholder>]
//		realm <name>
//	}
func unmarshalAccess(d *caddyfile.Dispenser, c *AccessConfig) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch key := d.Val(); key {
		case "allow", "deny":
			args := d.RemainingArgs()
			if len(args) < 2 {
				return d.Errf("want: %s <module path pattern> <subject...> (user:<id>, group:<name>, authenticated, anyone)", key)
			}
			if _, err := artifact.ParsePattern(args[0]); err != nil {
				return d.Errf("%s: %v", key, err)
			}
			if err := checkSubjects(d, args[1:]); err != nil {
				return err
			}
			c.Rules = append(c.Rules, AccessRuleConfig{Pattern: args[0], Deny: key == "deny", Subjects: args[1:]})
		case "operator":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.ArgErr()
			}
			if err := checkSubjects(d, args); err != nil {
				return err
			}
			c.Operator = append(c.Operator, args...)
		case "identity":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.Err("want: identity <user placeholder> [<groups placeholder>]")
			}
			id := IdentityConfig{User: args[0]}
			if len(args) == 2 {
				id.Groups = args[1]
			}
			c.Identities = append(c.Identities, id)
		case "realm":
			if !d.NextArg() {
				return d.ArgErr()
			}
			c.Realm = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unknown access subdirective %q", key)
		}
	}
	return nil
}

// checkSubjects refuses, at its line, a subject a rule may not name.
func checkSubjects(d *caddyfile.Dispenser, subjects []string) error {
	for _, s := range subjects {
		if err := goproxy.CheckSubject(s); err != nil {
			return d.Err(err.Error())
		}
	}
	return nil
}
