package cachetier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/piraeus-go/piraeus/internal/fslock"
)

// Disk object files start with a fixed header so that the content, its
// hash and its expiry are replaced together by one atomic rename.
const (
	headerSize  = 128
	headerMagic = "PIRAEUS\x01"
	maxVerified = 1 << 16
)

// DiskTier stores objects as files under a root directory:
// <root>/v1/<key> holds the objects, <root>/tmp the files being written.
// Writes go to a temp file and are renamed into place; reads check the
// header and, once per file identity, the content hash.
type DiskTier struct {
	root, objects, tmp string

	// OnCorrupt, if set, is told about every damaged file found (and removed).
	OnCorrupt func(key string, err error)

	mu       sync.Mutex
	verified map[string]fileID // path -> identity whose content hash was checked

	nObjects, nBytes atomic.Int64 // occupancy, counted at open and kept up to date

	// MaxBytes bounds the objects' total size (0: unbounded). Above it, the
	// least recently read objects are removed until 90% of it is used.
	MaxBytes int64
	evictMu  sync.Mutex
	evicting atomic.Bool
}

type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

// sysStat is what the platform records of a file beyond fs.FileInfo
// (see the stat_*.go files); zero where it records nothing.
type sysStat struct {
	atime, ctime int64
	dev, ino     uint64
}

// NewDiskTier opens (creating if needed) a disk tier at root and removes
// temp files left behind by a crashed process.
func NewDiskTier(root string) (*DiskTier, error) {
	if root == "" {
		return nil, errors.New("disk tier: empty root")
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	d := &DiskTier{
		root:     root,
		objects:  filepath.Join(root, "v1"),
		tmp:      filepath.Join(root, "tmp"),
		verified: make(map[string]fileID),
	}
	for _, dir := range []string{d.objects, d.tmp} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("disk tier: %w", err)
		}
	}
	d.removeStaleSpools()
	d.count()
	return d, nil
}

// count walks the objects once, before any Put, to learn the occupancy;
// Put and Delete keep it current from then on. (Caddy opens the tiers once
// per process, not per config reload.)
func (d *DiskTier) count() {
	filepath.WalkDir(d.objects, func(_ string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				d.nObjects.Add(1)
				d.nBytes.Add(info.Size())
			}
		}
		return nil
	})
}

// Evict removes the least recently read objects until the tier uses at
// most 90% of MaxBytes. Put starts it in the background when the tier
// grows past MaxBytes.
func (d *DiskTier) Evict() {
	d.evictMu.Lock()
	defer d.evictMu.Unlock()
	if d.MaxBytes <= 0 || d.nBytes.Load() <= d.MaxBytes {
		return
	}
	type entry struct {
		path  string
		atime int64
	}
	var all []entry
	filepath.WalkDir(d.objects, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() {
			if info, err := e.Info(); err == nil {
				all = append(all, entry{p, fileStat(info).atime})
			}
		}
		return nil
	})
	sort.Slice(all, func(i, j int) bool { return all[i].atime < all[j].atime })
	target := d.MaxBytes / 10 * 9
	for _, e := range all {
		if d.nBytes.Load() <= target {
			break
		}
		d.forget(e.path)
		d.removeFile(e.path)
	}
}

// Usage is the number of objects on disk and their size in bytes.
func (d *DiskTier) Usage() (objects, bytes int64) { return d.nObjects.Load(), d.nBytes.Load() }

// removeFile removes an object file and takes it out of the occupancy.
func (d *DiskTier) removeFile(p string) error {
	info, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		return err
	}
	d.nObjects.Add(-1)
	d.nBytes.Add(-info.Size())
	return nil
}

func (d *DiskTier) Name() string     { return "disk" }
func (d *DiskTier) MaxObject() int64 { return 1<<63 - 1 }

// Root is the directory the tier was opened on.
func (d *DiskTier) Root() string { return d.root }

// removeStaleSpools removes temp files that no live process holds: every
// temp file is flock'ed by its writer, so one whose lock can be taken was
// left by a process that died (kill -9, power loss) in mid-write.
func (d *DiskTier) removeStaleSpools() {
	entries, err := os.ReadDir(d.tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		if p := filepath.Join(d.tmp, e.Name()); fslock.Orphaned(p) {
			os.Remove(p)
		}
	}
}

// createTemp makes a locked temp file in the tier's tmp directory,
// recreating the directory if someone removed it.
func (d *DiskTier) createTemp(pattern string) (*os.File, error) {
	f, err := os.CreateTemp(d.tmp, pattern)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(d.tmp, 0o755); err == nil {
			f, err = os.CreateTemp(d.tmp, pattern)
		}
	}
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

// path maps a key to its file, refusing anything that could leave the root.
func (d *DiskTier) path(key string) (string, error) {
	p := filepath.FromSlash(key)
	if key == "" || !filepath.IsLocal(p) || filepath.Clean(p) != p {
		return "", fmt.Errorf("disk tier: refusing key %q", key)
	}
	return filepath.Join(d.objects, p), nil
}

func (d *DiskTier) Get(_ context.Context, key string) (*Object, error) {
	p, err := d.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil, ErrMiss
		}
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	meta, err := d.check(p, f)
	if err != nil {
		f.Close()
		d.corrupt(key, p, err)
		return nil, ErrMiss
	}
	if d.MaxBytes > 0 {
		d.touch(p)
	}
	return &Object{Meta: meta, Tier: "disk", f: f, off: headerSize}, nil
}

// touch records a use of p in its access time, which orders eviction. The
// time is set explicitly from one precise clock for writes and reads alike
// (file systems stamp new files from a coarse one), and mtime, which
// identifies the checked content, stays as it is.
func (d *DiskTier) touch(p string) {
	os.Chtimes(p, time.Now(), time.Time{})
}

