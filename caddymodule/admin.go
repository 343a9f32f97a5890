package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/accesstoken"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/goproxy"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// live holds the provisioned handlers, for the admin API.
var live = struct {
	sync.Mutex
	handlers map[*Handler]struct{}
}{handlers: map[*Handler]struct{}{}}

func register(h *Handler) {
	live.Lock()
	live.handlers[h] = struct{}{}
	live.Unlock()
}

func unregister(h *Handler) {
	live.Lock()
	delete(live.handlers, h)
	live.Unlock()
}

// proxies returns one proxy per distinct cache among the live handlers:
// handlers with the same namespace (upstreams, private patterns,
// verification) on the same tier of record share what they hold.
func proxies() []*goproxy.Proxy {
	live.Lock()
	defer live.Unlock()
	seen := map[string]bool{}
	var ps []*goproxy.Proxy
	for h := range live.handlers {
		key := h.proxy.CacheKey("") + fmt.Sprintf("@%p", h.tiers.Store())
		if !seen[key] {
			seen[key] = true
			ps = append(ps, h.proxy)
		}
	}
	return ps
}

// AdminAPI adds routes to Caddy's admin endpoint (never to a site):
//
//	POST /goproxy/warm    body: a go.mod or go.sum; answers NDJSON progress
//	POST /goproxy/purge   ?module=<path>&version=<version>
//	/goproxy/tokens       POST {user, groups, ttl}: issue; GET: list; DELETE ?id=: revoke
//	POST /goproxy/accept  ?mod=<path>@<version>: take the content last refused as changed
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.goproxy",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/goproxy/warm", Handler: caddy.AdminHandlerFunc(a.warm)},
		{Pattern: "/goproxy/purge", Handler: caddy.AdminHandlerFunc(a.purge)},
		{Pattern: "/goproxy/tokens", Handler: caddy.AdminHandlerFunc(a.tokens)},
		{Pattern: "/goproxy/accept", Handler: caddy.AdminHandlerFunc(a.accept)},
	}
}

// WarmSummary ends a warm answer.
type WarmSummary struct {
	Done    bool `json:"done"`
	Total   int  `json:"total"`
	Cached  int  `json:"cached"`
	Fetched int  `json:"fetched"`
	Failed  int  `json:"failed"`
}

// maxWarmBody bounds the go.mod or go.sum given to warm.
const maxWarmBody = 16 << 20

func (a *AdminAPI) warm(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use POST with a go.mod or go.sum as the body")}
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxWarmBody+1))
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	if len(data) > maxWarmBody {
		return caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("a go.mod or go.sum of at most %d bytes", maxWarmBody)}
	}
	items, err := goproxy.WarmList(data)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	auditAdmin(r, "warm", zap.Int("modules", len(items)))
	ps := proxies()
	if len(ps) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("no goproxy handler is loaded")}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	sum := WarmSummary{Done: true, Total: len(items) * len(ps)}
	for _, p := range ps {
		p.Warm(r.Context(), items, func(res goproxy.WarmResult) {
			switch res.Status {
			case "cached":
				sum.Cached++
			case "fetched":
				sum.Fetched++
			default:
				sum.Failed++
			}
			enc.Encode(res)
			if flusher != nil {
				flusher.Flush()
			}
		})
	}
	return enc.Encode(sum)
}

func (a *AdminAPI) purge(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost && r.Method != http.MethodDelete {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use POST or DELETE")}
	}
	mod, version := r.URL.Query().Get("module"), r.URL.Query().Get("version")
	if mv := r.URL.Query().Get("mod"); mv != "" {
		mod, version, _ = strings.Cut(mv, "@")
	}
	ps := proxies()
	for _, p := range ps {
		if err := p.PurgeVersion(r.Context(), mod, version); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
	}
	auditAdmin(r, "purge", zap.String("module", mod), zap.String("version", version))
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"purged": mod + "@" + version, "caches": len(ps)})
}

