package goproxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	modzip "golang.org/x/mod/zip"
	"golang.org/x/sync/singleflight"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/fetcher"
)

// fetched is what one collapsed fetch hands to all its waiters: the content
// itself when it is small, or nothing when each waiter should open the copy
// the fetch wrote to disk.
type fetched struct {
	obj *cachetier.Object // shared, in-memory; nil when on disk only
}

func (f *fetched) size() int64 {
	if f.obj == nil {
		return 0
	}
	return f.obj.Size
}

// cached returns a usable cached copy of a as a fetch result.
func (p *Proxy) cached(ctx context.Context, a artifact.Artifact) (*fetched, bool) {
	obj, err := p.cfg.Tiers.Get(ctx, a.Path())
	if err != nil {
		return nil, false
	}
	if !obj.Fresh(time.Now()) {
		obj.Close()
		return nil, false
	}
	if _, inMemory := obj.Bytes(); inMemory {
		return &fetched{obj: obj}, true
	}
	obj.Close() // on disk: each waiter opens its own handle
	return &fetched{}, true
}

// fromTransfer copies an object that another node fetched and handed over
// through the shared tier, checking it against the hash the other node
// recorded, and stores it in this node's tiers.
func (p *Proxy) fromTransfer(ctx context.Context, a artifact.Artifact) (*fetched, bool) {
	t, ok := p.cfg.Locker.(Transferrer)
	if !ok || !a.Immutable() {
		return nil, false
	}
	want, r, err := t.GetTransfer(ctx, a.Path())
	if err != nil {
		return nil, false
	}
	spool, err := p.cfg.Tiers.NewSpool()
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
		p.log.Warn("a large object from another node does not match its hash; fetching it", zap.Stringer("artifact", a))
		return nil, false
	}
	data, err := p.cfg.Tiers.Store(ctx, a.Path(), got, spool)
	if err != nil {
		return nil, false
	}
	if data != nil {
		return &fetched{obj: cachetier.NewBytesObject(got, data)}, true
	}
	return &fetched{}, true
}

// maxUncached bounds what is served from memory when the disk tier could
// not store a fetch.
const maxUncached = 32 << 20

// collapse joins or starts the one fetch for a.
func (p *Proxy) collapse(ctx context.Context, a artifact.Artifact) (*cachetier.Object, error) {
	key := a.Path()
	leader := false // set only by the caller whose function runs
	ch := p.flights.DoChan(key, func() (any, error) {
		leader = true
		return p.fetch(a)
	})
	var res singleflight.Result
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res = <-ch:
		if !leader {
			p.cfg.Metrics.waiter()
		}
	}
	if res.Err != nil {
		return nil, res.Err
	}
	if f := res.Val.(*fetched); f.obj != nil {
		return f.obj, nil
	}
	obj, err := p.cfg.Tiers.Disk().Get(ctx, key)
	if err != nil {
		return nil, &fetcher.Error{Status: http.StatusBadGateway, Msg: "fetched module vanished from the cache; retry", Source: "cache", Err: err}
	}
	return obj, nil
}

// fetch runs once per collapsed miss. It is detached from the request that
// started it, so one impatient client cannot fail the others, and bounded
// by FetchTimeout.
func (p *Proxy) fetch(a artifact.Artifact) (*fetched, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.FetchTimeout)
	defer cancel()
	start := time.Now()
	f, source, size, err := p.fetchAndStore(ctx, a)
	fields := []zap.Field{
		zap.String("module", a.Module), zap.String("version", a.Version), zap.Stringer("kind", a.Kind),
		zap.String("upstream", source), zap.Duration("duration", time.Since(start)), zap.Int64("bytes", size),
	}
	switch {
	case err == nil && source == "peer":
		p.log.Debug("fetched by another node", fields...)
		p.cfg.Metrics.fetch(a, source, "peer", time.Since(start))
	case err == nil:
		p.log.Info("upstream fetch", append(fields, zap.String("outcome", "ok"))...)
		p.cfg.Metrics.fetch(a, source, "ok", time.Since(start))
	case fetcher.IsNotFound(err) && source == "peer":
		p.cfg.Metrics.fetch(a, source, "not_found", time.Since(start))
	case fetcher.IsNotFound(err):
		fe := asFetchError(err)
		p.notFound.SetWithTTL(a.Path(), fe, 1, p.cfg.NotFoundTTL)
		if s, ok := p.cfg.Locker.(NotFoundSharer); ok {
			s.PutNotFound(ctx, a.Path(), fe.Status, fe.Msg, p.cfg.NotFoundTTL)
		}
		p.log.Info("upstream fetch", append(fields, zap.String("outcome", "not_found"))...)
		p.cfg.Metrics.fetch(a, source, "not_found", time.Since(start))
	default:
		p.log.Warn("upstream fetch", append(fields, zap.String("outcome", "error"), zap.Error(err))...)
		p.cfg.Metrics.fetch(a, source, "error", time.Since(start))
	}
	return f, err
}

