// Package vulndb mirrors a Go vulnerability database (the layout of
// https://go.dev/security/vuln/database#api: index/db.json,
// index/modules.json, ID/<id>.json, each also gzipped as .json.gz, which
// govulncheck reads) through the cache tiers: files are refreshed when the
// database's modified time moves on, and served from the cache when the
// source cannot be reached. It also says which entries affect a module
// version, for a gate that refuses vulnerable zips.
package vulndb

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/semver"
	"golang.org/x/sync/singleflight"

	"github.com/piraeus-go/piraeus/cachetier"
)

// Cache is where the database's files are kept: *cachetier.Tiered.
type Cache interface {
	Get(ctx context.Context, key string, check func(*cachetier.Object) error) (*cachetier.Object, error)
	PutSmall(ctx context.Context, key string, meta cachetier.Meta, data []byte, durable bool) error
}

// DefaultCheckEvery is how often the source's index/db.json is asked
// whether the database changed.
const DefaultCheckEvery = 5 * time.Minute

// maxFile bounds a file read from the source (modules.json is about 1 MB).
const maxFile = 64 << 20

var idPattern = regexp.MustCompile(`^GO-\d{4}-\d{4,}$`)

// Config configures a DB.
type Config struct {
	URL        string // the source, e.g. https://vuln.go.dev
	Client     *http.Client
	Cache      Cache
	CheckEvery time.Duration // DefaultCheckEvery when 0
	Logger     *zap.Logger
}

// DB is a mirrored vulnerability database.
type DB struct {
	cfg    Config
	prefix string // of the cache keys, by source
	log    *zap.Logger
	group  singleflight.Group

	mu       sync.Mutex
	checked  time.Time              // when the source was last asked
	modified time.Time              // of the index held
	index    map[string][]indexVuln // module path -> entries
	entries  map[string]*Entry      // parsed, by id
}

type indexVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type indexModule struct {
	Path  string      `json:"path"`
	Vulns []indexVuln `json:"vulns"`
}

// Entry is the part of an OSV entry the gate reads.
type Entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Summary  string    `json:"summary"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Package struct {
			Name      string `json:"name"`
			Ecosystem string `json:"ecosystem"`
		} `json:"package"`
		Ranges []struct {
			Type   string `json:"type"`
			Events []struct {
				Introduced string `json:"introduced,omitempty"`
				Fixed      string `json:"fixed,omitempty"`
			} `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

// Finding is an entry that affects a module version.
type Finding struct {
	ID      string
	Summary string
	Fixed   string // the version that fixes it, "" if none does
}

// New returns a DB over cfg.
func New(cfg Config) (*DB, error) {
	if !strings.HasPrefix(cfg.URL, "https://") && !strings.HasPrefix(cfg.URL, "http://") {
		return nil, fmt.Errorf("vulndb: source %q: want an http:// or https:// URL", cfg.URL)
	}
	cfg.URL = strings.TrimSuffix(cfg.URL, "/")
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	sum := sha256.Sum256([]byte(cfg.URL))
	return &DB{cfg: cfg, prefix: "vulndb/" + hex.EncodeToString(sum[:8]) + "/", log: cfg.Logger,
		entries: map[string]*Entry{}}, nil
}

// URL is the source.
func (d *DB) URL() string { return d.cfg.URL }

