package cachetier

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"time"
)

// ErrTooLarge is returned by Spool.Fill when the body exceeds its limit.
var ErrTooLarge = errors.New("body too large")

// ErrStorage is returned by Spool.Fill when the spool file cannot be
// written (disk full, read-only, removed).
var ErrStorage = errors.New("cache storage failed")

// Spool is a fetched body being streamed to a temp file and hashed, so
// that it can be checked before any tier stores it and then read as many
// times as needed without holding it in memory.
type Spool struct {
	f    *os.File
	h    hash.Hash
	n    int64
	sum  [32]byte
	werr error
}

// Write appends to the file and the running hash.
func (s *Spool) Write(p []byte) (int, error) {
	n, err := s.f.Write(p)
	s.h.Write(p[:n])
	s.n += int64(n)
	if err != nil {
		s.werr = err
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

// Meta describes the spooled content; expires is zero for immutable content.
func (s *Spool) Meta(expires time.Time) Meta {
	return Meta{Size: s.n, Sum: s.sum, Stored: time.Now(), Expires: expires}
}

// Size is how many bytes were written.
func (s *Spool) Size() int64 { return s.n }

// Name is the temp file's path, for checkers that want a file name.
func (s *Spool) Name() string { return s.f.Name() }

// Reader reads the spooled content from its start.
func (s *Spool) Reader() io.ReadSeeker { return io.NewSectionReader(s.f, 0, s.n) }

// Close removes the temp file.
func (s *Spool) Close() error {
	s.f.Close()
	return os.Remove(s.f.Name())
}
