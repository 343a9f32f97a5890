package goproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/semver"

	"github.com/piraeus-go/piraeus/artifact"
)

// The cooldown gate: versions younger than an age are held back, so that
// a compromised release is found out (and retracted, or removed) before
// it reaches the company's builds. A held version is left out of lists and
// @latest, and its .info, .mod and .zip are refused with 403 and the time
// it becomes available: a client with a warm module cache never asks for
// the .info again, so the list alone would not hold it back.
//
// A version's age is from its publication time as far as the mirror can
// tell: the time the upstream proxy gives in its .info, and, for versions
// fetched from version control (direct), no earlier than the time this
// mirror first saw them, since a hostile origin can date a commit in the
// past.

// CooldownRule holds back the versions of the modules Patterns match (all
// modules when empty) for Age after their publication.
type CooldownRule struct {
	Age      time.Duration
	Patterns []string
}

// CooldownPrefix selects a longer cooldown per request: a GOPROXY of
// https://mirror/cooldown/14d/ holds versions back for 14 days whatever
// the configured rules say; a shorter one than they say changes nothing.
const CooldownPrefix = "/cooldown/"

// MaxCooldown bounds a cooldown, configured or asked for.
const MaxCooldown = 366 * 24 * time.Hour

// cooldownListMax bounds the versions of one list whose age is looked up
// (the newest by semantic version): older ones are listed as they are.
const cooldownListMax = 200

type cooldownRule struct {
	age      time.Duration
	patterns artifact.Patterns
}

type cooldownKey struct{}

func compileCooldown(rules []CooldownRule) ([]cooldownRule, error) {
	var out []cooldownRule
	for _, r := range rules {
		if r.Age <= 0 || r.Age > MaxCooldown {
			return nil, fmt.Errorf("goproxy: cooldown %v: want a positive age of at most %v", r.Age, MaxCooldown)
		}
		ps, err := artifact.ParsePatterns(r.Patterns...)
		if err != nil {
			return nil, fmt.Errorf("goproxy: cooldown: %w", err)
		}
		out = append(out, cooldownRule{age: r.Age, patterns: ps})
	}
	return out, nil
}

// cooldownFor is the cooldown that applies to mod in ctx: the longest of
// the matching rules and the request's own.
func (p *Proxy) cooldownFor(ctx context.Context, mod string) time.Duration {
	d, _ := ctx.Value(cooldownKey{}).(time.Duration)
	for _, r := range p.cfg.cooldown {
		if (r.patterns.Empty() || r.patterns.Match(mod)) && r.age > d {
			d = r.age
		}
	}
	return d
}

// parseCooldownPrefix strips /cooldown/<duration>/ from path.
func parseCooldownPrefix(path string) (time.Duration, string, bool, error) {
	rest, ok := strings.CutPrefix(path, CooldownPrefix)
	if !ok {
		return 0, path, false, nil
	}
	age, rest, _ := strings.Cut(rest, "/")
	d, err := parseAge(age)
	if err != nil || d <= 0 || d > MaxCooldown {
		return 0, "", true, fmt.Errorf("cooldown %q: want an age such as 7d or 36h, at most %v", age, MaxCooldown)
	}
	return d, "/" + rest, true, nil
}

