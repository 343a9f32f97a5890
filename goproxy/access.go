package goproxy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/artifact"
)

// The access stage: who may read which module. It runs on every request
// that names a module — its .info, .mod, .zip, list and @latest, and its
// checksum database lookup — before any tier is asked, so that a cache
// hit is held to the same rule as a miss; the operators' pages have a
// rule of their own. The identity is the one Caddy's authentication
// established (basic_auth, forward_auth's copied headers, a client
// certificate, a token), read by Access.Identify.

// Subject is who asks: the authenticated user, "" when anonymous, and the
// groups the identity provider gave.
type Subject struct {
	User   string
	Groups []string
}

// Subjects a rule may name besides user:<id> and group:<name>.
const (
	SubjectAnyone        = "anyone"
	SubjectAuthenticated = "authenticated"
)

// AccessRule allows (or, with Deny, denies) the subjects it names to read
// the modules its pattern matches.
type AccessRule struct {
	// Pattern is a module path pattern in GOPRIVATE syntax, matched in any
	// letter case, as Private is: "*" matches every module.
	Pattern  string
	Deny     bool
	Subjects []string
}

// Access is the access stage's configuration. With no Access, every
// request is answered as before (access left to what is in front).
type Access struct {
	// Rules are tried in order; the first whose pattern matches the
	// module decides. A module that no rule matches is denied.
	Rules []AccessRule
	// Operator are the subjects that may read the status page and the
	// catalog; none when empty. /healthz and /readyz stay open to probes.
	Operator []string
	// Realm is the realm of the WWW-Authenticate challenge sent with a
	// 401; default "Go modules".
	Realm string
	// Identify returns who sent r; required.
	Identify func(r *http.Request) Subject
	// Audit receives one line per answer of a protected module (one that
	// is private, or that a rule other than "anyone" allowed) and one per
	// denial; nil for none.
	Audit *zap.Logger
}

// accessPolicy is an Access compiled: its patterns parsed.
type accessPolicy struct {
	Access
	rules []accessRule
}

type accessRule struct {
	AccessRule
	patterns artifact.Patterns
	public   bool // allows anyone: its answers are not audited
}

// compile checks a's rules and parses their patterns.
func (a Access) compile() (*accessPolicy, error) {
	if a.Identify == nil {
		return nil, errors.New("goproxy: access: no Identify function")
	}
	if a.Realm == "" {
		a.Realm = "Go modules"
	}
	if strings.ContainsAny(a.Realm, "\"\\\r\n") {
		return nil, fmt.Errorf("goproxy: access: realm %q may not hold quotes, backslashes or line breaks", a.Realm)
	}
	ap := &accessPolicy{Access: a}
	for _, r := range a.Rules {
		ps, err := artifact.ParsePattern(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("goproxy: access: %w", err)
		}
		if len(r.Subjects) == 0 {
			return nil, fmt.Errorf("goproxy: access: the rule for %s names no subject", r.Pattern)
		}
		for _, s := range r.Subjects {
			if err := CheckSubject(s); err != nil {
				return nil, err
			}
		}
		ap.rules = append(ap.rules, accessRule{AccessRule: r, patterns: ps, public: !r.Deny && slices.Contains(r.Subjects, SubjectAnyone)})
	}
	for _, s := range a.Operator {
		if err := CheckSubject(s); err != nil {
			return nil, err
		}
	}
	return ap, nil
}

// CheckSubject says whether s is a subject a rule may name.
func CheckSubject(s string) error {
	switch {
	case s == SubjectAnyone, s == SubjectAuthenticated:
		return nil
	case strings.HasPrefix(s, "user:") && len(s) > len("user:"), strings.HasPrefix(s, "group:") && len(s) > len("group:"):
		return nil
	}
	return fmt.Errorf("goproxy: access: subject %q is not user:<id>, group:<name>, authenticated or anyone", s)
}

