package goproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/fetcher"
	"github.com/piraeus-go/piraeus/httperr"
)

// fetched is what a fetch produced: the object, which every request that
// waited for the fetch clones (a file is shared, never opened again by
// name, which eviction may already have removed).
type fetched struct {
	obj *cachetier.Object
}

func (f *fetched) size() int64 {
	if f == nil {
		return 0
	}
	return f.obj.Size
}

// flight is one fetch that the concurrent requests for an artifact share.
// It knows how many of them still have to take the result or give up, so
// that the fetched object's own handle is released with the last of them.
type flight struct {
	done  chan struct{}
	f     *fetched
	err   error
	users int // the fetch itself, and each request that joined; under Proxy.mu
	// prefetch: a prefetch started it and no client has joined it yet;
	// under Proxy.mu.
	prefetch bool
	// early: the client that started it may have a .mod's lookup start
	// with its upstream fetch (see earlyLookup); set at the start.
	early bool
}

// leave ends one user's part in fl; the last one releases the object.
func (p *Proxy) leave(fl *flight) {
	p.mu.Lock()
	fl.users--
	last := fl.users == 0
	p.mu.Unlock()
	if last && fl.f != nil {
		fl.f.obj.Close()
	}
}

// cached returns a usable cached copy of a as a fetch result.
func (p *Proxy) cached(ctx context.Context, a artifact.Artifact) (*fetched, bool) {
	obj, err := p.cfg.Tiers.Get(ctx, p.key(a), p.checkShared(a))
	if err != nil {
		return nil, false
	}
	if !obj.Fresh(time.Now()) {
		obj.Close()
		return nil, false
	}
	return &fetched{obj: obj}, true
}

// fromTransfer copies an object that another node fetched and handed over
// through Redis, checks it as an upstream answer is checked, and stores it
// in this node's tiers.
func (p *Proxy) fromTransfer(ctx context.Context, a artifact.Artifact) (*fetched, bool) {
	if p.cfg.Fleet == nil || !a.Immutable() {
		return nil, false
	}
	want, r, err := p.cfg.Fleet.GetTransfer(ctx, p.key(a))
	if err != nil {
		return nil, false
	}
	spool, err := p.cfg.Tiers.NewSpool(p.key(a))
	if err != nil {
		return nil, false
	}
	defer spool.Close()
	if err := spool.Fill(r, a.Kind.MaxSize()); err != nil {
		p.log.Warn("copying a large object from another node failed; fetching it", zap.Stringer("artifact", a), zap.Error(err))
		return nil, false
	}
	got := spool.Meta(time.Time{})
	if got.Size != want.Size || got.Sum != want.Sum {
		p.log.Error("a large object from another node does not match its hash; fetching it", zap.Stringer("artifact", a))
		return nil, false
	}
	// The header's hash is Redis' word only: the object passes the checks
	// of an upstream answer before it is served or stored.
	if _, err := p.checkSpooled(a, "peer", spool); err != nil {
		p.log.Error("a large object from another node failed verification; fetching it", zap.Stringer("artifact", a), zap.Error(err))
		p.cfg.Fleet.DeleteTransfer(ctx, p.key(a))
		return nil, false
	}
	obj, err := p.cfg.Tiers.Commit(ctx, p.key(a), spool, got)
	if err != nil {
		p.log.Warn("storing a large object from another node failed; serving it uncached", zap.Stringer("artifact", a), zap.Error(err))
	}
	return &fetched{obj: obj}, true
}

