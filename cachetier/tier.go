// Package cachetier stores proxy artifacts in ordered tiers behind one
// small interface: the memory and disk tiers here, the Redis and S3 tiers
// in packages of their own (redistier, s3tier), so that a process links
// their clients only when it configures them; tiertest holds the contract
// every tier keeps. Tiers know nothing of HTTP or Caddy: a key is an
// opaque slash-separated string validated by the caller, a value is bytes
// with a checksum, an expiry and the key it was stored under; what shared
// tiers hold is also signed with the fleet key (EncodeValue, DecodeValue).
package cachetier

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrMiss is returned by Get when a tier does not hold the key.
var ErrMiss = errors.New("cachetier: miss")

// ErrPurged is a miss of a shared tier that knows the key was purged
// (Redis's tombstone): what other tiers hold of it is out of date.
var ErrPurged = fmt.Errorf("%w: purged", ErrMiss)

// ErrUnavailable is returned by shared state (a fleet's Redis) that is not
// being used now, its circuit breaker open: the caller goes on without it.
var ErrUnavailable = errors.New("shared state unavailable")

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

// Object is a stored value handed to one reader. Objects in memory share
// an immutable byte slice; objects in a file hold a handle on it, which
// several objects may share (each Clone takes its own), and must be
// closed.
type Object struct {
	Meta
	Tier string // name of the tier that answered

	data   []byte
	file   *sharedFile
	off    int64 // where the content starts in the file
	own    bool  // the file is this object's alone (its offset may be used), its content runs to its end
	closed bool
}

// NewBytesObject wraps data that the caller will not modify again.
func NewBytesObject(meta Meta, data []byte) *Object {
	return &Object{Meta: meta, data: data}
}

// NewTierObject is an object of tier holding data, which the caller will
// not modify again.
func NewTierObject(meta Meta, tier string, data []byte) *Object {
	return &Object{Meta: meta, Tier: tier, data: data}
}

// newFileObject takes over f; the content is meta.Size bytes from off.
func newFileObject(meta Meta, tier string, f *os.File, off int64) *Object {
	sf := &sharedFile{f: f}
	sf.refs.Store(1)
	return &Object{Meta: meta, Tier: tier, file: sf, off: off}
}

// Reader returns a reader over the content, positioned at its start. A
// file of the object's own is read so that net/http can send it with
// sendfile(2) (see ownFileReader).
func (o *Object) Reader() io.ReadSeeker {
	if o.file != nil {
		sr := io.NewSectionReader(o.file.f, o.off, o.Size)
		if o.own {
			return &ownFileReader{SectionReader: sr, f: o.file.f, off: o.off}
		}
		return sr
	}
	return bytes.NewReader(o.data)
}

// ownFileReader reads a section of a file that no other reader shares.
// It reads with ReadAt, as a SectionReader does, and is also a
// syscall.Conn: net/http then copies it to a TCP connection with
// sendfile(2), from the file's offset, which SyscallConn sets to the
// reader's position first. After such a copy the file's offset is the
// truth, and the next Read or Seek takes its position from it.
type ownFileReader struct {
	*io.SectionReader
	f    *os.File
	off  int64
	sent bool // the file's offset was handed out (and may have moved)
}

// SendfileSource returns what a ResponseWriter's ReadFrom should be given
// for r: r itself, except for an io.LimitedReader over all the rest of a
// file object's own reader, which is replaced by that reader. A writer
// that wraps its source in a LimitedReader of its own (Caddy's idle
// timeout writer sends in 64 KiB chunks) would otherwise hide the file
// from net/http, which unwraps one LimitedReader only, and the content
// would be copied through user space instead of sent with sendfile(2).
// The file's content runs to its end, so nothing beyond it can be sent.
func SendfileSource(r io.Reader) io.Reader {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		return r
	}
	fr, ok := lr.R.(*ownFileReader)
	if !ok || fr.sync() != nil {
		return r
	}
	pos, _ := fr.SectionReader.Seek(0, io.SeekCurrent)
	if lr.N < fr.Size()-pos {
		return r
	}
	return fr
}

func (r *ownFileReader) sync() error {
	if !r.sent {
		return nil
	}
	cur, err := r.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	r.sent = false
	_, err = r.SectionReader.Seek(cur-r.off, io.SeekStart)
	return err
}

func (r *ownFileReader) Read(p []byte) (int, error) {
	if err := r.sync(); err != nil {
		return 0, err
	}
	return r.SectionReader.Read(p)
}

func (r *ownFileReader) Seek(offset int64, whence int) (int64, error) {
	if err := r.sync(); err != nil {
		return 0, err
	}
	return r.SectionReader.Seek(offset, whence)
}

// SyscallConn positions the file at the reader's position and returns
// its raw connection, for sendfile(2): callers read at most the bytes left
// in the section (net/http's copy is bounded by the content's length).
func (r *ownFileReader) SyscallConn() (syscall.RawConn, error) {
	if err := r.sync(); err != nil {
		return nil, err
	}
	pos, _ := r.SectionReader.Seek(0, io.SeekCurrent)
	if _, err := r.f.Seek(r.off+pos, io.SeekStart); err != nil {
		return nil, err
	}
	r.sent = true
	return r.f.SyscallConn()
}

// ReaderAt reads the content in place.
func (o *Object) ReaderAt() io.ReaderAt {
	if o.file != nil {
		return io.NewSectionReader(o.file.f, o.off, o.Size)
	}
	return bytes.NewReader(o.data)
}