// accept makes the content last refused for a version whose tag moved
// (of its .mod or .zip) the version's content, on every cache.
func (a *AdminAPI) accept(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use POST")}
	}
	mv := r.URL.Query().Get("mod")
	mod, version, ok := strings.Cut(mv, "@")
	if !ok {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("want ?mod=<module>@<version>, not %q", mv)}
	}
	ps := proxies()
	if len(ps) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("no goproxy handler is loaded")}
	}
	kinds := map[string]bool{}
	var errs []error
	for _, p := range ps {
		ks, err := p.AcceptChanged(r.Context(), mod, version)
		if err != nil {
			errs = append(errs, err)
		}
		for _, k := range ks {
			kinds[k] = true
		}
	}
	if len(kinds) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.Join(errs...)}
	}
	accepted := slices.Sorted(maps.Keys(kinds))
	auditAdmin(r, "accept", zap.String("module", mod), zap.String("version", version), zap.Strings("kinds", accepted))
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]any{"accepted": mv, "kinds": accepted})
}

// auditAdmin writes an operation of the admin API to the audit trail:
// who asked (the client certificate of Caddy's remote admin endpoint,
// if any) and from where.
func auditAdmin(r *http.Request, op string, fields ...zap.Field) {
	var by string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		by = r.TLS.PeerCertificates[0].Subject.String()
	}
	auditLog().Info("admin "+op, append([]zap.Field{zap.String("admin", by), zap.String("client", r.RemoteAddr)}, fields...)...)
}

// auditLog is the audit logger of the running config (its handlers'), so
// that the config's log settings for http.handlers.goproxy.audit apply.
func auditLog() *zap.Logger {
	live.Lock()
	defer live.Unlock()
	for h := range live.handlers {
		if h.logger != nil {
			return h.logger.Named("audit")
		}
	}
	return caddy.Log().Named(auditLogger)
}

var _ caddy.AdminRouter = (*AdminAPI)(nil)

// tokenStores returns one token store per distinct tier of record among
// the live handlers.
func tokenStores() []*accesstoken.Store {
	live.Lock()
	defer live.Unlock()
	seen := map[cachetier.Store]bool{}
	var ss []*accesstoken.Store
	for h := range live.handlers {
		if st := h.tiers.Store(); !seen[st] && h.tokens != nil {
			seen[st] = true
			ss = append(ss, h.tokens)
		}
	}
	return ss
}

// TokenRequest asks the admin API for a token.
type TokenRequest struct {
	User   string         `json:"user"`
	Groups []string       `json:"groups,omitempty"`
	TTL    caddy.Duration `json:"ttl"`
}

// TokenCreated is the admin API's answer to a TokenRequest: the token,
// shown this once, and its record.
type TokenCreated struct {
	Secret string `json:"token"`
	accesstoken.Token
}

// tokens serves /goproxy/tokens: POST a TokenRequest to issue a token,
// GET to list them, DELETE ?id=<id> to revoke one.
func (a *AdminAPI) tokens(w http.ResponseWriter, r *http.Request) error {
	stores := tokenStores()
	if len(stores) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("no goproxy handler is loaded")}
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.Method {
	case http.MethodPost:
		var req TokenRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("want a JSON body {user, groups, ttl}: %v", err)}
		}
		raw, tok, err := accesstoken.NewToken(req.User, req.Groups, time.Duration(req.TTL), time.Now())
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		for _, s := range stores {
			if err := s.Add(r.Context(), tok); err != nil {
				return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
			}
		}
		tok.SHA256 = ""
		auditAdmin(r, "token create", zap.String("token", tok.ID), zap.String("user", tok.User),
			zap.Strings("groups", tok.Groups), zap.Time("expires", tok.Expires))
		return json.NewEncoder(w).Encode(TokenCreated{Secret: raw, Token: tok})
	case http.MethodGet:
		seen := map[string]bool{}
		toks := []accesstoken.Token{}
		for _, s := range stores {
			list, err := s.List(r.Context())
			if err != nil {
				return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err}
			}
			for _, t := range list {
				if !seen[t.ID] {
					seen[t.ID] = true
					toks = append(toks, t)
				}
			}
		}
		return json.NewEncoder(w).Encode(toks)
	case http.MethodDelete:
		id := r.URL.Query().Get("id")
		var errs []error
		revoked := 0
		for _, s := range stores {
			if err := s.Revoke(r.Context(), id); err != nil {
				errs = append(errs, err)
			} else {
				revoked++
			}
		}
		if revoked == 0 {
			return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: errors.Join(errs...)}
		}
		auditAdmin(r, "token revoke", zap.String("token", id))
		return json.NewEncoder(w).Encode(map[string]any{"revoked": id})
	}
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use POST, GET or DELETE")}
}
