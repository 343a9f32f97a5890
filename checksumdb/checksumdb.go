// Package checksumdb proxies a Go checksum database and verifies module
// hashes against it with golang.org/x/mod/sumdb's client, whose signed tree,
// lookups and tiles are kept in the cache tiers once they have been checked.
package checksumdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/singleflight"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/httperr"
	"github.com/piraeus-go/piraeus/internal/zipdir"
)

// KnownKeys are the verifier keys of the public checksum databases the go
// command knows by name.
var KnownKeys = map[string]string{
	"sum.golang.org": "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
}

// Config configures a DB.
type Config struct {
	// NameOrKey is a known database name ("sum.golang.org") or a verifier
	// key ("<name>+<hash>+<key>").
	NameOrKey string
	// URL is where the database is served, e.g. https://sum.golang.org, or
	// a proxy's https://proxy.golang.org/sumdb/sum.golang.org.
	URL string
	// Probe says URL is a proxy's /sumdb/<name> that may not support the
	// database: <URL>/supported is asked first, as the go command does.
	// Only a 404 or 410 means "not proxied there"; the database is then
	// read from DirectURL. Any other failure is retried soon, and until
	// it succeeds nothing can be verified.
	Probe bool
	// DirectURL serves the database when the probed proxy does not;
	// default https://<name>.
	DirectURL string
	Client    *http.Client
	// Cache keeps what the client verified: its signed tree, lookups and
	// tiles, under "sumdb/<name>/..." and "sumdb-config/<name>/latest".
	Cache Cache
	// NotFound remembers the database's not-found answers, shared with
	// the proxy's; nil: none are remembered.
	NotFound *httperr.NotFoundCache
	Timeout  time.Duration // bound on one remote read; default 30s
	Logger   *zap.Logger
	// OnState, if set, hears of every change of the route to the
	// database: "upstream", "direct", "configured" or "unreachable".
	OnState func(name, state string)
	// OnRead, if set, hears of every read from the database, for logs and
	// metrics: the path, its error, how long it took and how many bytes.
	OnRead func(name, path string, err error, d time.Duration, n int)
}

// How long a probed route is used before it is probed again (in the
// background, still using the old one).
const routeTTL = time.Hour

// DB is one checksum database: a source for the /sumdb/<name>/ proxy
// paths, and a verifier of module hashes.
type DB struct {
	name, key  string
	configured endpoint // URL as configured (a proxy's, when probed)
	direct     endpoint // where the database itself is, for a probe's 404
	probe      bool
	cache      Cache
	notFound   *httperr.NotFoundCache
	timeout    time.Duration
	log        *zap.Logger
	onState    func(name, state string)
	client     atomic.Pointer[sumdb.Client]
	lookups    atomic.Int64 // by the current client, see lookup
	route      atomic.Pointer[route]
	probes     singleflight.Group
	readAt     atomic.Int64 // unix nanoseconds: the last read of the signed tree for Ready
	onRead     func(name, path string, err error, d time.Duration, n int)

	mu     sync.Mutex
	latest []byte // the latest verified signed tree (the client's config)
	state  string // the last route state reported

	widthMu sync.Mutex // orders the updates of the widest-tile index

	securityErrors atomic.Int64
}

// Cache is what a DB needs of the cache tiers.
type Cache interface {
	Get(ctx context.Context, key string, check func(*cachetier.Object) error) (*cachetier.Object, error)
	PutSmall(ctx context.Context, key string, meta cachetier.Meta, data []byte, durable bool) error
}

func (d *DB) getBytes(key string) ([]byte, error) {
	data, _, err := d.getFrom(key)
	return data, err
}

// getFrom reads a small object whole, and says which tier held it.
func (d *DB) getFrom(key string) ([]byte, string, error) {
	obj, err := d.cache.Get(context.Background(), key, nil)
	if err != nil {
		return nil, "", err
	}
	defer obj.Close()
	data, err := obj.Content()
	return data, obj.Tier, err
}