// Serve answers a request for a file of the database: rest is the path
// below the mirror's /vuln/.
func (d *DB) Serve(w http.ResponseWriter, r *http.Request, rest string) {
	file, gz := strings.CutSuffix(rest, ".gz")
	if !d.known(file) {
		http.Error(w, "not a file of the vulnerability database: "+quote(rest), http.StatusNotFound)
		return
	}
	data, err := d.file(r.Context(), file)
	if err != nil {
		status := http.StatusBadGateway
		if errors.Is(err, errNotFound) {
			status = http.StatusNotFound
		}
		http.Error(w, err.Error(), status)
		return
	}
	if gz {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(data)
		zw.Close()
		data = b.Bytes()
		w.Header().Set("Content-Type", "application/gzip")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Cache-Control", "public, max-age=60")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

func (d *DB) known(file string) bool {
	switch file {
	case "index/db.json", "index/modules.json", "index/vulns.json":
		return true
	}
	id, ok := strings.CutSuffix(strings.TrimPrefix(file, "ID/"), ".json")
	return ok && strings.HasPrefix(file, "ID/") && idPattern.MatchString(id)
}

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return fmt.Sprintf("%q", s)
}

var errNotFound = errors.New("not in the vulnerability database")

// file returns a file of the database: an index file as of the latest
// modified time the source gave (the cached one when the source cannot
// be reached), an entry as of the index's modified time for it.
func (d *DB) file(ctx context.Context, file string) ([]byte, error) {
	d.refresh(ctx)
	if id, ok := strings.CutPrefix(file, "ID/"); ok {
		id = strings.TrimSuffix(id, ".json")
		_, data, err := d.entry(ctx, id)
		return data, err
	}
	return d.cached(ctx, file, true)
}

// refresh asks the source, at most every CheckEvery, whether the database
// changed, and if so reads its indexes again. A source that cannot be
// reached leaves the cached database in service.
func (d *DB) refresh(ctx context.Context) {
	d.mu.Lock()
	due := time.Since(d.checked) >= d.cfg.CheckEvery || d.index == nil
	d.mu.Unlock()
	if !due {
		return
	}
	d.group.Do("refresh", func() (any, error) {
		err := d.refreshNow(context.WithoutCancel(ctx))
		if err != nil {
			d.log.Warn("vulnerability database source not reached; serving the cached database", zap.String("source", d.cfg.URL), zap.Error(err))
		}
		d.mu.Lock()
		d.checked = time.Now()
		loaded := d.index != nil
		d.mu.Unlock()
		if !loaded {
			d.loadIndex(ctx) // from the cache, when the source is gone
		}
		return nil, nil
	})
}

func (d *DB) refreshNow(ctx context.Context) error {
	data, err := d.fetch(ctx, "index/db.json")
	if err != nil {
		return err
	}
	var meta struct {
		Modified time.Time `json:"modified"`
	}
	if err := json.Unmarshal(data, &meta); err != nil || meta.Modified.IsZero() {
		return fmt.Errorf("index/db.json: not the database's metadata")
	}
	d.mu.Lock()
	same := d.index != nil && meta.Modified.Equal(d.modified)
	d.mu.Unlock()
	if same {
		return nil
	}
	if cached, err := d.cached(ctx, "index/db.json", false); err == nil && bytes.Equal(cached, data) {
		if d.loadIndex(ctx) == nil {
			return nil // the cached indexes are current
		}
	}
	mods, err := d.fetch(ctx, "index/modules.json")
	if err != nil {
		return err
	}
	var index []indexModule
	if err := json.Unmarshal(mods, &index); err != nil {
		return fmt.Errorf("index/modules.json: %v", err)
	}
	if vulns, err := d.fetch(ctx, "index/vulns.json"); err == nil {
		d.store(ctx, "index/vulns.json", vulns)
	}
	d.store(ctx, "index/modules.json", mods)
	d.store(ctx, "index/db.json", data)
	d.setIndex(meta.Modified, index)
	return nil
}

// loadIndex reads the cached indexes into memory.
func (d *DB) loadIndex(ctx context.Context) error {
	data, err := d.cached(ctx, "index/db.json", false)
	if err != nil {
		return err
	}
	var meta struct {
		Modified time.Time `json:"modified"`
	}
	if err := json.Unmarshal(data, &meta); err != nil {
		return err
	}
	mods, err := d.cached(ctx, "index/modules.json", false)
	if err != nil {
		return err
	}
	var index []indexModule
	if err := json.Unmarshal(mods, &index); err != nil {
		return err
	}
	d.setIndex(meta.Modified, index)
	return nil
}

func (d *DB) setIndex(modified time.Time, index []indexModule) {
	m := make(map[string][]indexVuln, len(index))
	for _, im := range index {
		m[im.Path] = im.Vulns
	}
	d.mu.Lock()
	d.index, d.modified = m, modified
	d.mu.Unlock()
}

func (d *DB) fetch(ctx context.Context, file string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.cfg.URL+"/"+file, nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone {
		return nil, errNotFound
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", file, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", file, maxFile)
	}
	if !json.Valid(data) {
		return nil, fmt.Errorf("%s: not JSON", file)
	}
	return data, nil
}

func (d *DB) store(ctx context.Context, file string, data []byte) {
	if err := d.cfg.Cache.PutSmall(ctx, d.prefix+file, cachetier.MetaFor(data, time.Time{}), data, true); err != nil {
		d.log.Warn("caching a vulnerability database file failed", zap.String("file", file), zap.Error(err))
	}
}