func (p *Proxy) fetchAndStore(ctx context.Context, a artifact.Artifact) (f *fetched, source string, size int64, err error) {
	if p.cfg.Locker != nil {
		unlock, err := p.cfg.Locker.Lock(ctx, a.Path())
		switch {
		case err == nil:
			defer unlock()
			// Another node may have stored it, or found it missing,
			// while this one waited.
			if f, ok := p.cached(ctx, a); ok {
				return f, "peer", f.size(), nil
			}
			if fe, ok := p.knownNotFound(ctx, a.Path()); ok {
				return nil, "peer", 0, fe
			}
			if f, ok := p.fromTransfer(ctx, a); ok {
				return f, "peer", f.size(), nil
			}
		case ctx.Err() != nil:
			return nil, "peer", 0, &fetcher.Error{Status: http.StatusGatewayTimeout, Msg: "timed out waiting for another node's fetch", Source: "lock", Err: err}
		case errors.Is(err, cachetier.ErrUnavailable):
			// The tier already warned once that Redis is down.
		default:
			p.log.Warn("cross-node lock unavailable; fetching without it", zap.Stringer("artifact", a), zap.Error(err))
		}
	}
	resp, err := p.cfg.Fetcher.Fetch(ctx, a)
	if err != nil {
		var fe *fetcher.Error
		if errors.As(err, &fe) {
			source = fe.Source
		}
		return nil, source, 0, err
	}
	defer resp.Body.Close()
	source = resp.Source
	var expires time.Time
	if !a.Immutable() {
		expires = time.Now().Add(p.cfg.ListTTL)
	}

	if a.Query() {
		// A version query must not touch the disk: it is small, so it is
		// read, checked and kept in the memory tiers only.
		data, err := io.ReadAll(io.LimitReader(resp.Body, a.Kind.MaxSize()+1))
		if err != nil {
			return nil, source, 0, bodyError(ctx, source, err)
		}
		if int64(len(data)) > a.Kind.MaxSize() {
			return nil, source, 0, invalid(source, a, "answer too large")
		}
		if err := checkContent(a, data, ""); err != nil {
			return nil, source, 0, invalid(source, a, err.Error())
		}
		meta := cachetier.Meta{Size: int64(len(data)), Sum: sha256.Sum256(data), Stored: time.Now(), Expires: expires}
		p.cfg.Tiers.StoreUpper(ctx, a.Path(), meta, data)
		return &fetched{obj: cachetier.NewBytesObject(meta, data)}, source, meta.Size, nil
	}

	spool, err := p.spool(ctx, a, resp)
	if err != nil {
		return nil, source, 0, err
	}
	defer spool.Close()
	meta := spool.Meta(expires)
	var small []byte
	if a.Kind != artifact.Zip {
		if small, err = io.ReadAll(spool.Reader()); err != nil {
			return nil, source, meta.Size, fmt.Errorf("reading spool: %w", err)
		}
	}
	if err := checkContent(a, small, spool.Name()); err != nil {
		return nil, source, meta.Size, invalid(source, a, err.Error())
	}
	if err := p.verify(a, small, spool.Name()); err != nil {
		return nil, source, meta.Size, err
	}
	data, err := p.cfg.Tiers.Store(ctx, a.Path(), meta, spool)
	if t, ok := p.cfg.Locker.(Transferrer); ok && err == nil && a.Immutable() {
		if terr := t.PutTransfer(ctx, a.Path(), meta, spool.Reader()); terr != nil {
			p.log.Warn("handing a large object to other nodes failed; they fetch it themselves", zap.Stringer("artifact", a), zap.Error(terr))
		}
	}
	if err != nil {
		p.log.Error("storing fetched artifact failed; serving it uncached", zap.Stringer("artifact", a), zap.Error(err))
		if meta.Size > maxUncached {
			return nil, source, meta.Size, &fetcher.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage failed", Source: "cache", Err: err}
		}
		if data, err = io.ReadAll(spool.Reader()); err != nil {
			return nil, source, meta.Size, fmt.Errorf("reading spool: %w", err)
		}
	}
	if data == nil {
		return &fetched{}, source, meta.Size, nil
	}
	return &fetched{obj: cachetier.NewBytesObject(meta, data)}, source, meta.Size, nil
}