func (d *DB) rememberNotFound(path string, e *httperr.Error) {
	if d.notFound != nil {
		d.notFound.Put("sumdb/"+d.name+path, e)
	}
}

func (d *DB) knownNotFound(path string) (*httperr.Error, bool) {
	if d.notFound == nil {
		return nil, false
	}
	return d.notFound.Get("sumdb/" + d.name + path)
}

// endpoint is a base URL with a client that follows redirects only on its
// host.
type endpoint struct {
	base string
	http *http.Client
}

// route is where the database is read from, and since when.
type route struct {
	endpoint
	via     string // "upstream", "direct" or "configured"
	checked time.Time
}

// ParseNameOrKey returns the verifier key of a known database's name or
// of a verifier key itself.
func ParseNameOrKey(nameOrKey string) (string, error) {
	key := nameOrKey
	if k, ok := KnownKeys[key]; ok {
		key = k
	}
	if _, err := note.NewVerifier(key); err != nil {
		return "", fmt.Errorf("checksum database %q: not a known name or a valid verifier key: %v", nameOrKey, err)
	}
	return key, nil
}

// New returns a DB; nothing is fetched until it is used.
func New(cfg Config) (*DB, error) {
	key, err := ParseNameOrKey(cfg.NameOrKey)
	if err != nil {
		return nil, err
	}
	v, _ := note.NewVerifier(key)
	if cfg.URL == "" {
		return nil, fmt.Errorf("checksum database %s: no URL", v.Name())
	}
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.DirectURL == "" {
		cfg.DirectURL = "https://" + v.Name()
	}
	configured, err := newEndpoint(cfg.URL, cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("checksum database %s: %w", v.Name(), err)
	}
	direct, err := newEndpoint(cfg.DirectURL, cfg.Client)
	if err != nil {
		return nil, fmt.Errorf("checksum database %s: %w", v.Name(), err)
	}
	d := &DB{
		name:       v.Name(),
		key:        key,
		configured: configured,
		direct:     direct,
		probe:      cfg.Probe,
		cache:      cfg.Cache,
		notFound:   cfg.NotFound,
		timeout:    cfg.Timeout,
		log:        cfg.Logger,
		onState:    cfg.OnState,
		onRead:     cfg.OnRead,
	}
	if !d.probe {
		d.route.Store(&route{endpoint: configured, via: "configured"})
	}
	if data, err := d.getBytes(d.configKey()); err == nil {
		d.latest = data
	}
	d.client.Store(sumdb.NewClient(ops{d}))
	return d, nil
}

// Close releases idle connections. Reads in flight finish: after a config
// reload, requests of the old config are still being served.
func (d *DB) Close() error {
	d.configured.http.CloseIdleConnections()
	d.direct.http.CloseIdleConnections()
	return nil
}

// Name is the database's name, e.g. sum.golang.org.
func (d *DB) Name() string { return d.name }

// SecurityErrors counts inconsistencies the client found in the database.
func (d *DB) SecurityErrors() int64 { return d.securityErrors.Load() }

func (d *DB) configKey() string { return "sumdb-config/" + d.name + "/latest" }

// CacheKey is the tier key of a verified lookup or tile, given its path
// below the database ("lookup/<mod>@<v>", "tile/8/0/000").
func (d *DB) CacheKey(path string) string { return "sumdb/" + d.name + "/" + path }

func newEndpoint(rawURL string, client *http.Client) (endpoint, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return endpoint{}, fmt.Errorf("invalid URL %q", rawURL)
	}
	return endpoint{base: strings.TrimSuffix(rawURL, "/"), http: fetcher.WithRedirectPolicy(client)}, nil
}