// matches reports whether subject names s.
func (s Subject) matches(subject string) bool {
	switch {
	case subject == SubjectAnyone:
		return true
	case subject == SubjectAuthenticated:
		return s.User != ""
	}
	if id, ok := strings.CutPrefix(subject, "user:"); ok {
		return s.User != "" && s.User == id
	}
	if g, ok := strings.CutPrefix(subject, "group:"); ok {
		return s.User != "" && slices.Contains(s.Groups, g)
	}
	return false
}

func (s Subject) matchesAny(subjects []string) bool {
	return slices.ContainsFunc(subjects, s.matches)
}

// decision is what the access stage said of one request.
type decision struct {
	allowed bool
	audited bool // a protected module, or a denial: written to the audit log
	rule    string
}

// decide applies the first rule that matches mod.
func (a *accessPolicy) decide(mod string, s Subject) decision {
	for _, r := range a.rules {
		if !r.patterns.Match(mod) {
			continue
		}
		verb := "allow"
		if r.Deny {
			verb = "deny"
		}
		desc := verb + " " + r.Pattern
		if s.matchesAny(r.Subjects) {
			return decision{allowed: !r.Deny, audited: r.Deny || !r.public, rule: desc}
		}
		if !r.Deny {
			return decision{audited: true, rule: desc}
		}
		// A deny rule that does not name s leaves the module to the
		// rules after it.
	}
	return decision{audited: true, rule: "no rule"}
}

// mayReadAny reports whether some rule allows s anything: the checksum
// database's tiles and signed tree, which name no module, are served to
// those the mirror serves at all.
func (a *accessPolicy) mayReadAny(s Subject) bool {
	for _, r := range a.rules {
		if !r.Deny && s.matchesAny(r.Subjects) {
			return true
		}
	}
	return false
}

// deny answers a request the access stage refused: 401 with a challenge
// to an anonymous client, so that the go command asks its GOAUTH helpers
// or netrc and tries again; 403 with a one-line reason to an
// authenticated one. Never a 404: a client's GOPROXY list would fall
// through on it to the next proxy, and leak the module's path there.
func (a *accessPolicy) deny(w http.ResponseWriter, s Subject, what string) int {
	w.Header().Set("Cache-Control", "no-store")
	if s.User == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="`+a.Realm+`"`)
		writeError(w, http.StatusUnauthorized, "authentication required to read "+what, 0)
		return http.StatusUnauthorized
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("user %s may not read %s", quoteShort(s.User), what), 0)
	return http.StatusForbidden
}

// audit writes one line of the audit log.
// kind is the artifact's kind, or "lookup" for a checksum database's.
func (a *accessPolicy) audit(r *http.Request, s Subject, art artifact.Artifact, kind string, d decision, status int, cache string) {
	if a.Audit == nil || !d.audited {
		return
	}
	fields := []zap.Field{
		zap.String("user", s.User),
		zap.Strings("groups", s.Groups),
		zap.String("module", art.Module),
		zap.String("version", art.Version),
		zap.String("kind", kind),
		zap.Int("status", status),
		zap.String("rule", d.rule),
		zap.String("client", r.RemoteAddr),
	}
	if cache != "" {
		fields = append(fields, zap.String("cache", cache))
	}
	if !d.allowed {
		a.Audit.Warn("denied", fields...)
		return
	}
	a.Audit.Info("served", fields...)
}

// auditOperator writes the audit line of an operators' page.
func (a *accessPolicy) auditOperator(r *http.Request, s Subject, path string, allowed bool, status int) {
	if a.Audit == nil {
		return
	}
	fields := []zap.Field{zap.String("user", s.User), zap.Strings("groups", s.Groups), zap.String("path", path),
		zap.Int("status", status), zap.String("client", r.RemoteAddr)}
	if !allowed {
		a.Audit.Warn("denied", fields...)
		return
	}
	a.Audit.Info("operator page", fields...)
}
