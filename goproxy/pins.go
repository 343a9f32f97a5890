package goproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.uber.org/zap"
	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/httperr"
)

// Tags that move: what no checksum database vouches for (private
// modules, verify off, no database) is held to what the mirror saw first.
// The first fetch of a version's .mod and .zip records their h1: hash in
// a record of first sight, kept in the tier of record and the tiers a
// fleet shares (Tiered.PutRecord), never overwritten by a fetch; a later
// fetch of the same version with other content — after a purge, on
// another edge, or because the tag was moved in the repository — is
// refused as a checksum mismatch is, until an operator accepts the new
// content (AcceptChanged).

const pinPrefix = "piraeus-pins/v1/"

// pin is the record of first sight of one version's .mod or .zip.
type pin struct {
	H1   string    `json:"h1"`
	Seen time.Time `json:"seen"`
	// Refused is the last other content fetched, which AcceptChanged
	// takes as the version's content.
	Refused *pinSight `json:"refused,omitempty"`
	// History holds the hashes accepted content replaced, oldest first.
	History []pinSight `json:"history,omitempty"`
}

type pinSight struct {
	H1 string    `json:"h1"`
	At time.Time `json:"at"`
}

// pinKey is the record's key, in the proxy's namespace: deployments whose
// answers differ (other upstreams sharing one Redis) hold their own.
func (p *Proxy) pinKey(mod, version string, kind artifact.Kind) (string, error) {
	esc, err := module.EscapePath(mod)
	if err != nil {
		return "", err
	}
	return p.cfg.namespace + "/" + pinPrefix + esc + "@" + version + "/" + kind.String(), nil
}

// pinHash is the h1: hash of a fetched .mod (data) or .zip, as go.sum
// records them.
func pinHash(a artifact.Artifact, data []byte, zip io.ReaderAt, zipSize int64) (string, error) {
	if a.Kind == artifact.Mod {
		return dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(data)), nil
		})
	}
	return checksumdb.HashZipReader(zip, zipSize)
}

func (p *Proxy) readPin(ctx context.Context, key string) (*pin, error) {
	obj, err := p.cfg.Tiers.GetRecord(ctx, key, false)
	if errors.Is(err, cachetier.ErrMiss) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	data, err := obj.Content()
	if err != nil {
		return nil, err
	}
	var pn pin
	if err := json.Unmarshal(data, &pn); err != nil || pn.H1 == "" {
		return nil, fmt.Errorf("record of first sight %s is damaged", key)
	}
	return &pn, nil
}

func (p *Proxy) writePin(ctx context.Context, key string, pn *pin) error {
	data, err := json.Marshal(pn)
	if err != nil {
		return err
	}
	return p.cfg.Tiers.PutRecord(ctx, key, cachetier.MetaFor(data, time.Time{}), data, false)
}

// checkPin holds a fetched .mod or .zip of a version that nothing else
// verifies to its record of first sight, recording it if there is none.
// A record that cannot be read from the store fails closed (a record
// that cannot be written, in a store that takes nothing now, leaves the
// content served uncached as before). A shared
// tier (Redis) that cannot be asked is passed by: the version is then
// held to what this node's store saw first, so that a fleet keeps serving
// through an outage of its Redis.
func (p *Proxy) checkPin(a artifact.Artifact, data []byte, zip io.ReaderAt, zipSize int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, err := p.pinKey(a.Module, a.Version, a.Kind)
	if err != nil {
		return err
	}
	h1, err := pinHash(a, data, zip, zipSize)
	if err != nil {
		return invalid("upstream", a, "hashing: "+err.Error())
	}
	unavailable := func(err error) error {
		return &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "the record of what this mirror first saw of " + a.Module + "@" + a.Version +
			" cannot be read now; retry", Source: "cache", Err: err}
	}
	pn, err := p.readPin(ctx, key)
	if err != nil {
		return unavailable(err)
	}
	now := time.Now().UTC()
	if pn == nil {
		if err := p.writePin(ctx, key, &pin{H1: h1, Seen: now}); err != nil {
			// The store cannot be written (full, read-only): the content
			// is then served uncached too, as it would have been before.
			p.log.Warn("recording what this mirror first saw failed", zap.String("key", key), zap.Error(err))
		}
		return nil
	}
	if pn.H1 == h1 {
		return nil
	}
	pn.Refused = &pinSight{H1: h1, At: now}
	if err := p.writePin(ctx, key, pn); err != nil {
		p.log.Warn("recording refused content failed", zap.String("key", key), zap.Error(err))
	}
	p.obs.mismatch("SECURITY ERROR: content changed since first seen: not caching or serving", zap.String("module", a.Module),
		zap.String("version", a.Version), zap.Stringer("kind", a.Kind), zap.String("got", h1), zap.String("first_seen", pn.H1),
		zap.Time("seen", pn.Seen))
	return &httperr.Error{Status: http.StatusBadGateway, Source: "upstream", Msg: fmt.Sprintf(
		"SECURITY ERROR: %s@%s %s changed since first seen on %s: upstream sent %s, first seen %s; an operator who trusts the change runs: caddy goproxy accept %s@%s",
		a.Module, a.Version, a.Kind, pn.Seen.Format(time.RFC3339), h1, pn.H1, a.Module, a.Version)}
}

// AcceptChanged makes the content last refused for mod@version (of its
// .mod, its .zip, or both) the version's recorded content, and purges
// what the tiers hold of the version so that the next request fetches
// it. It returns the kinds accepted.
func (p *Proxy) AcceptChanged(ctx context.Context, mod, version string) ([]string, error) {
	if err := module.Check(mod, version); err != nil || module.CanonicalVersion(version) != version {
		return nil, fmt.Errorf("want module@version with a canonical version, not %s@%s", mod, version)
	}
	var accepted []string
	for _, k := range []artifact.Kind{artifact.Mod, artifact.Zip} {
		key, err := p.pinKey(mod, version, k)
		if err != nil {
			return nil, err
		}
		pn, err := p.readPin(ctx, key)
		if err != nil {
			return nil, err
		}
		if pn == nil || pn.Refused == nil {
			continue
		}
		pn.History = append(pn.History, pinSight{H1: pn.H1, At: pn.Refused.At})
		pn.H1, pn.Refused = pn.Refused.H1, nil
		if err := p.writePin(ctx, key, pn); err != nil {
			return nil, err
		}
		p.log.Error("changed content accepted by an operator: the version now has other content than first seen",
			zap.String("module", mod), zap.String("version", version), zap.Stringer("kind", k),
			zap.String("h1", pn.H1), zap.String("was", pn.History[len(pn.History)-1].H1))
		accepted = append(accepted, k.String())
	}
	if len(accepted) == 0 {
		return nil, fmt.Errorf("no refused content of %s@%s to accept", mod, version)
	}
	return accepted, p.PurgeVersion(ctx, mod, version)
}