// Ready reports whether the database can be read now: its route is
// known (probing for it, within ctx, if need be) and the last probe did
// not fail.
func (d *DB) Ready(ctx context.Context) error {
	ep, err := d.endpoint(ctx)
	if err != nil {
		return err
	}
	// The route is known; the database behind it must answer too (its
	// signed tree head), checked at most every readyTTL, once for all
	// concurrent callers and detached from them.
	if time.Now().UnixNano()-d.readAt.Load() < int64(readyTTL) {
		return nil
	}
	select {
	case res := <-d.probes.DoChan("ready", func() (any, error) {
		_, err := d.read(context.Background(), ep, "/latest")
		if err == nil {
			d.readAt.Store(time.Now().UnixNano())
		}
		return nil, err
	}):
		if res.Err != nil {
			return d.unreachable(res.Err)
		}
		return nil
	case <-ctx.Done():
		return fetcher.TransportError(ctx, "checksum database "+d.name, ctx.Err())
	}
}

// readyTTL is how long a successful read of the signed tree keeps Ready
// from reading it again.
const readyTTL = 10 * time.Second

// Route says where the database is read from: "configured" (its URL as
// given), "upstream" (through the upstream proxy), "direct" (the upstream
// does not proxy it), or "" before the first probe has answered.
func (d *DB) Route() string {
	if r := d.route.Load(); r != nil {
		return r.via
	}
	return ""
}

// URL is where the database is read from now, or the configured URL
// before the first probe.
func (d *DB) URL() string {
	if r := d.route.Load(); r != nil {
		return r.base
	}
	return d.configured.base
}

// endpoint returns where to read the database from. When the configured
// URL is an upstream's /sumdb/<name> that has not been probed yet, or the
// last probe failed, it probes it, once for all concurrent callers and
// detached from them: a caller that gives up changes nothing, and one
// failed probe (a blip) refuses only the verifications that waited for
// it, never the next ones, which probe again. A route older than
// routeTTL is used while it is probed again in the background.
func (d *DB) endpoint(ctx context.Context) (endpoint, error) {
	if r := d.route.Load(); r != nil {
		if d.probe && time.Since(r.checked) > routeTTL {
			d.probes.DoChan("probe", d.runProbe) // refresh; the answer is not awaited
		}
		return r.endpoint, nil
	}
	select {
	case res := <-d.probes.DoChan("probe", d.runProbe):
		if res.Err != nil {
			return endpoint{}, res.Err
		}
		return res.Val.(endpoint), nil
	case <-ctx.Done():
		return endpoint{}, fetcher.TransportError(ctx, "checksum database "+d.name, ctx.Err())
	}
}

// runProbe asks the upstream whether it proxies the database: 200 means
// yes, 404 or 410 no (the database is then read directly); anything else
// is a failure that leaves the route as it was.
func (d *DB) runProbe() (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	_, err := d.read(ctx, d.configured, "/supported")
	var r *route
	switch {
	case err == nil:
		r = &route{endpoint: d.configured, via: "upstream", checked: time.Now()}
	case httperr.IsNotFound(err):
		r = &route{endpoint: d.direct, via: "direct", checked: time.Now()}
	default:
		if d.route.Load() != nil {
			// A refresh failed: keep reading where it worked before.
			d.log.Warn("probing the upstream for the checksum database failed; keeping the route", zap.String("sumdb", d.name), zap.Error(err))
			return d.route.Load().endpoint, nil
		}
		d.setState("unreachable", err)
		return nil, d.unreachable(err)
	}
	d.route.Store(r)
	d.setState(r.via, nil)
	return r.endpoint, nil
}

func (d *DB) unreachable(err error) error {
	return &httperr.Error{Status: http.StatusBadGateway, Msg: "checksum database " + d.name + " unreachable: module cannot be verified; retry",
		Source: "checksum database " + d.name, Err: err}
}