// checkSpooled runs every check of an answer on its spooled content, from
// an upstream or another node alike: its format (artifact.CheckContent,
// artifact.CheckZip), and the checksum database's record (verify). It
// returns the content of an object other than a zip.
func (p *Proxy) checkSpooled(a artifact.Artifact, source string, spool *cachetier.Spool) ([]byte, error) {
	var small []byte
	if a.Kind != artifact.Zip {
		var err error
		if small, err = io.ReadAll(spool.Reader()); err != nil {
			return nil, fmt.Errorf("reading spool: %w", err)
		}
	}
	var err error
	if a.Kind == artifact.Zip {
		// A zip, however small, is a file of its own on disk (sent with
		// sendfile, and never in the disk tier's small store): a spool
		// held in memory goes to its file first.
		if err = spool.OnDisk(); err == nil {
			err = artifact.CheckZip(a, spool.ReaderAt(), spool.Size())
		}
	} else {
		err = artifact.CheckContent(a, small)
	}
	if err == nil && a.Kind == artifact.Mod {
		if v, _ := p.verifier(a); v == nil {
			// Nothing vouches for an unverified go.mod but its form.
			err = artifact.RequireModuleLine(small)
		}
	}
	if errors.Is(err, cachetier.ErrStorage) {
		return nil, &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage failed; retry", Source: "cache", Err: err}
	}
	if err != nil {
		return nil, invalid(source, a, err.Error())
	}
	if err := p.verify(a, small, spool.ReaderAt(), spool.Size()); err != nil {
		return nil, err
	}
	if a.Kind == artifact.Info && a.Immutable() && source == "direct" {
		p.noteFirstSeen(a) // the floor of its publication time
	}
	return small, nil
}

// collapse joins or starts the one fetch for a and returns a handle of
// its own on the result. The fetch runs detached from every request.
func (p *Proxy) collapse(ctx context.Context, a artifact.Artifact) (*cachetier.Object, error) {
	fl := p.join(a, false, earlyLookupFrom(ctx))
	return p.await(ctx, fl)
}

type earlyLookupKey struct{}

// withEarlyLookup marks a client's request whose .mod miss may have its
// checksum-database lookup start with the upstream fetch.
func withEarlyLookup(ctx context.Context) context.Context {
	return context.WithValue(ctx, earlyLookupKey{}, true)
}

func earlyLookupFrom(ctx context.Context) bool {
	early, _ := ctx.Value(earlyLookupKey{}).(bool)
	return early
}

// join returns the fetch of a in progress, starting it if there is none,
// with the caller counted as one of its users: await must follow. A fetch
// that a prefetch starts (byPrefetch) may be dropped (admitPrefetch) until
// a client joins it. A prefetch joins no fetch in progress: it gets nil.
func (p *Proxy) join(a artifact.Artifact, byPrefetch, early bool) *flight {
	key := p.key(a)
	p.mu.Lock()
	defer p.mu.Unlock()
	fl, joined := p.fetches[key]
	switch {
	case !joined && p.closed:
		// A request of a config being replaced: the new one fetches.
		fl = &flight{done: make(chan struct{}), users: 1, err: &httperr.Error{Status: http.StatusServiceUnavailable,
			Msg: "the proxy is shutting down; retry", Source: "proxy"}}
		close(fl.done)
	case !joined:
		fl = &flight{done: make(chan struct{}), users: 1, prefetch: byPrefetch, early: early}
		p.fetches[key] = fl
		p.running++
		go func() {
			fl.f, fl.err = p.fetch(a, fl)
			p.mu.Lock()
			if p.fetches[key] == fl { // not dropped (admitPrefetch)
				delete(p.fetches, key) // later requests start a fetch of their own
			}
			if p.running--; p.running == 0 && p.closed {
				close(p.idle)
			}
			p.mu.Unlock()
			close(fl.done)
			p.leave(fl)
		}()
	case byPrefetch:
		// A client's fetch of it is running: the artifact comes without
		// the prefetch, which is not counted as one.
		return nil
	default:
		p.obs.waiter()
		if fl.prefetch {
			// A client joins a prefetch that started before the
			// prefetcher heard of the client: the prefetch was useful.
			p.prefetch.requested(a, key)
		}
		fl.prefetch = false // a client's now: never dropped
	}
	fl.users++
	return fl
}

// admitPrefetch decides, once the upstream has answered, whether a fetch
// that a prefetch started goes on: always once a client has joined it,
// otherwise if its body of size bytes fits the bytes left to prefetch. A
// dropped fetch leaves the flights at once, under the lock joining takes,
// so a client either joined it before (and it goes on) or starts its own.
func (p *Proxy) admitPrefetch(a artifact.Artifact, fl *flight, size int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !fl.prefetch {
		return nil
	}
	key := p.key(a)
	if err := p.prefetch.admit(a, key, size); err != nil {
		if p.fetches[key] == fl {
			delete(p.fetches, key)
		}
		return err
	}
	return nil
}

