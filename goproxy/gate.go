package goproxy

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/semver"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/vulndb"
)

// The gate stage: versions a company holds back, each refusal explained
// to the developer it stops. A denied version's .info, .mod and .zip are
// refused with 403 and the rule's reason, which the go command prints; it
// is left out of the module's list, and @latest names the newest version
// the rules let through. Nothing denied is fetched from upstream.

// PolicyRule allows or denies versions of the modules a pattern matches.
type PolicyRule struct {
	// Pattern is a module path pattern in GOPRIVATE syntax.
	Pattern string
	// Versions limits the rule to some versions: "" for all, a version
	// ("v1.2.3"), or comparisons joined by commas, all of which must hold
	// (">=v1.0.0,<v1.2.3"; the operators are <, <=, >, >= and =).
	Versions string
	Deny     bool
	// Reason is told to whoever a deny rule stops.
	Reason string
}

type policyRule struct {
	PolicyRule
	patterns artifact.Patterns
	cmps     []versionCmp
}

type versionCmp struct {
	op      string
	version string
}

// policy is the rules compiled; the first rule that matches a module
// version decides, and a version no rule matches is allowed.
type policy []policyRule

// ParseVersions checks a rule's versions (see PolicyRule.Versions).
func ParseVersions(s string) error {
	_, err := parseVersions(s)
	return err
}

func parseVersions(s string) ([]versionCmp, error) {
	if s == "" {
		return nil, nil
	}
	var cmps []versionCmp
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		op := "="
		for _, o := range []string{"<=", ">=", "<", ">", "="} {
			if rest, ok := strings.CutPrefix(part, o); ok {
				op, part = o, strings.TrimSpace(rest)
				break
			}
		}
		if !semver.IsValid(part) || semver.Canonical(part) != part {
			return nil, fmt.Errorf("version %q: want a canonical semantic version such as v1.2.3, after <, <=, >, >= or =", part)
		}
		cmps = append(cmps, versionCmp{op, part})
	}
	return cmps, nil
}

func compilePolicy(rules []PolicyRule) (policy, error) {
	var pol policy
	for _, r := range rules {
		ps, err := artifact.ParsePattern(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("goproxy: policy: %w", err)
		}
		cmps, err := parseVersions(r.Versions)
		if err != nil {
			return nil, fmt.Errorf("goproxy: policy: %s@%s: %w", r.Pattern, r.Versions, err)
		}
		if strings.ContainsAny(r.Reason, "\r\n") {
			return nil, fmt.Errorf("goproxy: policy: the reason of %s is one line", r.Pattern)
		}
		pol = append(pol, policyRule{PolicyRule: r, patterns: ps, cmps: cmps})
	}
	return pol, nil
}

func (r policyRule) matches(mod, version string) bool {
	if !r.patterns.Match(mod) {
		return false
	}
	for _, c := range r.cmps {
		d := semver.Compare(version, c.version)
		ok := map[string]bool{"=": d == 0, "<": d < 0, "<=": d <= 0, ">": d > 0, ">=": d >= 0}[c.op]
		if !ok {
			return false
		}
	}
	return true
}

// denies returns the rule that denies mod@version, if one does.
func (pol policy) denies(mod, version string) (policyRule, bool) {
	for _, r := range pol {
		if r.matches(mod, version) {
			return r, r.Deny
		}
	}
	return policyRule{}, false
}

// gates reports whether a rule names versions of mod: its version
// queries (lists, @latest) are then answered here, never redirected to
// the upstream, which knows nothing of the rules.
func (pol policy) gates(mod string) bool {
	for _, r := range pol {
		if r.patterns.Match(mod) {
			return true
		}
	}
	return false
}

// refusal is the 403 of a denied version.
func (pol policy) refusal(w http.ResponseWriter, mod, version string, r policyRule) {
	reason := r.Reason
	if reason == "" {
		reason = "denied by the mirror's policy"
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("%s@%s: denied by the mirror's policy (deny %s): %s", mod, version, r.describe(), reason), 0)
}