// setState logs a change of route: at error level when the database
// becomes unreachable (modules it must verify are refused), at info level
// on the first contact and when it answers again, and at warn level when
// a working route gives way to another (the same key verifies either).
func (d *DB) setState(state string, err error) {
	d.mu.Lock()
	prev := d.state
	changed := prev != state
	d.state = state
	d.mu.Unlock()
	if !changed {
		return
	}
	log := d.log.Warn
	if prev == "" || prev == "unreachable" {
		log = d.log.Info
	}
	switch state {
	case "unreachable":
		d.log.Error("checksum database unreachable: modules it must verify are refused (502) until it answers",
			zap.String("sumdb", d.name), zap.String("probed", fetcher.RedactURL(d.configured.base)+"/supported"), zap.Error(err))
	case "upstream":
		log("checksum database verification state: through the upstream proxy", zap.String("sumdb", d.name),
			zap.String("url", fetcher.RedactURL(d.configured.base)), zap.String("was", prev))
	case "direct":
		log("checksum database verification state: the upstream does not proxy it; reading it directly",
			zap.String("sumdb", d.name), zap.String("url", fetcher.RedactURL(d.direct.base)), zap.String("was", prev))
	}
	if d.onState != nil {
		d.onState(d.name, state)
	}
}

// maxRemote bounds one answer: tiles are 8 KiB, lookups and trees far less.
const maxRemote = 1 << 20

// Remote reads path (beginning with '/') from the database, by its current
// route.
func (d *DB) Remote(ctx context.Context, path string) ([]byte, error) {
	ep, err := d.endpoint(ctx)
	if err != nil {
		return nil, err
	}
	return d.read(ctx, ep, path)
}

func (d *DB) read(ctx context.Context, ep endpoint, path string) (data []byte, err error) {
	if d.onRead != nil {
		defer func(start time.Time) { d.onRead(d.name, path, err, time.Since(start), len(data)) }(time.Now())
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	source := "checksum database " + d.name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.base+path, nil)
	if err != nil {
		return nil, &httperr.Error{Status: http.StatusBadRequest, Msg: "invalid checksum database path", Source: source, Err: err}
	}
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := ep.http.Do(req)
	if err != nil {
		return nil, fetcher.TransportError(ctx, source, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		fe := &httperr.Error{Status: resp.StatusCode, Msg: firstLine(msg, "not found", d.name), Source: source}
		d.rememberNotFound(path, fe)
		return nil, fe
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &httperr.Error{Status: http.StatusBadGateway, Msg: fmt.Sprintf("%s answered %d", source, resp.StatusCode), Source: source}
	}
	data, err = io.ReadAll(io.LimitReader(resp.Body, maxRemote+1))
	if err != nil {
		return nil, fetcher.TransportError(ctx, source, err)
	}
	if len(data) > maxRemote {
		return nil, &httperr.Error{Status: http.StatusBadGateway, Msg: source + " sent an oversized answer", Source: source}
	}
	return data, nil
}

func firstLine(b []byte, def string, keep ...string) string {
	if line := fetcher.ClientText(string(b), keep...); line != "" {
		return line
	}
	return def
}

// Lookup verifies the database's record for mod@version (escaped forms as
// in the URL) and returns it as served: a record followed by a signed tree.
func (d *DB) Lookup(ctx context.Context, mod, version, escaped string) ([]byte, error) {
	if _, err := d.lookup(mod, version); err != nil {
		if fe, ok := d.knownNotFound("/lookup/" + escaped); ok {
			return nil, fe
		}
		return nil, d.lookupError(err)
	}
	data, err := d.getBytes(d.CacheKey("lookup/" + escaped))
	if err != nil {
		return nil, fmt.Errorf("verified lookup not in cache: %w", err)
	}
	return data, nil
}

// Warm looks up mod@version's record in the background, so that a
// verification that follows soon (of a .mod or .zip being fetched) finds
// it, and the tiles proving it, already read. Lookups are collapsed by
// the sumdb client; a failure here only makes the verification ask again.
func (d *DB) Warm(mod, version string) {
	go d.lookup(mod, strings.TrimSuffix(version, "/go.mod"))
}

// clientLookups is how many lookups one sumdb client serves before it is
// replaced: it holds every record and tile it read in memory for its
// lifetime (up to three tiles of 8 KiB a lookup), which the tiers already
// keep, bounded.
const clientLookups = 256

// lookup asks the sumdb client. The client remembers failed lookups and
// tiles for its lifetime, which suits one go command but not a server: after
// a failure, or clientLookups lookups, it is replaced, keeping the verified
// tree it had reached (the config it reads), so a later request tries again
// without trusting anything less, and what it held is left to the tiers.
func (d *DB) lookup(mod, vers string) ([]string, error) {
	c := d.client.Load()
	lines, err := c.Lookup(mod, vers)
	if err != nil || d.lookups.Add(1) >= clientLookups {
		if d.client.CompareAndSwap(c, sumdb.NewClient(ops{d})) {
			d.lookups.Store(0)
		}
	}
	return lines, err
}

func (d *DB) lookupError(err error) error {
	status, msg := http.StatusBadGateway, "checksum database "+d.name+" lookup failed"
	if errors.Is(err, sumdb.ErrSecurity) {
		msg = "checksum database " + d.name + " failed verification (security error)"
	}
	return &httperr.Error{Status: status, Msg: msg, Source: "checksum database " + d.name, Err: err}
}

// MismatchError is a module whose hash the database contradicts.
type MismatchError struct {
	Module, Version, Got, Want string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("checksum mismatch for %s@%s: upstream sent %s, checksum database has %s", e.Module, e.Version, e.Got, e.Want)
}

// VerifyMod checks go.mod content against the database.
func (d *DB) VerifyMod(mod, version string, data []byte) error {
	h, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	})
	if err != nil {
		return err
	}
	return d.verify(mod, version+"/go.mod", h)
}

