package goproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/httperr"
)

// serveSumDB answers /sumdb/<name>/{supported,latest,lookup/...,tile/...}
// so that the go command can reach its checksum database through the proxy.
// Lookups and tiles are served once the sumdb client has verified them;
// the signed tree is checked against the database's key.
func (p *Proxy) serveSumDB(w http.ResponseWriter, r *http.Request, rest string) {
	name, sub, _ := strings.Cut(rest, "/")
	db := p.sumdbs[name]
	if db == nil {
		writeError(w, http.StatusNotFound, "unknown checksum database "+quoteShort(name), 0)
		return
	}
	ctx := r.Context()
	var (
		data      []byte
		err       error
		immutable bool
		ctype     = "text/plain; charset=utf-8"
	)
	switch {
	case sub == "supported":
		// Proxied here, by whichever route the database is reached:
		// lookups and tiles are verified, and served from the cache.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "public, max-age=3600")
		w.WriteHeader(http.StatusOK)
		return
	case sub == "latest":
		data, err = p.sumdbLatest(ctx, db)
	case strings.HasPrefix(sub, "lookup/"):
		mv := strings.TrimPrefix(sub, "lookup/")
		escMod, escVer, _ := strings.Cut(mv, "@")
		mod, errM := module.UnescapePath(escMod)
		ver, errV := module.UnescapeVersion(escVer)
		if errM != nil || errV != nil || module.CanonicalVersion(ver) != ver || module.Check(mod, ver) != nil {
			writeError(w, http.StatusBadRequest, "invalid lookup "+quoteShort(mv)+": want <escaped module>@<canonical version>", 0)
			return
		}
		if p.private(mod) {
			writeError(w, http.StatusNotFound, "private module: not in any checksum database", 0)
			return
		}
		immutable = true
		if cached, ok := p.sumdbHit(ctx, db, sub); ok {
			data = cached // only verified lookups are cached
			break
		}
		data, err = p.collapseBytes(ctx, "sumdb/"+name+"/"+sub, func(ctx context.Context) ([]byte, error) {
			return db.Lookup(ctx, mod, ver, mv)
		})
	case strings.HasPrefix(sub, "tile/"):
		t, perr := tlog.ParseTilePath(sub)
		if perr != nil || t.Path() != sub {
			writeError(w, http.StatusBadRequest, "invalid tile path "+quoteShort(sub), 0)
			return
		}
		ctype = "application/octet-stream"
		if cached, ok := p.sumdbTile(db, t); ok {
			data, immutable = cached, true // verified by the sumdb client
			break
		}
		// Not verified here yet: passed through, not cached; the go
		// command checks every tile it reads against the signed tree.
		data, err = p.collapseBytes(ctx, "sumdb/"+name+"/"+sub, func(ctx context.Context) ([]byte, error) {
			return db.Remote(ctx, "/"+sub)
		})
	default:
		writeError(w, http.StatusNotFound, "unknown checksum database path "+quoteShort(sub), 0)
		return
	}
	if err != nil {
		p.cfg.Metrics.request("sumdb", p.writeFetchError(w, r, err, p.cfg.NotFoundTTL))
		return
	}
	p.cfg.Metrics.request("sumdb", "ok")
	meta := cachetier.MetaFor(data, time.Time{})
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("ETag", meta.ETag())
	switch {
	case immutable:
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	case sub == "latest":
		h.Set("Cache-Control", "public, max-age=60")
	default:
		h.Set("Cache-Control", "no-store")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// sumdbHit returns a lookup or tile the database client verified and
// cached, counting the hit or the miss as for modules.
func (p *Proxy) sumdbHit(ctx context.Context, db *checksumdb.DB, sub string) ([]byte, bool) {
	obj, err := p.cfg.Tiers.Get(ctx, p.CacheKey(db.CacheKey(sub)), nil)
	if err != nil {
		p.cfg.Metrics.miss(artifact.Artifact{})
		p.stats.miss()
		return nil, false
	}
	defer obj.Close()
	data, err := obj.Content()
	if err != nil {
		return nil, false
	}
	p.cfg.Metrics.hit(obj.Tier)
	p.stats.hit(obj.Tier)
	return data, true
}

// sumdbTile returns a tile the database client verified and cached, or
// the first hashes of a wider one (see checksumdb.DB.CachedTile),
// counting the hit or the miss as for modules.
func (p *Proxy) sumdbTile(db *checksumdb.DB, t tlog.Tile) ([]byte, bool) {
	data, tier, ok := db.CachedTile(t)
	if !ok {
		p.cfg.Metrics.miss(artifact.Artifact{})
		p.stats.miss()
		return nil, false
	}
	p.cfg.Metrics.hit(tier)
	p.stats.hit(tier)
	return data, true
}

// sumdbFetched logs and counts a read from a checksum database as an
// upstream fetch (kind "sumdb"); checksumdb.Config.OnRead.
func (p *Proxy) sumdbFetched(name, path string, err error, d time.Duration, n int) {
	outcome := "ok"
	switch {
	case httperr.IsNotFound(err):
		outcome = "not_found"
	case err != nil:
		outcome = "error"
	}
	fields := []zap.Field{zap.String("sumdb", name), zap.String("path", path), zap.String("kind", "sumdb"),
		zap.Duration("duration", d), zap.Int("bytes", n), zap.String("outcome", outcome)}
	if err != nil && outcome == "error" {
		p.log.Warn("upstream fetch", append(fields, zap.Error(err))...)
	} else {
		p.log.Info("upstream fetch", fields...)
	}
	p.cfg.Metrics.fetch(artifact.Artifact{}, name, outcome, d)
	p.stats.fetched(FetchRecord{Time: time.Now().Add(-d), Module: name + path, Kind: "sumdb", Upstream: name,
		Outcome: outcome, Duration: d, Bytes: int64(n)})
}

// sumdbLatest serves the database's signed tree head, kept for ListTTL
// and served stale when the database cannot be reached.
func (p *Proxy) sumdbLatest(ctx context.Context, db *checksumdb.DB) ([]byte, error) {
	key := p.CacheKey(db.CacheKey("latest"))
	stale, meta, err := getBytes(ctx, p.cfg.Tiers, key)
	if err == nil && meta.Fresh(time.Now()) {
		return stale, nil
	}
	data, err := p.collapseBytes(ctx, key, func(ctx context.Context) ([]byte, error) {
		data, err := db.Remote(ctx, "/latest")
		if err != nil {
			return nil, err
		}
		if err := db.CheckSigned(data); err != nil {
			return nil, &httperr.Error{Status: http.StatusBadGateway, Msg: "checksum database " + db.Name() + " sent a tree that fails its signature", Source: db.Name(), Err: err}
		}
		if err := p.cfg.Tiers.PutSmall(ctx, key, cachetier.MetaFor(data, time.Now().Add(p.cfg.ListTTL)), data, true); err != nil {
			p.log.Warn("caching checksum database tree failed", zap.Error(err))
		}
		return data, nil
	})
	if err != nil && stale != nil && !httperr.IsNotFound(err) {
		p.log.Warn("checksum database unreachable; serving stale tree", zap.String("sumdb", db.Name()), zap.Error(err))
		return stale, nil
	}
	return data, err
}

// getBytes reads a small object whole.
func getBytes(ctx context.Context, c Cache, key string) ([]byte, cachetier.Meta, error) {
	obj, err := c.Get(ctx, key, nil)
	if err != nil {
		return nil, cachetier.Meta{}, err
	}
	defer obj.Close()
	data, err := obj.Content()
	return data, obj.Meta, err
}

// collapseBytes runs fn once for concurrent callers with the same key,
// detached from any one caller and bounded by FetchTimeout.
func (p *Proxy) collapseBytes(ctx context.Context, key string, fn func(context.Context) ([]byte, error)) ([]byte, error) {
	ch := p.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.FetchTimeout)
		defer cancel()
		return fn(fctx)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.([]byte), nil
	}
}