// await waits for a flight the caller joined and returns a handle of its
// own on the result.
func (p *Proxy) await(ctx context.Context, fl *flight) (*cachetier.Object, error) {
	defer p.leave(fl)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-fl.done:
	}
	if fl.err != nil {
		return nil, fl.err
	}
	return fl.f.obj.Clone(), nil
}

// fetch runs once per collapsed miss. It is detached from the request that
// started it, so one impatient client cannot fail the others, and bounded
// by FetchTimeout.
func (p *Proxy) fetch(a artifact.Artifact, fl *flight) (*fetched, error) {
	ctx, cancel := context.WithTimeout(p.stop, p.cfg.FetchTimeout)
	defer cancel()
	start := time.Now()
	f, source, err := p.fetchAndStore(ctx, a, fl)
	fields := []zap.Field{
		zap.String("module", a.Module), zap.String("version", a.Version), zap.Stringer("kind", a.Kind),
		zap.String("upstream", source), zap.Duration("duration", time.Since(start)), zap.Int64("bytes", f.size()),
	}
	rec := FetchRecord{Time: start, Module: a.Module, Version: a.Version, Kind: a.Kind.String(), Upstream: source,
		Duration: time.Since(start), Bytes: f.size()}
	if fe, ok := httperr.As(err); ok {
		rec.Reason = fe.Msg
	} else if err != nil {
		rec.Reason = httperr.OneLine(err.Error(), 200)
	}
	switch {
	case source == "cache":
		// Stored (or found missing) by a fetch that had just ended.
		return f, err
	case errors.Is(err, errPrefetchBudget):
		p.log.Debug("prefetch dropped: its body does not fit the bytes left to prefetch", fields...)
		return f, err
	case err == nil && source == "peer":
		rec.Outcome = "peer"
		p.obs.fetched(a, rec, zapcore.DebugLevel, "fetched by another node", fields...)
	case err == nil:
		rec.Outcome = "ok"
		p.obs.fetched(a, rec, zapcore.InfoLevel, "upstream fetch", append(fields, zap.String("outcome", "ok"))...)
	case httperr.IsNotFound(err) && source == "peer":
		rec.Outcome = "not_found"
		p.obs.fetched(a, rec, zapcore.DebugLevel, "found missing by another node", fields...)
	case httperr.IsNotFound(err):
		rec.Outcome = "not_found"
		fe := asFetchError(err)
		p.cfg.notFound.PutFor(p.key(a), fe, p.notFoundTTL(a))
		if p.cfg.Fleet != nil {
			p.cfg.Fleet.PutNotFound(ctx, p.key(a), fe.Status, fe.Msg, p.notFoundTTL(a))
		}
		p.obs.fetched(a, rec, zapcore.InfoLevel, "upstream fetch", append(fields, zap.String("outcome", "not_found"))...)
	default:
		rec.Outcome = "error"
		p.obs.fetched(a, rec, zapcore.WarnLevel, "upstream fetch", append(fields, zap.String("outcome", "error"), zap.Error(err))...)
	}
	return f, err
}

