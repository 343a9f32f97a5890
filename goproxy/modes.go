package goproxy

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
)

// Mode is how a cache miss is answered for the modules a rule matches.
type Mode uint8

const (
	// Sync fetches and serves (the default).
	Sync Mode = iota
	// Redirect answers a miss with a redirect to the upstream proxy and
	// fills the cache in the background, so the first request is never
	// slower than the upstream itself.
	Redirect
	// Offline serves only what is cached, for air-gapped builds.
	Offline
)

// ParseMode parses "sync", "redirect" or "offline".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "sync":
		return Sync, nil
	case "redirect":
		return Redirect, nil
	case "offline":
		return Offline, nil
	}
	return Sync, fmt.Errorf("unknown mode %q: want sync, redirect or offline", s)
}

func (m Mode) String() string {
	return [...]string{"sync", "redirect", "offline"}[m]
}

// ModeRule applies a Mode to modules matching Patterns (GOPRIVATE syntax,
// any letter case); the first matching rule wins.
type ModeRule struct {
	Patterns artifact.Patterns
	Mode     Mode
}

func (p *Proxy) mode(mod string) Mode {
	for _, r := range p.cfg.Modes {
		if r.Patterns.Match(mod) {
			return r.Mode
		}
	}
	return Sync
}

// redirect starts filling the cache in the background and returns where
// to send the client, or "" when a redirect is not possible (no upstream
// proxy to send it to, or a private module).
func (p *Proxy) redirect(a artifact.Artifact) string {
	if p.cfg.RedirectBase == "" || p.private(a.Module) {
		return ""
	}
	fl := p.join(a, false, false) // in progress before the client is sent away
	go func() {
		obj, err := p.await(context.Background(), fl)
		if err == nil {
			obj.Close()
		}
	}()
	return strings.TrimSuffix(p.cfg.RedirectBase, "/") + "/" + a.Path()
}

func offlineMiss(a artifact.Artifact) error {
	return &httperr.Error{Status: http.StatusNotFound, Msg: "not found: " + a.Module + " is served offline and " + a.String() + " is not in the cache", Source: "offline"}
}
