// Command caddy is Caddy with the standard modules and Piraeus, for
// `make run` without xcaddy. It is what xcaddy would generate for
// `xcaddy build --with github.com/piraeus-go/piraeus`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/piraeus-go/piraeus"
)

func main() {
	caddycmd.Main()
}