// VerifyZipReader checks a module zip, read in place, against the database.
func (d *DB) VerifyZipReader(mod, version string, r io.ReaderAt, size int64) error {
	h, err := HashZipReader(r, size)
	if err != nil {
		return fmt.Errorf("hashing zip: %w", err)
	}
	return d.verify(mod, version, h)
}

// HashZipReader is dirhash.HashZip (h1:) of a zip read in place, a part
// of its directory at a time (internal/zipdir.Hash1).
func HashZipReader(r io.ReaderAt, size int64) (string, error) {
	return zipdir.Hash1(r, size)
}

func (d *DB) verify(mod, vers, hash string) error {
	lines, err := d.lookup(mod, vers)
	if err != nil {
		return d.lookupError(err)
	}
	prefix := mod + " " + vers + " "
	want := ""
	for _, line := range lines {
		if h, ok := strings.CutPrefix(line, prefix); ok {
			if h == hash {
				return nil
			}
			want = h
		}
	}
	if want == "" {
		return &httperr.Error{Status: http.StatusBadGateway, Msg: "checksum database " + d.name + " has no hash for " + mod + "@" + vers, Source: "checksum database " + d.name}
	}
	return &MismatchError{Module: mod, Version: strings.TrimSuffix(vers, "/go.mod"), Got: hash, Want: want}
}

// ops backs the x/mod sumdb client with this DB's remote and the tiers.
type ops struct{ d *DB }

func (o ops) ReadRemote(path string) ([]byte, error) {
	return o.d.Remote(context.Background(), path)
}

func (o ops) ReadConfig(file string) ([]byte, error) {
	switch file {
	case "key":
		return []byte(o.d.key), nil
	case o.d.name + "/latest":
		o.d.mu.Lock()
		defer o.d.mu.Unlock()
		return bytes.Clone(o.d.latest), nil
	}
	return nil, fmt.Errorf("unknown config %s", file)
}

func (o ops) WriteConfig(file string, old, new []byte) error {
	if file != o.d.name+"/latest" {
		return fmt.Errorf("cannot write config %s", file)
	}
	o.d.mu.Lock()
	defer o.d.mu.Unlock()
	if !bytes.Equal(old, o.d.latest) {
		return sumdb.ErrWriteConflict
	}
	o.d.latest = bytes.Clone(new)
	if err := o.d.cache.PutSmall(context.Background(), o.d.configKey(), cachetier.MetaFor(new, time.Time{}), o.d.latest, true); err != nil {
		o.d.log.Warn("saving the checksum database's latest tree failed", zap.Error(err))
	}
	return nil
}

