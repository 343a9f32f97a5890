package cachetier

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/piraeus-go/piraeus/internal/fslock"
)

// SpoolTier is the tier name of an object served from its spool because
// no tier could store it.
const SpoolTier = "spool"

// ErrTooLarge is returned by Spool.Fill when the body exceeds its limit.
var ErrTooLarge = errors.New("body too large")

// ErrStorage is returned by Spool.Fill when the spool file cannot be
// written (disk full, read-only, removed).
var ErrStorage = errors.New("cache storage failed")

// Spool is a fetched body being streamed to a temp file and hashed, so
// that it can be checked before any tier stores it, read as many times as
// needed without holding it in memory, and committed by renaming the file
// into place. Room for the object's header is left at the start of the
// file, so the file needs no rewriting to become the stored object.
//
// A disk tier's spool holds its first memSpool bytes in memory and makes
// its file only when the body outgrows them: a small object (a .info, a
// .mod) costs no temp file, and goes to the tier's small store.
type Spool struct {
	key string
	f   *os.File // nil while the content is held in buf
	buf []byte
	// spill makes the file of a spool held in memory; nil for a spool
	// made on its file.
	spill func() (*os.File, error)
	disk  *DiskTier // the tier whose spool it is, if a disk tier's
	off   int64     // where the content starts
	h     hash.Hash
	n     int64
	sum   [32]byte
	werr  error
	done  bool // committed: the file is no longer the spool's
	// noSpace, if set, is told of a write that failed for want of space,
	// with the bytes the spool held.
	noSpace func(held int64)
}