// Bytes returns the content if it is held in memory.
func (o *Object) Bytes() ([]byte, bool) {
	return o.data, o.file == nil
}

// Content returns the whole content: the bytes held in memory, or read
// from the file.
func (o *Object) Content() ([]byte, error) {
	if o.file == nil {
		return o.data, nil
	}
	data := make([]byte, o.Size)
	_, err := io.ReadFull(o.Reader(), data)
	return data, err
}

// Clone returns another handle on the same content, to be closed on its
// own; nil if o has been closed. Reads of several clones of a file may run
// concurrently.
func (o *Object) Clone() *Object {
	if o.closed {
		return nil
	}
	if o.file != nil {
		if c := o.reopen(); c != nil {
			return c
		}
		if !o.file.acquire() {
			return nil
		}
	}
	c := *o
	c.own = false // the file is shared from now on: ReadAt only
	return &c
}

// reopen returns a clone of a file object with a handle of its own on the
// same file, opened again by its name, so that the clone is sent with
// sendfile(2) as a disk hit is (every file object's content runs to the
// end of its file); nil when the name no longer leads to that file (the
// object was replaced or evicted, or is an uncached spool).
func (o *Object) reopen() *Object {
	f, err := os.Open(o.file.f.Name())
	if err != nil {
		return nil
	}
	fi, err := f.Stat()
	if err == nil {
		var orig os.FileInfo
		if orig, err = o.file.f.Stat(); err == nil && !os.SameFile(fi, orig) {
			err = os.ErrNotExist
		}
	}
	if err != nil {
		f.Close()
		return nil
	}
	c := *o
	c.file = &sharedFile{f: f}
	c.file.refs.Store(1)
	c.own = true
	return &c
}

// Close releases the object's handle on its file, if any; the file is
// closed with the last handle.
func (o *Object) Close() error {
	if o == nil || o.closed {
		return nil
	}
	o.closed = true
	if o.file == nil {
		return nil
	}
	return o.file.release()
}

// sharedFile is an open file that several objects read (ReadAt is safe
// for concurrent use), closed when the last of them lets go.
type sharedFile struct {
	f    *os.File
	refs atomic.Int32
}

func (s *sharedFile) acquire() bool {
	for {
		n := s.refs.Load()
		if n <= 0 {
			return false
		}
		if s.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (s *sharedFile) release() error {
	if s.refs.Add(-1) == 0 {
		return s.f.Close()
	}
	return nil
}

// SmallObject: objects up to this size are copied between tiers (and
// read from a bucket) in memory, larger ones through a spool file.
const SmallObject = 1 << 20

// Tier is one level of the cache.
type Tier interface {
	Name() string
	// MaxObject is the largest object the tier stores; larger ones are
	// skipped by Put and never promoted into it.
	MaxObject() int64
	// Get returns the object or ErrMiss. A tier that finds a damaged
	// object, or one stored under another key, removes it and reports a
	// miss.
	Get(ctx context.Context, key string) (*Object, error)
	// Put stores data under key; the tier may keep data, which the caller
	// does not modify afterwards.
	Put(ctx context.Context, key string, meta Meta, data []byte) error
	Delete(ctx context.Context, key string) error
	Close() error
}

// Store is the tier of record: every fetched object is committed to it
// from the spool it was fetched into, whatever its size.
type Store interface {
	Tier
	// NewSpool starts a temp file for the object that will be stored
	// under key.
	NewSpool(key string) (*Spool, error)
	// Commit stores a filled spool under key, taking it over, and returns
	// the stored object, read from the spool's own file: it stays
	// readable even if the object is evicted meanwhile.
	Commit(ctx context.Context, key string, s *Spool, meta Meta) (*Object, error)
}

// UsageReporter is implemented by tiers that know how much they hold;
// objects is -1 when unknown.
type UsageReporter interface {
	Usage() (objects, bytes int64)
}

// Bounded is implemented by tiers with a bound on what they hold, in
// bytes (0: unbounded).
type Bounded interface {
	Bound() int64
}

// Checker is implemented by tiers that can say whether they work now
// (writable, reachable), for readiness probes.
type Checker interface {
	Check(ctx context.Context) error
}

// Lister is implemented by tiers that can list the keys they hold (at
// least those of the .info objects, which the catalog lists), in a stable
// order, a page at a time: after is "" or the next of the previous page
// (ErrBadToken for one the tier did not give); next is "" after the last
// page. A page examines at most limit entries, so it holds at most limit
// keys, and fewer where an entry was not a key it holds, yet not the last
// page.
type Lister interface {
	List(ctx context.Context, after string, limit int) (keys []string, next string, err error)
}

// Holder is implemented by stores that can say cheaply (without reading
// the content) whether they hold key: the catalog lists a version only
// where its .mod and .zip are held.
type Holder interface {
	Holds(ctx context.Context, key string) (bool, error)
}

type forWaitersKey struct{}

// WithWaiters marks the writes made with ctx as ones that other edges
// wait for: the writer holds the fleet's lock on the key, and the edges
// waiting for it will look for the object in the shared tier. A shared
// tier retries such a write through a failover of its store (Redis'
// failover_wait), rather than drop it, so that a failover does not cost
// the waiters a fetch of their own.
func WithWaiters(ctx context.Context) context.Context {
	return context.WithValue(ctx, forWaitersKey{}, true)
}

// ForWaiters reports whether ctx marks writes that other edges wait for
// (WithWaiters).
func ForWaiters(ctx context.Context) bool {
	v, _ := ctx.Value(forWaitersKey{}).(bool)
	return v
}
