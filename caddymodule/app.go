package caddymodule

import "github.com/caddyserver/caddy/v2"

func init() { caddy.RegisterModule(App{}) }

// App is the goproxy app, which a config gets as soon as one of its
// handlers is provisioned. Provisioning checks settings only (`caddy
// validate` runs nothing else); when the config runs, Start opens the
// handlers' tiers, directories and connections. A handler that serves a
// request before (Caddy starts its apps in no fixed order) opens itself
// first.
type App struct {
	handlers []*Handler // added while the config is provisioned, in one goroutine
}

func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "goproxy", New: func() caddy.Module { return new(App) }}
}

func (a *App) add(h *Handler) { a.handlers = append(a.handlers, h) }

// Start opens every handler of the config; an error fails the config's
// load, as a failed Provision would.
func (a *App) Start() error {
	for _, h := range a.handlers {
		if err := h.start(); err != nil {
			return err
		}
	}
	return nil
}

// Stop has nothing to do: the handlers close in their Cleanup, once the
// config's servers have stopped.
func (a *App) Stop() error { return nil }

var _ caddy.App = (*App)(nil)
