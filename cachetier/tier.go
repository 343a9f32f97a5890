// Package cachetier stores proxy artifacts in ordered tiers (memory, disk,
// and later shared ones) behind one small interface. Tiers know nothing of
// HTTP or Caddy: a key is an opaque slash-separated string validated by the
// caller, a value is bytes with a checksum and an optional expiry.
package cachetier

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"time"
)

// ErrMiss is returned by Get when a tier does not hold the key.
var ErrMiss = errors.New("cachetier: miss")

// Meta describes a stored object.
type Meta struct {
	Size    int64
	Sum     [32]byte  // SHA-256 of the content
	Stored  time.Time // when it was fetched
	Expires time.Time // zero for objects that never change
}

// Fresh reports whether the object may be served without asking upstream.
func (m Meta) Fresh(now time.Time) bool {
	return m.Expires.IsZero() || now.Before(m.Expires)
}

// ETag is a strong validator derived from the content hash.
func (m Meta) ETag() string {
	var b [2 + 32]byte
	b[0] = '"'
	hex.Encode(b[1:33], m.Sum[:16])
	b[33] = '"'
	return string(b[:])
}

// Object is a stored value handed to one reader. Objects from the memory
// tier share an immutable byte slice; objects from disk hold an open file
// and must be closed.
type Object struct {
	Meta
	Tier string // name of the tier that answered

	data []byte
	f    *os.File
	off  int64
}

// NewBytesObject wraps data that the caller will not modify again.
func NewBytesObject(meta Meta, data []byte) *Object {
	return &Object{Meta: meta, data: data}
}

// Reader returns a reader over the content, positioned at its start.
func (o *Object) Reader() io.ReadSeeker {
	if o.f != nil {
		return io.NewSectionReader(o.f, o.off, o.Size)
	}
	return bytes.NewReader(o.data)
}

// Bytes returns the content if it is held in memory.
func (o *Object) Bytes() ([]byte, bool) {
	return o.data, o.f == nil
}

// Close releases the file behind the object, if any.
func (o *Object) Close() error {
	if o == nil || o.f == nil {
		return nil
	}
	return o.f.Close()
}

// Tier is one level of the cache.
type Tier interface {
	Name() string
	// MaxObject is the largest object the tier stores; larger ones are
	// skipped by Put and never promoted into it.
	MaxObject() int64
	// Get returns the object or ErrMiss. A tier that finds a damaged
	// object removes it and reports a miss.
	Get(ctx context.Context, key string) (*Object, error)
	// Put stores exactly meta.Size bytes from r under key.
	Put(ctx context.Context, key string, meta Meta, r io.Reader) error
	Delete(ctx context.Context, key string) error
	Close() error
}

// bytesPutter is implemented by tiers that can keep a caller's immutable
// byte slice without copying it.
type bytesPutter interface {
	PutBytes(key string, meta Meta, data []byte) error
}

// UsageReporter is implemented by tiers that know how much they hold;
// objects is -1 when unknown.
type UsageReporter interface {
	Usage() (objects, bytes int64)
}