// verifier returns the checksum database that must vouch for a fetched
// .mod or .zip, or nil and why none does.
func (p *Proxy) verifier(a artifact.Artifact) (*checksumdb.DB, string) {
	switch {
	case p.private(a.Module):
		return nil, "private"
	case p.cfg.NoVerify.Match(a.Module):
		return nil, "verify_off"
	case p.cfg.Verifier == nil:
		return nil, "no_sumdb"
	}
	return p.cfg.Verifier, ""
}

// verify checks a fetched .mod (data) or .zip (zipFile) before it is
// stored. A module that no database verifies (private, verify off, no
// database configured) is logged at error level and counted, once per
// fetch: what is cached forever unverified must be visible.
func (p *Proxy) verify(a artifact.Artifact, data []byte, zip io.ReaderAt, zipSize int64) error {
	if !a.Immutable() || (a.Kind != artifact.Mod && a.Kind != artifact.Zip) {
		return nil
	}
	db, reason := p.verifier(a)
	if db == nil {
		p.cfg.Metrics.unverified(reason)
		p.stats.storedUnverified(reason)
		p.log.Error("module stored without checksum verification", zap.String("module", a.Module), zap.String("version", a.Version),
			zap.Stringer("kind", a.Kind), zap.String("reason", reason))
		return nil
	}
	var err error
	if a.Kind == artifact.Mod {
		err = db.VerifyMod(a.Module, a.Version, data)
	} else {
		err = db.VerifyZipReader(a.Module, a.Version, zip, zipSize)
	}
	if err == nil {
		return nil
	}
	var mm *checksumdb.MismatchError
	if errors.As(err, &mm) {
		p.verifyFailures.Add(1)
		p.cfg.Metrics.verifyFailure()
		p.log.Error("checksum mismatch: not caching or serving", zap.String("module", a.Module), zap.String("version", a.Version),
			zap.Stringer("kind", a.Kind), zap.String("got", mm.Got), zap.String("want", mm.Want), zap.String("sumdb", db.Name()))
		return &httperr.Error{Status: http.StatusBadGateway, Msg: "SECURITY ERROR: " + mm.Error(), Source: db.Name(), Err: err}
	}
	var fe *httperr.Error
	if errors.As(err, &fe) {
		return fe
	}
	return &httperr.Error{Status: http.StatusBadGateway, Msg: "verifying against checksum database " + db.Name() + " failed", Source: db.Name(), Err: err}
}