func (r policyRule) describe() string {
	if r.Versions == "" {
		return r.Pattern
	}
	return r.Pattern + "@" + r.Versions
}

// gateAnswer applies the gates (policy, cooldown) to an answer of a
// before it is served: ok is false when it was refused (and answered),
// and content is what to serve instead of obj when not nil (a filtered
// list, another @latest).
func (p *Proxy) gateAnswer(ctx context.Context, w http.ResponseWriter, r *http.Request, a artifact.Artifact, obj *cachetier.Object) (content []byte, ok bool) {
	if a.Immutable() || !p.gated(ctx, a.Module) {
		return nil, true
	}
	ctx = internal(ctx)
	data, err := obj.Content()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "reading the cached answer failed", 0)
		return nil, false
	}
	if a.Kind == artifact.List {
		vs, err := p.visible(ctx, a.Module, strings.Fields(string(data)))
		if err != nil {
			p.writeFetchError(w, r, err, 0)
			return nil, false
		}
		if len(vs) == 0 {
			return []byte{}, true
		}
		return []byte(strings.Join(vs, "\n") + "\n"), true
	}
	var info struct{ Version string }
	if json.Unmarshal(data, &info) != nil || !semver.IsValid(info.Version) {
		return nil, true // served as is: the go command will refuse it
	}
	refuse := func() bool {
		if r, denied := p.cfg.policy.denies(a.Module, info.Version); denied {
			p.cfg.policy.refusal(w, a.Module, info.Version, r)
			return true
		}
		until, young, err := p.held(ctx, a.Module, info.Version)
		if err != nil {
			p.writeFetchError(w, r, err, 0)
			return true
		}
		if young {
			writeHeld(w, a.Module, info.Version, until, p.cooldownFor(ctx, a.Module))
			return true
		}
		return false
	}
	_, denied := p.cfg.policy.denies(a.Module, info.Version)
	_, young, err := p.held(ctx, a.Module, info.Version)
	if !denied && !young && err == nil {
		return nil, true
	}
	if a.Query() {
		refuse()
		return nil, false
	}
	// @latest names a version held back: the newest one let through.
	if alt, err := p.latestAllowed(ctx, a.Module); err == nil && alt != nil {
		return alt, true
	}
	refuse()
	return nil, false
}

// heldBack reports whether the policy denies a's version: a prefetch
// does not fetch it. (Versions the cooldown holds or a vulnerability entry
// affects may be prefetched: the gates refuse them to clients whatever
// the cache holds.)
func (p *Proxy) heldBack(a artifact.Artifact) bool {
	_, denied := p.cfg.policy.denies(a.Module, a.Version)
	return denied
}

// gated reports whether a gate applies to mod's versions: its version
// queries are then answered here, never redirected to the upstream, which
// knows nothing of the gates.
func (p *Proxy) gated(ctx context.Context, mod string) bool {
	return p.cfg.policy.gates(mod) || p.cooldownFor(ctx, mod) > 0
}

type internalKey struct{}

// internal marks the gates' own lookups: never answered with a redirect.
func internal(ctx context.Context) context.Context {
	return context.WithValue(ctx, internalKey{}, true)
}

func isInternal(ctx context.Context) bool {
	v, _ := ctx.Value(internalKey{}).(bool)
	return v
}

// isClient reports whether a lookup of Get answers a request itself, not
// a gate's own lookup: what the status page counts. (Prefetches and the
// verifier read the tiers without Get.)
func isClient(ctx context.Context) bool { return !isInternal(ctx) }