// check reads and validates the header, and hashes the content unless this
// very file (same inode, size and mtime) was hashed before.
func (d *DiskTier) check(p string, f *os.File) (Meta, error) {
	fi, err := f.Stat()
	if err != nil {
		return Meta{}, err
	}
	var hdr [headerSize]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return Meta{}, fmt.Errorf("reading header: %w", err)
	}
	meta, err := decodeHeader(hdr[:])
	if err != nil {
		return Meta{}, err
	}
	if got := fi.Size() - headerSize; got != meta.Size {
		return Meta{}, fmt.Errorf("content is %d bytes, header says %d", got, meta.Size)
	}
	id := identity(fi)
	d.mu.Lock()
	ok := d.verified[p] == id
	d.mu.Unlock()
	if ok {
		return meta, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, headerSize, meta.Size)); err != nil {
		return Meta{}, fmt.Errorf("hashing content: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), meta.Sum[:]) {
		return Meta{}, errors.New("content does not match its SHA-256")
	}
	d.remember(p, id)
	return meta, nil
}

func (d *DiskTier) remember(p string, id fileID) {
	d.mu.Lock()
	if len(d.verified) >= maxVerified {
		clear(d.verified)
	}
	d.verified[p] = id
	d.mu.Unlock()
}

func (d *DiskTier) forget(p string) {
	d.mu.Lock()
	delete(d.verified, p)
	d.mu.Unlock()
}

func (d *DiskTier) corrupt(key, p string, err error) {
	d.forget(p)
	d.removeFile(p)
	if d.OnCorrupt != nil {
		d.OnCorrupt(key, err)
	}
}

func (d *DiskTier) Put(_ context.Context, key string, meta Meta, r io.Reader) (err error) {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	f, err := d.createTemp("put-*")
	if err != nil {
		return fmt.Errorf("disk tier: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	hdr := encodeHeader(meta)
	if _, err := f.Write(hdr[:]); err != nil {
		return fmt.Errorf("disk tier: writing %s: %w", key, err)
	}
	n, err := io.CopyN(f, r, meta.Size)
	if err != nil {
		return fmt.Errorf("disk tier: writing %s (%d of %d bytes): %w", key, n, meta.Size, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("disk tier: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("disk tier: writing %s: %w", key, err)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("disk tier: %w", err)
	}
	old, statErr := os.Lstat(p)
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("disk tier: %w", err)
	}
	if statErr == nil {
		d.nObjects.Add(-1)
		d.nBytes.Add(-old.Size())
	}
	d.nObjects.Add(1)
	d.nBytes.Add(fi.Size())
	if d.MaxBytes > 0 {
		d.touch(p)
	}
	if d.MaxBytes > 0 && d.nBytes.Load() > d.MaxBytes && d.evicting.CompareAndSwap(false, true) {
		go func() {
			defer d.evicting.Store(false)
			d.Evict()
		}()
	}
	// The content was hashed while it was fetched; this file needs no
	// second hashing on its first read.
	d.remember(p, identity(fi))
	return nil
}

func (d *DiskTier) Delete(_ context.Context, key string) error {
	p, err := d.path(key)
	if err != nil {
		return err
	}
	d.forget(p)
	if err := d.removeFile(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disk tier: %w", err)
	}
	return nil
}

func (d *DiskTier) Close() error { return nil }

// NewSpool creates a temp file in the tier's own directory, so a fetch can
// be streamed to disk once while it is hashed.
func (d *DiskTier) NewSpool() (*Spool, error) {
	f, err := d.createTemp("fetch-*")
	if err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	return &Spool{f: f, h: sha256.New()}, nil
}

// NewTempSpool makes a spool in the system's temp directory, for when the
// disk tier cannot take one (full, read-only).
func NewTempSpool() (*Spool, error) {
	f, err := os.CreateTemp("", "piraeus-fetch-*")
	if err != nil {
		return nil, err
	}
	return &Spool{f: f, h: sha256.New()}, nil
}

func encodeHeader(m Meta) [headerSize]byte {
	var b [headerSize]byte
	copy(b[0:8], headerMagic)
	binary.BigEndian.PutUint64(b[8:16], uint64(m.Size))
	copy(b[16:48], m.Sum[:])
	binary.BigEndian.PutUint64(b[48:56], uint64(m.Stored.UnixNano()))
	if !m.Expires.IsZero() {
		binary.BigEndian.PutUint64(b[56:64], uint64(m.Expires.UnixNano()))
	}
	binary.BigEndian.PutUint32(b[64:68], crc32.ChecksumIEEE(b[0:64]))
	return b
}

func decodeHeader(b []byte) (Meta, error) {
	if string(b[0:8]) != headerMagic {
		return Meta{}, errors.New("bad header magic")
	}
	if crc32.ChecksumIEEE(b[0:64]) != binary.BigEndian.Uint32(b[64:68]) {
		return Meta{}, errors.New("header checksum mismatch")
	}
	var m Meta
	m.Size = int64(binary.BigEndian.Uint64(b[8:16]))
	if m.Size < 0 {
		return Meta{}, errors.New("bad size in header")
	}
	copy(m.Sum[:], b[16:48])
	m.Stored = time.Unix(0, int64(binary.BigEndian.Uint64(b[48:56])))
	if exp := int64(binary.BigEndian.Uint64(b[56:64])); exp != 0 {
		m.Expires = time.Unix(0, exp)
	}
	return m, nil
}

func identity(fi fs.FileInfo) fileID {
	st := fileStat(fi)
	return fileID{dev: st.dev, ino: st.ino, size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

var _ Tier = (*DiskTier)(nil)
