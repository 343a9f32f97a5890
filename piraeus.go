// Package piraeus is a Go module proxy (GOPROXY) for the Caddy web server.
//
// Importing it registers everything the plugin provides, the way Caddy
// plugins are laid out for xcaddy:
//
//	xcaddy build --with github.com/piraeus-go/piraeus=./   # from a checkout, until a version is published
//
// registers the HTTP handler http.handlers.goproxy, the Caddyfile directive
// goproxy (ordered before file_server), the admin API routes
// admin.api.goproxy and the `caddy goproxy` command. The protocol core is
// package goproxy, usable as a plain http.Handler without Caddy.
package piraeus

import (
	// The Caddy glue registers its modules, directive and command in init.
	_ "github.com/piraeus-go/piraeus/caddymodule"
)