// latestAllowed is the .info of the newest listed version of mod that the
// gates let through, or nil when there is none.
func (p *Proxy) latestAllowed(ctx context.Context, mod string) ([]byte, error) {
	la, err := artifact.New(artifact.List, mod, "")
	if err != nil {
		return nil, err
	}
	ans, err := p.Get(ctx, la)
	if err != nil {
		return nil, err
	}
	if ans.Object == nil {
		return nil, fmt.Errorf("no list of %s to choose from", mod)
	}
	data, err := ans.Object.Content()
	ans.Object.Close()
	if err != nil {
		return nil, err
	}
	vs, err := p.visible(ctx, mod, strings.Fields(string(data)))
	if err != nil {
		return nil, err
	}
	best := newestOf(vs)
	if best == "" {
		return nil, nil
	}
	ia, err := artifact.New(artifact.Info, mod, best)
	if err != nil {
		return nil, err
	}
	ans, err = p.Get(ctx, ia)
	if err != nil {
		return nil, err
	}
	if ans.Object == nil {
		return nil, fmt.Errorf("no .info of %s@%s", mod, best)
	}
	defer ans.Object.Close()
	return ans.Object.Content()
}

// vulnerableReason is the 403 reason of a zip that entries affect.
func vulnerableReason(a artifact.Artifact, found []vulndb.Finding) string {
	var parts []string
	for _, f := range found {
		fix := "no fixed version"
		if f.Fixed != "" {
			fix = "fixed in " + f.Fixed
		}
		parts = append(parts, fmt.Sprintf("%s (%s; %s)", f.ID, f.Summary, fix))
	}
	return fmt.Sprintf("%s@%s is affected by %s: the mirror denies vulnerable versions", a.Module, a.Version, strings.Join(parts, ", "))
}

// vulnerableScan bounds the cached versions the status page checks
// against the vulnerability database, and vulnerableEvery how often.
const (
	vulnerableScan  = 200_000
	vulnerableEvery = time.Minute
)

// vulnerableCache is the last scan of the cached versions.
type vulnerableCache struct {
	mu   sync.Mutex
	at   time.Time
	list []VulnerableVersion
}

// vulnerableVersions lists the cached versions that the vulnerability
// database's entries affect (scanned at most once a minute), with how
// often each was served and refused since the start, and those asked for
// that are not cached.
func (p *Proxy) vulnerableVersions(ctx context.Context) []VulnerableVersion {
	if p.cfg.vulndb == nil {
		return nil
	}
	vc := &p.vulnCache
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if time.Since(vc.at) >= vulnerableEvery {
		var list []VulnerableVersion
		token := ""
		for scanned := 0; scanned < vulnerableScan; {
			page, err := p.Catalog(ctx, token, maxCatalogPage)
			if err != nil {
				break
			}
			scanned += maxCatalogPage
			for _, e := range page.Modules {
				found, err := p.cfg.vulndb.Affected(ctx, e.Module, e.Version)
				if err != nil || len(found) == 0 {
					continue
				}
				v := VulnerableVersion{Module: e.Module, Version: e.Version}
				for _, f := range found {
					v.IDs = append(v.IDs, f.ID)
					if semver.Compare(f.Fixed, v.Fixed) > 0 {
						v.Fixed = f.Fixed
					}
				}
				list = append(list, v)
			}
			if token = page.Next; token == "" {
				break
			}
		}
		vc.list, vc.at = list, time.Now()
	}
	counted := map[string]VulnerableVersion{}
	for _, v := range p.stats.vulnerableVersions() {
		counted[v.Module+"@"+v.Version] = v
	}
	out := make([]VulnerableVersion, 0, len(vc.list)+len(counted))
	for _, v := range vc.list {
		if c, ok := counted[v.Module+"@"+v.Version]; ok {
			v.Served, v.Refused = c.Served, c.Refused
			delete(counted, v.Module+"@"+v.Version)
		}
		out = append(out, v)
	}
	for _, c := range counted {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b VulnerableVersion) int {
		return cmp.Or(cmp.Compare(b.Served+b.Refused, a.Served+a.Refused), strings.Compare(a.Module+"@"+a.Version, b.Module+"@"+b.Version))
	})
	return out
}
