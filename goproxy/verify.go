package goproxy

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/checksumdb"
	"github.com/piraeus-go/piraeus/httperr"
)

// The verify stage: what a checksum database vouches for, before anything
// is stored or served. A fetched .mod or .zip (verify) and one read from
// a tier that other nodes write (checkShared) are held to the same
// record; what no database vouches for is said at error level.

// Verifier vouches for a module version's content: its go.mod and its zip
// hash to what it has on record (checksumdb.DB, the x/mod/sumdb client
// over the cache, implements it). A record that contradicts the content
// is a *checksumdb.MismatchError; any other error means it could not
// decide, and the content is refused (fails closed).
type Verifier interface {
	Name() string
	// Warm starts looking up mod@version's record, so that a verification
	// soon after (of a body that is arriving) finds it read.
	Warm(mod, version string)
	VerifyMod(mod, version string, data []byte) error
	VerifyZipReader(mod, version string, zip io.ReaderAt, size int64) error
}

var _ Verifier = (*checksumdb.DB)(nil)

// verifier returns the Verifier that must vouch for a fetched .mod or
// .zip, or nil and why none does.
func (p *Proxy) verifier(a artifact.Artifact) (Verifier, string) {
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
		// Nothing vouches for it but what this mirror saw first.
		if err := p.checkPin(a, data, zip, zipSize); err != nil {
			return err
		}
		p.obs.unverified(a, reason)
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
		p.obs.mismatch("checksum mismatch: not caching or serving", zap.String("module", a.Module), zap.String("version", a.Version),
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
			p.obs.mismatch("") // the shared tier logs what it deletes
			return fmt.Errorf("%w: %v", cachetier.ErrRejected, mm)
		}
		return err
	}
}