// newSpool takes over f, a new empty temp file, for an object of key.
func newSpool(f *os.File, key string) (*Spool, error) {
	if len(key) > maxKeyLen {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("key of %d bytes is too long", len(key))
	}
	s := &Spool{key: key, f: f, off: headerLen(key), h: sha256.New()}
	if _, err := f.Seek(s.off, io.SeekStart); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// memSpool is how much of a disk tier's spool is held in memory before
// its file is made.
const memSpool = smallMax

// newMemSpool starts a spool in memory for an object of key; spill makes
// its file when it needs one.
func newMemSpool(key string, spill func() (*os.File, error)) (*Spool, error) {
	if len(key) > maxKeyLen {
		return nil, fmt.Errorf("key of %d bytes is too long", len(key))
	}
	return &Spool{key: key, spill: spill, off: headerLen(key), h: sha256.New()}, nil
}

// toFile moves a spool held in memory to its file.
func (s *Spool) toFile() error {
	if s.f != nil {
		return nil
	}
	if s.done {
		return errors.New("spool already committed")
	}
	f, err := s.spill()
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(s.buf, s.off); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	if _, err := f.Seek(s.off+int64(len(s.buf)), io.SeekStart); err != nil {
		f.Close()
		os.Remove(f.Name())
		return err
	}
	s.f, s.buf = f, nil
	return nil
}

// OnDisk makes sure the content is in the spool's file, for a checker
// that reads it by name (Name). An error wraps ErrStorage.
func (s *Spool) OnDisk() error {
	if err := s.toFile(); err != nil {
		return fmt.Errorf("%w: %v", ErrStorage, err)
	}
	return nil
}

// InMemory reports whether the spool holds its content in memory, and
// the content if so (which the caller must not modify).
func (s *Spool) InMemory() ([]byte, bool) {
	return s.buf, s.f == nil
}

// NewSpoolFile takes over f, a new empty temp file, as the spool of an
// object of key: for a Store whose spools live elsewhere than a disk
// tier's (a bucket's spool directory).
func NewSpoolFile(f *os.File, key string) (*Spool, error) { return newSpool(f, key) }

// NewTempSpool makes a spool in the system's temp directory, for when the
// tier of record cannot take one (full, read-only). Such a spool cannot be
// committed; its object is served from it, uncached.
func NewTempSpool(key string) (*Spool, error) {
	f, err := createSystemTemp()
	if err != nil {
		return nil, err
	}
	return newSpool(f, key)
}

// createSystemTemp makes a spool's file in the system's temp directory,
// sweeping it of dead processes' spools the first time.
func createSystemTemp() (*os.File, error) {
	sweepSystemTemp.Do(func() { SweepTemp(os.TempDir(), tempSpoolPrefix) })
	return CreateTemp(os.TempDir(), tempSpoolPrefix+"*")
}

// tempSpoolPrefix names NewTempSpool's files in the system's temp
// directory, which the first of them in a process sweeps of those that
// dead processes left.
const tempSpoolPrefix = "piraeus-fetch-"

var sweepSystemTemp sync.Once

// CreateTemp makes a temp file in dir as os.CreateTemp does, locked while
// it is open (fslock): SweepTemp in another process passes it by, and
// once its process dies, however it dies, the next sweep removes it.
func CreateTemp(dir, pattern string) (*os.File, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	if err := fslock.TryLock(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}

// SweepTemp removes the files in dir whose names start with prefix and
// that no live process holds: what processes that died in mid-write left
// (kill -9, power loss). It returns how many it removed.
func SweepTemp(dir, prefix string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		if p := filepath.Join(dir, e.Name()); fslock.Orphaned(p) && os.Remove(p) == nil {
			n++
		}
	}
	return n
}

// Write appends to the file and the running hash.
func (s *Spool) Write(p []byte) (int, error) {
	if s.f == nil {
		if len(s.buf)+len(p) <= memSpool {
			s.buf = append(s.buf, p...)
			s.h.Write(p)
			s.n += int64(len(p))
			return len(p), nil
		}
		if err := s.toFile(); err != nil {
			s.werr = err
			if s.noSpace != nil && isNoSpace(err) {
				s.noSpace(s.n)
			}
			return 0, err
		}
	}
	n, err := s.f.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if err != nil {
		s.werr = err
		if s.noSpace != nil && isNoSpace(err) {
			s.noSpace(s.n)
		}
	}
	return n, err
}

// Fill copies r into the spool, failing if it holds more than limit bytes.
// A failure to write the spool wraps ErrStorage; others are read errors.
func (s *Spool) Fill(r io.Reader, limit int64) error {
	n, err := io.Copy(s, io.LimitReader(r, limit+1))
	if s.werr != nil {
		return fmt.Errorf("%w: %v", ErrStorage, s.werr)
	}
	if err != nil {
		return err
	}
	if n > limit {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	s.h.Sum(s.sum[:0])
	return nil
}

// Done reports whether the spool was committed or turned into an object.
func (s *Spool) Done() bool { return s.done }

// Key is the key the spooled object is for.
func (s *Spool) Key() string { return s.key }

// Meta describes the spooled content; expires is zero for immutable content.
func (s *Spool) Meta(expires time.Time) Meta {
	return Meta{Size: s.n, Sum: s.sum, Stored: time.Now(), Expires: expires}
}

// Size is how many bytes were written.
func (s *Spool) Size() int64 { return s.n }

// Name is the temp file's path (after OnDisk, for a spool that may be
// held in memory). The content follows a header's room: read it with
// Reader or ReaderAt.
func (s *Spool) Name() string {
	if s.f == nil {
		return ""
	}
	return s.f.Name()
}

// Reader reads the spooled content from its start.
func (s *Spool) Reader() io.ReadSeeker {
	if s.f == nil {
		return bytes.NewReader(s.buf)
	}
	return io.NewSectionReader(s.f, s.off, s.n)
}

// ReaderAt reads the spooled content in place, offsets counted from its
// start (as a zip64 archive's are).
func (s *Spool) ReaderAt() io.ReaderAt {
	if s.f == nil {
		return bytes.NewReader(s.buf)
	}
	return io.NewSectionReader(s.f, s.off, s.n)
}

// Object turns the spool into an object read from its file, for serving
// what could not be stored; the file is removed now and closed with the
// object's last handle.
func (s *Spool) Object(meta Meta, tier string) *Object {
	if s.f == nil {
		s.done = true
		return NewTierObject(meta, tier, s.buf)
	}
	os.Remove(s.f.Name())
	s.done = true
	return newFileObject(meta, tier, s.f, s.off)
}

// Close removes the temp file, unless it was committed or turned into an
// object.
func (s *Spool) Close() error {
	if s.done {
		return nil
	}
	s.done = true
	if s.f == nil {
		s.buf = nil
		return nil
	}
	s.f.Close()
	return os.Remove(s.f.Name())
}
