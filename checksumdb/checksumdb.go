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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/fetcher"
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
	// database: <URL>/supported is asked before it is used.
	Probe   bool
	Client  *http.Client
	Tiers   *cachetier.Tiered
	Timeout time.Duration // bound on one remote read; default 30s
	Logger  *zap.Logger
}

// DB is one checksum database: a source for the /sumdb/<name>/ proxy
// paths, and a verifier of module hashes.
type DB struct {
	name, key, base string
	probe           bool
	http            *http.Client
	tiers           *cachetier.Tiered
	timeout         time.Duration
	log             *zap.Logger
	client          atomic.Pointer[sumdb.Client]

	mu     sync.Mutex
	latest []byte // the latest verified signed tree (the client's config)

	supportMu      sync.Mutex
	supported      bool
	supportChecked time.Time

	securityErrors atomic.Int64
	notFound       sync.Map // remote path -> *fetcher.Error of its last 404/410
}

// New returns a DB; nothing is fetched until it is used.
func New(cfg Config) (*DB, error) {
	key := cfg.NameOrKey
	if k, ok := KnownKeys[key]; ok {
		key = k
	}
	v, err := note.NewVerifier(key)
	if err != nil {
		return nil, fmt.Errorf("checksum database %q: not a known name or a valid verifier key: %v", cfg.NameOrKey, err)
	}
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
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("checksum database %s: invalid URL %q", v.Name(), cfg.URL)
	}
	d := &DB{
		name:    v.Name(),
		key:     key,
		base:    strings.TrimSuffix(cfg.URL, "/"),
		probe:   cfg.Probe,
		http:    fetcher.SameHostClient(cfg.Client, u.Scheme, u.Host),
		tiers:   cfg.Tiers,
		timeout: cfg.Timeout,
		log:     cfg.Logger,
	}
	if data, _, err := d.tiers.GetBytes(context.Background(), d.configKey()); err == nil {
		d.latest = data
	}
	d.client.Store(sumdb.NewClient(ops{d}))
	return d, nil
}

// Name is the database's name, e.g. sum.golang.org.
func (d *DB) Name() string { return d.name }

// SecurityErrors counts inconsistencies the client found in the database.
func (d *DB) SecurityErrors() int64 { return d.securityErrors.Load() }

func (d *DB) configKey() string { return "sumdb-config/" + d.name + "/latest" }

// CacheKey is the tier key of a verified lookup or tile, given its path
// below the database ("lookup/<mod>@<v>", "tile/8/0/000").
func (d *DB) CacheKey(path string) string { return "sumdb/" + d.name + "/" + path }

// Supported reports whether the database can be reached through its URL.
// For a probed URL the answer is kept for a few minutes.
func (d *DB) Supported(ctx context.Context) bool {
	if !d.probe {
		return true
	}
	d.supportMu.Lock()
	defer d.supportMu.Unlock()
	ttl := 5 * time.Minute
	if !d.supportChecked.IsZero() && time.Since(d.supportChecked) < ttl {
		return d.supported
	}
	_, err := d.Remote(ctx, "/supported")
	d.supported = err == nil
	d.supportChecked = time.Now()
	if err != nil {
		d.log.Info("checksum database not available through the upstream; modules are not verified against it",
			zap.String("sumdb", d.name), zap.Error(err))
	}
	return d.supported
}

// maxRemote bounds one answer: tiles are 8 KiB, lookups and trees far less.
const maxRemote = 1 << 20

// Remote reads path (beginning with '/') from the database's URL.
func (d *DB) Remote(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	source := "checksum database " + d.name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+path, nil)
	if err != nil {
		return nil, &fetcher.Error{Status: http.StatusBadRequest, Msg: "invalid checksum database path", Source: source, Err: err}
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, fetcher.TransportError(ctx, source, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		fe := &fetcher.Error{Status: resp.StatusCode, Msg: firstLine(msg, "not found"), Source: source}
		d.notFound.Store(path, fe)
		return nil, fe
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &fetcher.Error{Status: http.StatusBadGateway, Msg: fmt.Sprintf("%s answered %d", source, resp.StatusCode), Source: source}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRemote+1))
	if err != nil {
		return nil, fetcher.TransportError(ctx, source, err)
	}
	if len(data) > maxRemote {
		return nil, &fetcher.Error{Status: http.StatusBadGateway, Msg: source + " sent an oversized answer", Source: source}
	}
	d.notFound.Delete(path)
	return data, nil
}

func firstLine(b []byte, def string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if line == "" {
		return def
	}
	return line
}

// Lookup verifies the database's record for mod@version (escaped forms as
// in the URL) and returns it as served: a record followed by a signed tree.
func (d *DB) Lookup(ctx context.Context, mod, version, escaped string) ([]byte, error) {
	if _, err := d.lookup(mod, version); err != nil {
		if v, ok := d.notFound.Load("/lookup/" + escaped); ok {
			return nil, v.(*fetcher.Error)
		}
		return nil, d.lookupError(err)
	}
	data, _, err := d.tiers.GetBytes(ctx, d.CacheKey("lookup/"+escaped))
	if err != nil {
		return nil, fmt.Errorf("verified lookup not in cache: %w", err)
	}
	return data, nil
}

// lookup asks the sumdb client. The client remembers failed lookups and
// tiles for its lifetime, which suits one go command but not a server: after
// a failure it is replaced, keeping the verified tree it had reached, so a
// later request tries again without trusting anything less.
func (d *DB) lookup(mod, vers string) ([]string, error) {
	c := d.client.Load()
	lines, err := c.Lookup(mod, vers)
	if err != nil {
		d.client.CompareAndSwap(c, sumdb.NewClient(ops{d}))
	}
	return lines, err
}

func (d *DB) lookupError(err error) error {
	status, msg := http.StatusBadGateway, "checksum database "+d.name+" lookup failed"
	if errors.Is(err, sumdb.ErrSecurity) {
		msg = "checksum database " + d.name + " failed verification (security error)"
	}
	return &fetcher.Error{Status: status, Msg: msg, Source: "checksum database " + d.name, Err: err}
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

// VerifyZip checks a module zip file against the database.
func (d *DB) VerifyZip(mod, version, zipFile string) error {
	h, err := dirhash.HashZip(zipFile, dirhash.Hash1)
	if err != nil {
		return fmt.Errorf("hashing zip: %w", err)
	}
	return d.verify(mod, version, h)
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
		return &fetcher.Error{Status: http.StatusBadGateway, Msg: "checksum database " + d.name + " has no hash for " + mod + "@" + vers, Source: "checksum database " + d.name}
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
	if err := o.d.tiers.StoreBytes(context.Background(), o.d.configKey(), cachetier.MetaFor(new, time.Time{}), o.d.latest); err != nil {
		o.d.log.Warn("saving the checksum database's latest tree failed", zap.Error(err))
	}
	return nil
}

// ReadCache and WriteCache hold what the client has verified: lookups and
// tiles, under the same paths the /sumdb/<name>/ proxy serves them.
func (o ops) ReadCache(file string) ([]byte, error) {
	data, _, err := o.d.tiers.GetBytes(context.Background(), "sumdb/"+file)
	return data, err
}

func (o ops) WriteCache(file string, data []byte) {
	if err := o.d.tiers.StoreBytes(context.Background(), "sumdb/"+file, cachetier.MetaFor(data, time.Time{}), data); err != nil {
		o.d.log.Warn("caching a verified checksum database file failed", zap.String("file", file), zap.Error(err))
	}
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