// cached returns file from the cache; unless orFetch, only from there.
func (d *DB) cached(ctx context.Context, file string, orFetch bool) ([]byte, error) {
	obj, err := d.cfg.Cache.Get(ctx, d.prefix+file, nil)
	if err == nil {
		defer obj.Close()
		return obj.Content()
	}
	if !orFetch {
		return nil, err
	}
	data, err := d.fetch(ctx, file)
	if err != nil {
		return nil, fmt.Errorf("vulnerability database %s: %w", file, err)
	}
	d.store(ctx, file, data)
	return data, nil
}

// entry returns entry id, parsed and as stored: the cached one if it is
// as recent as the index says, else fetched (the cached one when the
// source cannot be reached).
func (d *DB) entry(ctx context.Context, id string) (*Entry, []byte, error) {
	file := "ID/" + id + ".json"
	want := d.indexModified(id)
	data, err := d.cached(ctx, file, false)
	if err == nil {
		var e Entry
		if json.Unmarshal(data, &e) == nil && !e.Modified.Before(want) {
			return &e, data, nil
		}
	}
	fresh, ferr := d.fetch(ctx, file)
	if ferr != nil {
		if data != nil {
			var e Entry
			if json.Unmarshal(data, &e) == nil {
				return &e, data, nil // stale: the source is not reached
			}
		}
		return nil, nil, fmt.Errorf("vulnerability database %s: %w", file, ferr)
	}
	var e Entry
	if err := json.Unmarshal(fresh, &e); err != nil || e.ID != id {
		return nil, nil, fmt.Errorf("vulnerability database %s: not the entry", file)
	}
	d.store(ctx, file, fresh)
	return &e, fresh, nil
}

func (d *DB) indexModified(id string) time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, vs := range d.index {
		for _, v := range vs {
			if v.ID == id {
				return v.Modified
			}
		}
	}
	return time.Time{}
}

// Affected returns the entries that affect mod@version. An error means
// the database could not be read: the caller fails closed.
func (d *DB) Affected(ctx context.Context, mod, version string) ([]Finding, error) {
	d.refresh(ctx)
	d.mu.Lock()
	loaded, vulns := d.index != nil, d.index[mod]
	d.mu.Unlock()
	if !loaded {
		return nil, errors.New("the vulnerability database has not been read yet and its source cannot be reached")
	}
	var out []Finding
	for _, v := range vulns {
		e, err := d.parsedEntry(ctx, v)
		if err != nil {
			return nil, err
		}
		if e.affects(mod, version) {
			fixed := v.Fixed
			if fixed != "" {
				fixed = "v" + fixed
			}
			out = append(out, Finding{ID: e.ID, Summary: e.Summary, Fixed: fixed})
		}
	}
	return out, nil
}

// AffectedKnown is Affected from what this process holds in memory
// alone (the index and the entries already read), with no I/O: for a
// count taken after an answer, which must not wait for the source.
func (d *DB) AffectedKnown(mod, version string) []Finding {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []Finding
	for _, v := range d.index[mod] {
		e, ok := d.entries[v.ID]
		if !ok || !e.affects(mod, version) {
			continue
		}
		fixed := v.Fixed
		if fixed != "" {
			fixed = "v" + fixed
		}
		out = append(out, Finding{ID: e.ID, Summary: e.Summary, Fixed: fixed})
	}
	return out
}

func (d *DB) parsedEntry(ctx context.Context, v indexVuln) (*Entry, error) {
	d.mu.Lock()
	e, ok := d.entries[v.ID]
	d.mu.Unlock()
	if ok && !e.Modified.Before(v.Modified) {
		return e, nil
	}
	e, _, err := d.entry(ctx, v.ID)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	if len(d.entries) > 1<<14 {
		clear(d.entries)
	}
	d.entries[v.ID] = e
	d.mu.Unlock()
	return e, nil
}

// affects reports whether e's SEMVER ranges for mod hold version.
func (e *Entry) affects(mod, version string) bool {
	for _, a := range e.Affected {
		if a.Package.Name != mod {
			continue
		}
		for _, r := range a.Ranges {
			if r.Type != "SEMVER" {
				continue
			}
			in := false
			for _, ev := range r.Events {
				switch {
				case ev.Introduced != "":
					if ev.Introduced == "0" || semver.Compare(version, "v"+ev.Introduced) >= 0 {
						in = true
					}
				case ev.Fixed != "":
					if semver.Compare(version, "v"+ev.Fixed) >= 0 {
						in = false
					} else if in {
						return true
					}
				}
			}
			if in {
				return true
			}
		}
	}
	return false
}