func (p *Proxy) fetchAndStore(ctx context.Context, a artifact.Artifact, fl *flight) (f *fetched, source string, err error) {
	if p.cfg.Fleet != nil {
		unlock, err := p.cfg.Fleet.Lock(ctx, p.key(a))
		switch {
		case err == nil:
			defer unlock()
			// The edges waiting for this lock will look in the shared
			// tier: what this fetch stores there is retried through a
			// failover of Redis (failover_wait), not dropped.
			ctx = cachetier.WithWaiters(ctx)
			// Another node may have stored it, or found it missing,
			// while this one waited.
			if f, ok := p.cached(ctx, a); ok {
				return f, "peer", nil
			}
			if fe, ok := p.knownNotFound(ctx, a); ok {
				return nil, "peer", fe
			}
			if f, ok := p.fromTransfer(ctx, a); ok {
				return f, "peer", nil
			}
		case ctx.Err() != nil:
			return nil, "peer", &httperr.Error{Status: http.StatusGatewayTimeout, Msg: "timed out waiting for another node's fetch", Source: "lock", Err: err}
		case errors.Is(err, cachetier.ErrUnavailable):
			// The connection already warned once that Redis is down.
		default:
			p.log.Warn("fleet lock unavailable; fetching without it", zap.Stringer("artifact", a), zap.Error(err))
		}
	} else {
		// A fetch of a that ended between the requester's look in the
		// cache and the start of this one stored it, or found it
		// missing: no second upstream request.
		if f, ok := p.cached(ctx, a); ok {
			return f, "cache", nil
		}
		if fe, ok := p.cfg.notFound.Get(p.key(a)); ok {
			return nil, "cache", fe
		}
	}
	select {
	case p.fetchSlots <- struct{}{}:
		defer func() { <-p.fetchSlots }()
	case <-ctx.Done():
		return nil, "", &httperr.Error{Status: http.StatusGatewayTimeout, Msg: "timed out waiting for a free upstream fetch", Source: "proxy", Err: ctx.Err()}
	}
	db, _ := p.verifier(a)
	verified := db != nil && a.Immutable() && (a.Kind == artifact.Mod || a.Kind == artifact.Zip)
	if verified && a.Kind == artifact.Mod && fl != nil && fl.early {
		// A .mod is the first a go command asks of a module version, and
		// it waits for the lookup that verifies it: for a client whose
		// .mod requests are being found (see earlyLookup), the checksum
		// database is asked while the upstream is, which takes a round
		// trip to the database off every go.mod of a cold graph walk.
		db.Warm(a.Module, a.Version)
	}
	resp, err := p.fetchBudgeted(ctx, a)
	if err != nil {
		var fe *httperr.Error
		if errors.As(err, &fe) {
			source = fe.Source
		}
		return nil, source, err
	}
	defer resp.Body.Close()
	source = resp.Source
	if err := p.admitPrefetch(a, fl, resp.Size); err != nil {
		return nil, source, &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "prefetch dropped; retry", Source: "prefetch", Err: err}
	}
	if verified && !(a.Kind == artifact.Mod && fl != nil && fl.early) {
		// The checksum database is asked while the body arrives, not
		// after. Not before the upstream has answered: a miss of a
		// module that does not exist costs one request, not two.
		db.Warm(a.Module, a.Version)
	}
	var expires time.Time
	if !a.Immutable() {
		expires = time.Now().Add(p.cfg.ListTTL)
	}

	if a.Query() {
		// A version query must not touch the disk: it is small, so it is
		// read, checked and kept in the memory tiers only.
		data, err := io.ReadAll(io.LimitReader(resp.Body, a.Kind.MaxSize()+1))
		if err != nil {
			return nil, source, bodyError(ctx, source, err)
		}
		if int64(len(data)) > a.Kind.MaxSize() {
			return nil, source, invalid(source, a, "answer too large")
		}
		if err := artifact.CheckContent(a, data); err != nil {
			return nil, source, invalid(source, a, err.Error())
		}
		meta := cachetier.MetaFor(data, expires)
		p.cfg.Tiers.PutSmall(ctx, p.key(a), meta, data, false)
		return &fetched{obj: cachetier.NewBytesObject(meta, data)}, source, nil
	}

	spool, err := p.spool(ctx, a, resp)
	if err != nil {
		return nil, source, err
	}
	defer spool.Close()
	meta := spool.Meta(expires)
	small, err := p.checkSpooled(a, source, spool)
	if err != nil {
		return nil, source, err
	}
	p.prefetch.afterMod(a, small) // in the background
	if a.Kind == artifact.List {
		// Only versions valid for the module path are kept.
		list := artifact.FilterList(a.Module, small)
		meta = cachetier.MetaFor(list, expires)
		if err := p.cfg.Tiers.PutSmall(ctx, p.key(a), meta, list, true); err != nil {
			p.log.Error("storing fetched artifact failed; serving it uncached", zap.Stringer("artifact", a), zap.Error(err))
		}
		return &fetched{obj: cachetier.NewBytesObject(meta, list)}, source, nil
	}
	obj, err := p.cfg.Tiers.Commit(ctx, p.key(a), spool, meta)
	if err != nil {
		p.log.Error("storing fetched artifact failed; serving it uncached", zap.Stringer("artifact", a), zap.Error(err))
	} else if p.cfg.Fleet != nil && a.Immutable() {
		if _, err := p.cfg.Fleet.PutTransfer(ctx, p.key(a), meta, obj.Reader()); err != nil {
			p.log.Warn("handing a large object to other nodes failed; they fetch it themselves", zap.Stringer("artifact", a), zap.Error(err))
		}
	}
	return &fetched{obj: obj}, source, nil
}

