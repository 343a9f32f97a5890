package goproxy

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
func (p *Proxy) serveSumDB(w http.ResponseWriter, r *http.Request, rest string, who Subject) {
	name, sub, _ := strings.Cut(rest, "/")
	acc := p.cfg.access
	if acc != nil && !strings.HasPrefix(sub, "lookup/") && !acc.mayReadAny(who) {
		acc.deny(w, who, "the checksum database")
		p.obs.answered("sumdb", "denied", "")
		return
	}
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
		if acc != nil {
			a := artifact.Artifact{Module: mod, Version: ver, Kind: artifact.Mod}
			if d := acc.decide(mod, who); !d.allowed {
				acc.audit(r, who, a, "lookup", d, acc.deny(w, who, mod), "")
				p.obs.answered("sumdb", "denied", "")
				return
			}
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
		p.obs.answered("sumdb", p.writeFetchError(w, r, err, p.cfg.NotFoundTTL), "")
		return
	}
	p.obs.answered("sumdb", "ok", "")
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
		p.obs.sumdbLookup("")
		return nil, false
	}
	defer obj.Close()
	data, err := obj.Content()
	if err != nil {
		return nil, false
	}
	p.obs.sumdbLookup(obj.Tier)
	return data, true
}

// sumdbTile returns a tile the database client verified and cached, or
// the first hashes of a wider one (see checksumdb.DB.CachedTile),
// counting the hit or the miss as for modules.
func (p *Proxy) sumdbTile(db *checksumdb.DB, t tlog.Tile) ([]byte, bool) {
	data, tier, ok := db.CachedTile(t)
	if !ok {
		p.obs.sumdbLookup("")
		return nil, false
	}
	p.obs.sumdbLookup(tier)
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
	level := zapcore.InfoLevel
	if outcome == "error" {
		level, fields = zapcore.WarnLevel, append(fields, zap.Error(err))
	}
	rec := FetchRecord{Time: time.Now().Add(-d), Module: name + path, Kind: "sumdb", Upstream: name,
		Outcome: outcome, Duration: d, Bytes: int64(n)}
	if err != nil {
		rec.Reason = httperr.OneLine(err.Error(), 200)
		if fe, ok := httperr.As(err); ok {
			rec.Reason = fe.Msg
		}
	}
	p.obs.fetched(artifact.Artifact{}, rec, level, "upstream fetch", fields...)
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