// parseAge parses a duration with a "d" (day) unit besides Go's.
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || fmt.Sprint(n) != days {
			return 0, fmt.Errorf("bad age %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// published is when mod@version was published, as far as the mirror can
// tell (see above); reading its .info may fetch it.
func (p *Proxy) published(ctx context.Context, mod, version string) (time.Time, error) {
	ia, err := artifact.New(artifact.Info, mod, version)
	if err != nil {
		return time.Time{}, err
	}
	ans, err := p.Get(ctx, ia)
	if err != nil {
		return time.Time{}, err
	}
	if ans.Object == nil {
		return time.Time{}, fmt.Errorf("no .info of %s@%s", mod, version)
	}
	data, err := ans.Object.Content()
	ans.Object.Close()
	if err != nil {
		return time.Time{}, err
	}
	var info struct{ Time time.Time }
	if err := json.Unmarshal(data, &info); err != nil {
		return time.Time{}, fmt.Errorf("the .info of %s@%s: %v", mod, version, err)
	}
	t := info.Time
	if seen, ok := p.firstSeen(ctx, mod, version); ok && seen.After(t) {
		t = seen
	}
	return t, nil
}

// firstSeen is when this mirror first fetched mod@version's .info from
// version control, if it did.
func (p *Proxy) firstSeen(ctx context.Context, mod, version string) (time.Time, bool) {
	key, err := p.pinKey(mod, version, artifact.Info)
	if err != nil {
		return time.Time{}, false
	}
	pn, err := p.readPin(ctx, key)
	if err != nil || pn == nil {
		return time.Time{}, false
	}
	return pn.Seen, true
}

// noteFirstSeen records when a version fetched from version control was
// first seen, the floor of its publication time.
func (p *Proxy) noteFirstSeen(a artifact.Artifact) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, err := p.pinKey(a.Module, a.Version, artifact.Info)
	if err != nil {
		return
	}
	if pn, err := p.readPin(ctx, key); err != nil || pn != nil {
		return
	}
	p.writePin(ctx, key, &pin{H1: "first-seen", Seen: time.Now().UTC()})
}

// held reports when mod@version becomes available, if the cooldown holds
// it back now.
func (p *Proxy) held(ctx context.Context, mod, version string) (until time.Time, ok bool, err error) {
	d := p.cooldownFor(ctx, mod)
	if d == 0 {
		return time.Time{}, false, nil
	}
	pub, err := p.published(ctx, mod, version)
	if err != nil {
		return time.Time{}, false, err
	}
	until = pub.Add(d)
	return until, time.Now().Before(until), nil
}

func writeHeld(w http.ResponseWriter, mod, version string, until time.Time, age time.Duration) {
	writeError(w, http.StatusForbidden, fmt.Sprintf("%s@%s is newer than the mirror's cooldown of %s: available from %s",
		mod, version, formatAge(age), until.UTC().Format(time.RFC3339)), 0)
}

func formatAge(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// visible is the versions of a list that the gates let through: the
// policy's denied ones, the cooldown's young ones (of the newest
// cooldownListMax), and, when the newest version is hidden, those its
// go.mod retracts are left out.
func (p *Proxy) visible(ctx context.Context, mod string, versions []string) ([]string, error) {
	var newest string
	for _, v := range versions {
		if semver.IsValid(v) && (newest == "" || semver.Compare(v, newest) > 0) {
			newest = v
		}
	}
	keep := make(map[string]bool, len(versions))
	for _, v := range versions {
		if _, denied := p.cfg.policy.denies(mod, v); !denied {
			keep[v] = true
		}
	}
	if p.cooldownFor(ctx, mod) > 0 {
		sorted := slices.Clone(versions)
		slices.SortFunc(sorted, func(a, b string) int { return semver.Compare(b, a) })
		if len(sorted) > cooldownListMax {
			sorted = sorted[:cooldownListMax]
		}
		var candidates []string
		for _, v := range sorted {
			if keep[v] {
				candidates = append(candidates, v)
			}
		}
		var mu sync.Mutex
		var firstErr error
		hidden := map[string]bool{}
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for _, v := range candidates {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				_, young, err := p.held(ctx, mod, v)
				mu.Lock()
				defer mu.Unlock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if young || err != nil {
					hidden[v] = true // fails closed: an age not known is not old
				}
			}()
		}
		wg.Wait()
		for v := range hidden {
			delete(keep, v)
		}
		if firstErr != nil && len(keep) == 0 {
			return nil, firstErr
		}
	}
	if newest != "" && !keep[newest] {
		for _, r := range p.retractions(ctx, mod, newest) {
			for v := range keep {
				if semver.Compare(v, r.Low) >= 0 && semver.Compare(v, r.High) <= 0 {
					delete(keep, v)
				}
			}
		}
	}
	var out []string
	for _, v := range versions {
		if keep[v] {
			out = append(out, v)
		}
	}
	return out, nil
}

// retractions are the version intervals the go.mod of mod@version
// retracts (read through the mirror, verified as any .mod).
func (p *Proxy) retractions(ctx context.Context, mod, version string) []modfile.VersionInterval {
	ma, err := artifact.New(artifact.Mod, mod, version)
	if err != nil {
		return nil
	}
	ans, err := p.Get(ctx, ma)
	if err != nil || ans.Object == nil {
		return nil
	}
	data, err := ans.Object.Content()
	ans.Object.Close()
	if err != nil {
		return nil
	}
	f, err := modfile.ParseLax("go.mod", data, nil)
	if err != nil {
		return nil
	}
	var out []modfile.VersionInterval
	for _, r := range f.Retract {
		out = append(out, r.VersionInterval)
	}
	return out
}

// newestOf is the version @latest names among versions: the newest
// release, else the newest pre-release, as the go command chooses.
func newestOf(versions []string) string {
	var best string
	for _, v := range versions {
		if !semver.IsValid(v) {
			continue
		}
		bestPre, vPre := semver.Prerelease(best) != "", semver.Prerelease(v) != ""
		if best == "" || bestPre && !vPre || bestPre == vPre && semver.Compare(v, best) > 0 {
			best = v
		}
	}
	return best
}