// spool streams the body of resp into a temp file. When the disk tier
// fails under it (full, read-only, removed), the artifact is fetched once
// more into the system's temp directory, so the client still gets its
// answer, uncached.
func (p *Proxy) spool(ctx context.Context, a artifact.Artifact, resp *fetcher.Response) (*cachetier.Spool, error) {
	spool, err := p.cfg.Tiers.NewSpool()
	if err != nil {
		return nil, &fetcher.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage unavailable", Source: "cache", Err: err}
	}
	err = spool.Fill(resp.Body, a.Kind.MaxSize())
	if errors.Is(err, cachetier.ErrStorage) {
		spool.Close()
		p.log.Error("cache storage failed while fetching; fetching again into a temp file", zap.Stringer("artifact", a), zap.Error(err))
		resp.Body.Close()
		if resp, err = p.cfg.Fetcher.Fetch(ctx, a); err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if spool, err = cachetier.NewTempSpool(); err != nil {
			return nil, &fetcher.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage unavailable", Source: "cache", Err: err}
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
		err = &fetcher.Error{Status: http.StatusServiceUnavailable, Msg: "cache storage failed; retry", Source: "cache", Err: err}
	} else {
		err = bodyError(ctx, resp.Source, err)
	}
	if err != nil {
		spool.Close()
		return nil, err
	}
	return spool, nil
}

// checkContent rejects an upstream answer that cannot be what was asked
// for, so it is never cached. data holds small answers; zips are checked
// from their spool file with x/mod/zip.
func checkContent(a artifact.Artifact, data []byte, zipFile string) error {
	switch a.Kind {
	case artifact.Info, artifact.Latest:
		var info struct {
			Version string
			Time    time.Time
		}
		if err := json.Unmarshal(data, &info); err != nil {
			return fmt.Errorf("not a JSON version info: %v", err)
		}
		if module.CanonicalVersion(info.Version) != info.Version || info.Version == "" {
			return fmt.Errorf("version %q is not canonical", info.Version)
		}
		if a.Immutable() && info.Version != a.Version {
			return fmt.Errorf("answer is for version %q", info.Version)
		}
		if err := module.Check(a.Module, info.Version); err != nil {
			return err
		}
	case artifact.List:
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, len(data)+1)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) > 0 && !semver.IsValid(f[0]) {
				return fmt.Errorf("list holds invalid version %q", f[0])
			}
		}
	case artifact.Mod:
		f, err := modfile.ParseLax("go.mod", data, nil)
		if err != nil {
			return fmt.Errorf("go.mod does not parse: %v", err)
		}
		if f.Module == nil || f.Module.Mod.Path != a.Module {
			return errors.New("go.mod declares a different module path")
		}
	case artifact.Zip:
		cf, err := modzip.CheckZip(a.ModuleVersion(), zipFile)
		if err == nil {
			err = cf.Err()
		}
		if err != nil {
			return fmt.Errorf("module zip rejected: %v", err)
		}
	}
	return nil
}

func invalid(source string, a artifact.Artifact, reason string) *fetcher.Error {
	msg := fmt.Sprintf("upstream sent an invalid %s for %s: %s", a.Kind, a.Module, reason)
	if len(msg) > 300 {
		msg = msg[:300]
	}
	return &fetcher.Error{Status: http.StatusBadGateway, Msg: strings.ReplaceAll(msg, "\n", " "), Source: source}
}

func bodyError(ctx context.Context, source string, err error) *fetcher.Error {
	fe := fetcher.TransportError(ctx, source, err)
	if fe.Status == http.StatusBadGateway {
		fe.Msg = "upstream broke off the download"
	}
	return fe
}

func asFetchError(err error) *fetcher.Error {
	var fe *fetcher.Error
	errors.As(err, &fe)
	return fe
}
