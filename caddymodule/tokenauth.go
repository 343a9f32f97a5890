package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/caddyauth"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/accesstoken"
)

func init() {
	caddy.RegisterModule(TokenAuth{})
	httpcaddyfile.RegisterHandlerDirective("goproxy_token", parseTokenAuth)
	httpcaddyfile.RegisterDirectiveOrder("goproxy_token", httpcaddyfile.After, "basic_auth")
}

// TokenAuth is an authentication provider (for Caddy's authentication
// handler) that accepts the access tokens `caddy goproxy token create`
// issues: as the password of HTTP basic auth (a netrc line, whatever its
// login) or as a bearer token (a GOAUTH command). The user it
// authenticates is the token's, with {http.auth.user.groups} its groups
// and {http.auth.user.token} its id. Tokens are those of the config's
// goproxy handlers.
type TokenAuth struct {
	// Realm is the realm of the challenge sent when no valid token came.
	// Default "Go modules".
	Realm string `json:"realm,omitempty"`

	app    *App
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (TokenAuth) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.authentication.providers.goproxy_token",
		New: func() caddy.Module { return new(TokenAuth) },
	}
}

// Provision finds the config's goproxy handlers, whose tiers hold the
// tokens.
func (a *TokenAuth) Provision(ctx caddy.Context) error {
	app, err := ctx.App("goproxy")
	if err != nil {
		return fmt.Errorf("goproxy_token: %w", err)
	}
	a.app, a.logger = app.(*App), ctx.Logger()
	if a.Realm == "" {
		a.Realm = "Go modules"
	}
	if strings.ContainsAny(a.Realm, "\"\\\r\n") {
		return fmt.Errorf("goproxy_token: realm %q may not hold quotes, backslashes or line breaks", a.Realm)
	}
	return nil
}

// bearerOrPassword is the token a request carries, if any.
func bearerOrPassword(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if _, pw, ok := r.BasicAuth(); ok {
		return pw
	}
	return ""
}

// Authenticate accepts a request that carries a valid token.
func (a *TokenAuth) Authenticate(w http.ResponseWriter, r *http.Request) (caddyauth.User, bool, error) {
	raw := bearerOrPassword(r)
	if raw == "" {
		return a.challenge(w)
	}
	var errs []error
	for _, h := range a.app.handlers {
		if err := h.start(); err != nil {
			errs = append(errs, err)
			continue
		}
		tok, err := h.tokens.Check(r.Context(), raw)
		if err == nil {
			return caddyauth.User{ID: tok.User, Metadata: map[string]string{
				"groups": strings.Join(tok.Groups, ","), "token": tok.ID}}, true, nil
		}
		if !errors.Is(err, accesstoken.ErrInvalid) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 || len(a.app.handlers) == 0 {
		// Fails closed: a token that cannot be checked (a shared tier
		// unreachable) is not taken.
		a.logger.Error("access token could not be checked; refusing it", zap.Errors("errors", errs))
		return caddyauth.User{}, false, caddyhttp.Error(http.StatusServiceUnavailable, errors.New("access tokens cannot be checked now"))
	}
	return a.challenge(w)
}

func (a *TokenAuth) challenge(w http.ResponseWriter) (caddyauth.User, bool, error) {
	w.Header().Set("WWW-Authenticate", `Basic realm="`+a.Realm+`"`)
	return caddyauth.User{}, false, nil
}

// parseTokenAuth reads
//
//	goproxy_token [<matcher>] [{
//		realm <name>
//	}]
//
// as Caddy's authentication handler with this provider.
func parseTokenAuth(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	h.Next() // the directive's name
	if h.NextArg() {
		return nil, h.ArgErr()
	}
	var ta TokenAuth
	for h.NextBlock(0) {
		switch h.Val() {
		case "realm":
			if !h.NextArg() {
				return nil, h.ArgErr()
			}
			ta.Realm = h.Val()
			if h.NextArg() {
				return nil, h.ArgErr()
			}
		default:
			return nil, h.Errf("unknown goproxy_token subdirective %q", h.Val())
		}
	}
	return &caddyauth.Authentication{ProvidersRaw: caddy.ModuleMap{"goproxy_token": caddyconfig.JSON(ta, nil)}}, nil
}

var (
	_ caddy.Provisioner       = (*TokenAuth)(nil)
	_ caddyauth.Authenticator = (*TokenAuth)(nil)
)