// fetchBudgeted fetches a; its body is read within the proxy's byte
// budget, whose share is given back when the body is closed.
func (p *Proxy) fetchBudgeted(ctx context.Context, a artifact.Artifact) (*fetcher.Response, error) {
	resp, err := p.cfg.Fetcher.Fetch(ctx, a)
	if err != nil {
		return nil, err
	}
	br := p.budget.reader(ctx, resp.Body, resp.Size, a.Kind.MaxSize())
	resp.Body = &budgetBody{budgetReader: br, c: resp.Body}
	return resp, nil
}

type budgetBody struct {
	*budgetReader
	c io.Closer
}

func (b *budgetBody) Close() error {
	b.release()
	return b.c.Close()
}

// spool streams the body of resp into a temp file. When the disk tier
// fails under it (full, read-only, removed), the artifact is fetched once
// more into the system's temp directory, so the client still gets its
// answer, uncached.
func (p *Proxy) spool(ctx context.Context, a artifact.Artifact, resp *fetcher.Response) (*cachetier.Spool, error) {
	spool, err := p.cfg.Tiers.NewSpool(p.key(a))
	if err != nil {
		return nil, &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage unavailable", Source: "cache", Err: err}
	}
	err = spool.Fill(resp.Body, a.Kind.MaxSize())
	if errors.Is(err, cachetier.ErrStorage) {
		spool.Close()
		p.log.Error("cache storage failed while fetching; fetching again into a temp file", zap.Stringer("artifact", a), zap.Error(err))
		resp.Body.Close()
		if resp, err = p.fetchBudgeted(ctx, a); err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if spool, err = cachetier.NewTempSpool(p.key(a)); err != nil {
			return nil, &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage unavailable", Source: "cache", Err: err}
		}
		err = spool.Fill(resp.Body, a.Kind.MaxSize())
	}
	if err == nil {
		if resp.Size >= 0 && spool.Size() != resp.Size {
			err = invalid(resp.Source, a, fmt.Sprintf("body is %d bytes, Content-Length said %d", spool.Size(), resp.Size))
		}
	} else if errors.Is(err, cachetier.ErrTooLarge) {
		err = invalid(resp.Source, a, err.Error())
	} else if errors.Is(err, cachetier.ErrStorage) {
		err = &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage failed; retry", Source: "cache", Err: err}
	} else {
		err = bodyError(ctx, resp.Source, err)
	}
	if err != nil {
		spool.Close()
		return nil, err
	}
	return spool, nil
}

func invalid(source string, a artifact.Artifact, reason string) *httperr.Error {
	msg := fmt.Sprintf("upstream sent an invalid %s for %s: %s", a.Kind, a.Module, reason)
	if len(msg) > 300 {
		msg = msg[:300]
	}
	return &httperr.Error{Status: http.StatusBadGateway, Msg: strings.ReplaceAll(msg, "\n", " "), Source: source}
}

func bodyError(ctx context.Context, source string, err error) *httperr.Error {
	fe := fetcher.TransportError(ctx, source, err)
	if fe.Status == http.StatusBadGateway {
		fe.Msg = "upstream broke off the download"
	}
	return fe
}

func asFetchError(err error) *httperr.Error {
	var fe *httperr.Error
	errors.As(err, &fe)
	return fe
}