// ReadCache and WriteCache hold what the client has verified: lookups and
// tiles, under the same paths the /sumdb/<name>/ proxy serves them.
func (o ops) ReadCache(file string) ([]byte, error) {
	data, err := o.d.getBytes("sumdb/" + file)
	return data, err
}

func (o ops) WriteCache(file string, data []byte) {
	if err := o.d.cache.PutSmall(context.Background(), "sumdb/"+file, cachetier.MetaFor(data, time.Time{}), data, true); err != nil {
		o.d.log.Warn("caching a verified checksum database file failed", zap.String("file", file), zap.Error(err))
		return
	}
	if t, err := tlog.ParseTilePath(strings.TrimPrefix(file, o.d.name+"/")); err == nil && t.W < 1<<t.H {
		o.d.noteWidth(t)
	}
}

// A partial tile holds the first W hashes of its full tile; a wider one of
// the same tile holds them too. Clients that have seen other tree sizes
// than this server's client (every lookup answer carries the tree of its
// moment) ask for partial tiles of other widths than it read: the widest
// verified one that the cache holds answers them all. Its width is kept
// under a key of the tile's own (widthKey), raised as wider ones arrive.

func (d *DB) widthKey(t tlog.Tile) string {
	t.W = 1 << t.H
	return "sumdb/" + d.name + "/tile-width/" + t.Path()
}

// noteWidth records that the cache holds tile t, if wider than any other
// partial tile of its place.
func (d *DB) noteWidth(t tlog.Tile) {
	d.widthMu.Lock()
	defer d.widthMu.Unlock()
	if w, ok := d.widest(t); ok && w >= t.W {
		return
	}
	data := []byte(strconv.Itoa(t.W))
	if err := d.cache.PutSmall(context.Background(), d.widthKey(t), cachetier.MetaFor(data, time.Time{}), data, true); err != nil {
		d.log.Warn("caching a checksum database tile's width failed", zap.String("tile", t.Path()), zap.Error(err))
	}
}

// widest is the width of the widest partial tile of t's place that the
// cache holds.
func (d *DB) widest(t tlog.Tile) (int, bool) {
	data, err := d.getBytes(d.widthKey(t))
	if err != nil {
		return 0, false
	}
	w, err := strconv.Atoi(string(data))
	if err != nil || w <= 0 || w >= 1<<t.H {
		return 0, false
	}
	return w, true
}

// CachedTile returns tile t if the cache holds it or a wider one of the
// same place (its full tile, or a wider partial one), all verified by
// this server's client: the first t.W hashes of a wider tile are t. It
// also says which tier held it.
func (d *DB) CachedTile(t tlog.Tile) (data []byte, tier string, ok bool) {
	if data, tier, err := d.getFrom(d.CacheKey(t.Path())); err == nil {
		return data, tier, true
	}
	if t.W == 1<<t.H {
		return nil, "", false
	}
	wider := []tlog.Tile{t, t}
	wider[0].W = 1 << t.H // the full tile, else the widest partial one
	if w, ok := d.widest(t); ok && w > t.W {
		wider[1].W = w
	} else {
		wider = wider[:1]
	}
	want := t.W * tlog.HashSize
	for _, wt := range wider {
		if data, tier, err := d.getFrom(d.CacheKey(wt.Path())); err == nil && len(data) >= want {
			return data[:want:want], tier, true
		}
	}
	return nil, "", false
}

func (o ops) Log(msg string) { o.d.log.Debug(msg, zap.String("sumdb", o.d.name)) }

func (o ops) SecurityError(msg string) {
	o.d.securityErrors.Add(1)
	o.d.log.Error("checksum database security error", zap.String("sumdb", o.d.name), zap.String("detail", msg))
}

// CheckSigned verifies a signed tree head against the database's key.
func (d *DB) CheckSigned(msg []byte) error {
	v, err := note.NewVerifier(d.key)
	if err != nil {
		return err
	}
	_, err = note.Open(msg, note.VerifierList(v))
	return err
}