// checkShared returns the check of a .mod or .zip read from a tier that
// other nodes write: its hash must match the checksum database's record
// (which the database client verified), as a fetched one must. A value
// the database contradicts is rejected (deleted from that tier); when the
// database cannot be asked, the value is skipped and fetched instead.
func (p *Proxy) checkShared(a artifact.Artifact) func(*cachetier.Object) error {
	if !a.Immutable() || (a.Kind != artifact.Mod && a.Kind != artifact.Zip) {
		return nil
	}
	db, _ := p.verifier(a)
	if db == nil {
		return nil // nothing to check against: the tier checked key and hash
	}
	return func(obj *cachetier.Object) error {
		var err error
		if a.Kind == artifact.Mod {
			var data []byte
			if data, err = obj.Content(); err != nil {
				return err
			}
			err = db.VerifyMod(a.Module, a.Version, data)
		} else {
			// Read in place (a bucket's large objects are spooled to a
			// file): a zip is never held whole in memory to be checked.
			err = db.VerifyZipReader(a.Module, a.Version, obj.ReaderAt(), obj.Size)
		}
		var mm *checksumdb.MismatchError
		if errors.As(err, &mm) {
			p.verifyFailures.Add(1)
			p.cfg.Metrics.verifyFailure()
			return fmt.Errorf("%w: %v", cachetier.ErrRejected, mm)
		}
		return err
	}
}

func (p *Proxy) private(mod string) bool {
	return p.cfg.Private.Covers(mod)
}

func quoteShort(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return `"` + strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f || r == '"' {
			return '?'
		}
		return r
	}, s) + `"`
}
