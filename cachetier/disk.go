package cachetier

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// Disk layout under the root:
//
//	v2/<hh>/<sha256(key) in hex, after its first two digits>[-m]
//	v2-small.db           small immutable objects, in one bbolt database (small.go)
//	tmp/   spools being written (flock'ed by their writer)
//	v2-holdings           the keys of the .info objects stored, one a line
//	v2-holdings.complete  the holdings name every .info object on disk
//
// Objects live in 256 fan-out directories named by the hash of their key,
// so the tree has a fixed shape whatever the keys (no directory per module
// or per list path); "-m" marks mutable objects (lists, @latest), which
// the maintenance pass removes once they are stale beyond StaleMax. v1/,
// the layout of earlier versions, is removed at start.
const (
	layoutDir = "v2"
	fanOut    = 256
	// blockSize rounds what each file uses, as file systems allocate it.
	blockSize = 4096
	// touchAfter: a hit records its time (for eviction) only when the
	// recorded one is older, so hot objects cost no write per hit.
	touchAfter = time.Minute
	// maintainEvery paces the background pass: eviction when over the
	// bound, and a sweep of one fan-out directory for stale mutable objects.
	maintainEvery = 30 * time.Second
	// DefaultStaleMax is how long an expired list or @latest is kept to be
	// served when the upstream fails.
	DefaultStaleMax = 7 * 24 * time.Hour
	// dirOverhead is what the fan-out directories use.
	dirOverhead = fanOut * blockSize
	// The table of files whose content hash was checked (8 bytes a slot,
	// 4-way associative, lossy) starts small and grows to four slots per
	// object held, up to verifiedMaxSlots (32 MiB).
	verifiedMinSlots = 1 << 14
	verifiedMaxSlots = 1 << 22
	// smallRead: objects up to this size are read into memory on a hit
	// (a .info, a .mod, a tile); larger ones are sent from their file.
	smallRead = 16 << 10
)

// DiskConfig configures a DiskTier.
type DiskConfig struct {
	Root string
	// MaxBytes bounds what the tier uses on disk, files rounded up to
	// whole blocks and its directories included (0: unbounded). Above it,
	// the least recently read objects are removed until 90% of it is used.
	MaxBytes int64
	// StaleMax is how long an expired mutable object is kept; default
	// DefaultStaleMax.
	StaleMax time.Duration
	Logger   *zap.Logger
}

// DiskTier stores objects as files under a root directory, written to a
// temp file and renamed into place. Each file starts with a header that
// names its key; reads check it, and hash the content once per file
// identity (device, inode, size, mtime and ctime, so an in-place edit is
// noticed).
type DiskTier struct {
	cfg                DiskConfig
	root, objects, tmp string
	log                *zap.Logger

	seed        maphash.Seed
	verified    atomic.Pointer[[]atomic.Uint64] // fingerprints of checked files, see remember
	verifiedMin int                             // slots the table starts with (verifiedMinSlots)

	nObjects, nBytes atomic.Int64 // occupancy

	fullMu     sync.Mutex
	fullAt     time.Time     // a write last failed for want of space; zero: room
	fullSize   int64         // the most bytes a spool held when it found no room
	maxBytes   atomic.Int64  // the bound, 0: none
	counted    chan struct{} // closed when the start-up count has finished
	countStart time.Time

	evictMu sync.Mutex
	kick    chan struct{} // asks the maintenance loop to evict now
	stop    chan struct{}
	wg      sync.WaitGroup
	sweep   atomic.Int32 // next fan-out directory to sweep for stale objects
	hashed  atomic.Int64 // reads that hashed a file's content

	holdMu        sync.Mutex
	holdingsFresh bool            // a fresh tier's, not yet marked complete
	indexing      map[string]bool // while an earlier version's tier is indexed: keys added

	small *smallStore // small immutable objects (small.go)
}

// NewDiskTier opens (creating if needed) a disk tier, removes the temp
// files that a crashed process left, and counts what the tier holds in the
// background: opening never waits for a walk of the cache.
func NewDiskTier(cfg DiskConfig) (*DiskTier, error) {
	if cfg.Root == "" {
		return nil, errors.New("disk tier: empty root")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	if cfg.StaleMax <= 0 {
		cfg.StaleMax = DefaultStaleMax
	}

	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	d := &DiskTier{
		cfg:        cfg,
		root:       root,
		objects:    filepath.Join(root, layoutDir),
		tmp:        filepath.Join(root, "tmp"),
		log:        cfg.Logger,
		seed:       maphash.MakeSeed(),
		countStart: time.Now(),
		kick:       make(chan struct{}, 1),
		counted:    make(chan struct{}),
		stop:       make(chan struct{}),
	}
	d.resetVerified(verifiedMinSlots)
	if err := d.SetMaxBytes(cfg.MaxBytes); err != nil {
		return nil, err
	}
	fresh := !dirExists(d.objects)
	if err := d.mkdirs(); err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	d.nBytes.Store(dirOverhead)
	small, err := openSmallStore(filepath.Join(root, smallFile), d.log, func(objects, bytes int64) {
		d.nObjects.Add(objects)
		d.nBytes.Add(bytes)
	}, d.noteNoSpace)
	if err != nil {
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	d.small = small
	d.removeStaleSpools()
	d.openHoldings(fresh)
	d.wg.Add(1)
	go d.background()
	return d, nil
}

func (d *DiskTier) mkdirs() error {
	for i := range fanOut {
		if err := os.MkdirAll(filepath.Join(d.objects, fmt.Sprintf("%02x", i)), 0o755); err != nil {
			return err
		}
	}
	return os.MkdirAll(d.tmp, 0o755)
}

// background removes the old layout, counts the objects, then maintains
// the tier until Close.
func (d *DiskTier) background() {
	defer d.wg.Done()
	if old := filepath.Join(d.root, "v1"); dirExists(old) {
		d.log.Info("removing the cache layout of an earlier version", zap.String("dir", old))
		os.RemoveAll(old)
	}
	d.holdMu.Lock()
	indexing := d.indexing != nil
	d.holdMu.Unlock()
	if indexing {
		d.indexHoldings()
	} else {
		d.compactHoldings()
	}
	d.count()
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	for {
		d.Evict()
		select {
		case <-d.stop:
			return
		case <-d.kick:
		case <-t.C:
			d.sweepStale()
		}
	}
}

// count adds up the objects once. Files written since the count started
// are counted by Commit instead; a mutable object replaced or removed
// while the count runs may be off by its size until it is next replaced.
func (d *DiskTier) count() {
	defer close(d.counted)
	for i := range fanOut {
		select {
		case <-d.stop:
			return
		default:
		}
		entries, _ := os.ReadDir(filepath.Join(d.objects, fmt.Sprintf("%02x", i)))
		for _, e := range entries {
			if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.ModTime().Before(d.countStart) {
				d.nObjects.Add(1)
				d.nBytes.Add(used(info.Size()))
			}
		}
	}
}

func used(size int64) int64 { return (size + blockSize - 1) / blockSize * blockSize }

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// Bound is the bound on what the tier uses (0: none).
func (d *DiskTier) Bound() int64 { return d.maxBytes.Load() }

// Check writes a block to a temp file and removes it: the tier can take
// objects (its file system is writable and not full).
func (d *DiskTier) Check(context.Context) error {
	f, err := d.createTemp("check-*")
	if err == nil {
		_, err = f.Write(make([]byte, blockSize))
		if serr := f.Sync(); err == nil {
			err = serr
		}
		f.Close()
		os.Remove(f.Name())
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the cause, without the cache's path
		}
		return fmt.Errorf("disk not writable: %w", err)
	}
	if ago, full := d.fullFor(); full {
		return fmt.Errorf("disk full: a write failed with no space left on device %s ago", ago.Round(time.Second))
	}
	return nil
}

// readKey is the key a file's header names.
func readKey(p string) (string, bool) {
	f, err := os.Open(p)
	if err != nil {
		return "", false
	}
	defer f.Close()
	hdr := make([]byte, fixedHeader+maxKeyLen)
	n, _ := f.ReadAt(hdr, 0)
	if n < fixedHeader {
		return "", false
	}
	_, keyLen, err := decodeFixed(hdr[:fixedHeader])
	if err != nil || fixedHeader+keyLen > n {
		return "", false
	}
	key := string(hdr[fixedHeader : fixedHeader+keyLen])
	return key, checkHeader(hdr[:fixedHeader+keyLen], key) == nil
}

// SetMaxBytes changes the bound (0: none).
func (d *DiskTier) SetMaxBytes(n int64) error {
	if n != 0 && n <= dirOverhead {
		return fmt.Errorf("disk tier: a bound of %d bytes leaves no room besides the directories (%d bytes)", n, dirOverhead)
	}
	d.maxBytes.Store(n)
	if n > 0 && d.nBytes.Load() > n {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Counted is closed when the start-up count has finished: until then
// Usage is short of what the tier holds, and nothing is evicted.
func (d *DiskTier) Counted() <-chan struct{} { return d.counted }

func (d *DiskTier) isCounted() bool {
	select {
	case <-d.counted:
		return true
	default:
		return false
	}
}

// Usage is the number of objects on disk and the bytes the tier uses.
func (d *DiskTier) Usage() (objects, bytes int64) { return d.nObjects.Load(), d.nBytes.Load() }

func (d *DiskTier) Name() string     { return "disk" }
func (d *DiskTier) MaxObject() int64 { return 1<<63 - 1 }

// Root is the directory the tier was opened on.
func (d *DiskTier) Root() string { return d.root }

// Close stops the background work.
func (d *DiskTier) Close() error {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.wg.Wait()
	return d.small.close()
}

// removeStaleSpools removes temp files that no live process holds: every
// spool is locked by its writer, so one whose lock can be taken was left
// by a process that died (kill -9, power loss) in mid-write.
func (d *DiskTier) removeStaleSpools() {
	SweepTemp(d.tmp, "")
}

// paths are the files an object of key may be in: immutable, then mutable.
func (d *DiskTier) paths(key string) (immutable, mutable string, err error) {
	if key == "" || len(key) > maxKeyLen {
		return "", "", fmt.Errorf("disk tier: refusing key %q", Truncate(key))
	}
	sum := sha256.Sum256([]byte(key))
	name := hex.EncodeToString(sum[:])
	immutable = filepath.Join(d.objects, name[:2], name[2:])
	return immutable, immutable + "-m", nil
}

func (d *DiskTier) pathFor(key string, meta Meta) (string, string, error) {
	imm, mut, err := d.paths(key)
	if meta.Expires.IsZero() {
		return imm, mut, err
	}
	return mut, imm, err
}

func (d *DiskTier) Get(_ context.Context, key string) (*Object, error) {
	imm, mut, err := d.paths(key)
	if err != nil {
		return nil, err
	}
	if v, ok := d.small.get(key); ok {
		meta, data, err := decodeValue(key, v, nil)
		if err != nil {
			d.small.delete(key)
			d.log.Error("corrupt cache object removed; it will be fetched again", zap.String("key", Truncate(key)), zap.String("file", d.small.db.Path()), zap.Error(err))
			return nil, ErrMiss
		}
		return &Object{Meta: meta, Tier: "disk", data: data}, nil
	}
	for _, p := range []string{imm, mut} {
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("disk tier: %w", err)
		}
		meta, off, data, err := d.check(p, key, f)
		if err != nil {
			f.Close()
			d.corrupt(key, p, err)
			return nil, ErrMiss
		}
		if data != nil {
			// Read in whole: the response then goes out in one write with
			// its headers, where sendfile(2) would take two system calls.
			f.Close()
			return &Object{Meta: meta, Tier: "disk", data: data}, nil
		}
		obj := newFileObject(meta, "disk", f, off)
		obj.own = true // opened for this reader alone; check saw the content end the file
		return obj, nil
	}
	return nil, ErrMiss
}

// check reads and validates the header of the file at p, opened as f, and
// hashes its content unless this very file was checked before. A file
// whose content is at most smallRead bytes is read whole, header and
// content in one read, and its content returned; data is nil otherwise.
func (d *DiskTier) check(p, key string, f *os.File) (meta Meta, off int64, data []byte, err error) {
	fi, err := f.Stat()
	if err != nil {
		return Meta{}, 0, nil, err
	}
	hl := headerLen(key)
	whole := fi.Size() >= hl && fi.Size()-hl <= smallRead
	buf := make([]byte, hl)
	if whole {
		buf = make([]byte, fi.Size())
	}
	if _, err := f.ReadAt(buf, 0); err != nil {
		return Meta{}, 0, nil, fmt.Errorf("reading header: %w", err)
	}
	hdr := buf[:hl]
	meta, keyLen, err := decodeFixed(hdr)
	if err != nil {
		return Meta{}, 0, nil, err
	}
	if int64(keyLen) != int64(len(key)) {
		return Meta{}, 0, nil, fmt.Errorf("stored under a key of %d bytes, read as %q", keyLen, Truncate(key))
	}
	if err := checkHeader(hdr, key); err != nil {
		return Meta{}, 0, nil, err
	}
	if got := fi.Size() - hl; got != meta.Size {
		return Meta{}, 0, nil, fmt.Errorf("content is %d bytes, header says %d", got, meta.Size)
	}
	if whole {
		data = buf[hl:]
	}
	st := fileStat(fi)
	if !d.isVerified(p, fi, st) {
		d.hashed.Add(1)
		var sum []byte
		if whole {
			s := sha256.Sum256(data)
			sum = s[:]
		} else {
			h := sha256.New()
			if _, err := io.Copy(h, io.NewSectionReader(f, hl, meta.Size)); err != nil {
				return Meta{}, 0, nil, fmt.Errorf("hashing content: %w", err)
			}
			sum = h.Sum(nil)
		}
		if !bytes.Equal(sum, meta.Sum[:]) {
			return Meta{}, 0, nil, errors.New("content does not match its SHA-256")
		}
		d.remember(p, fi, st)
	}
	if d.maxBytes.Load() > 0 && time.Since(time.Unix(0, st.atime)) > touchAfter {
		d.touch(p, f)
	}
	return meta, hl, data, nil
}

// touch records a read of p in its access time, which orders eviction.
// The time is set explicitly (file systems mounted noatime or relatime
// keep no reliable one); setting it changes the ctime, so the file's new
// identity is remembered as checked.
func (d *DiskTier) touch(p string, f *os.File) {
	if os.Chtimes(p, time.Now(), time.Time{}) != nil {
		return
	}
	if fi, err := f.Stat(); err == nil {
		d.remember(p, fi, fileStat(fi))
	}
}

// fingerprint identifies a file's path and identity; a file edited in
// place, replaced or restored changes it.
func (d *DiskTier) fingerprint(p string, fi fs.FileInfo, st sysStat, slots int) (slot int, fp uint64) {
	var h maphash.Hash
	h.SetSeed(d.seed)
	h.WriteString(p)
	bucket := h.Sum64()
	var b [48]byte
	binary.LittleEndian.PutUint64(b[0:], st.dev)
	binary.LittleEndian.PutUint64(b[8:], st.ino)
	binary.LittleEndian.PutUint64(b[16:], uint64(fi.Size()))
	binary.LittleEndian.PutUint64(b[24:], uint64(fi.ModTime().UnixNano()))
	binary.LittleEndian.PutUint64(b[32:], uint64(st.ctime))
	h.Write(b[:40])
	fp = h.Sum64() | 1 // never 0, the empty slot
	return int(bucket&uint64(slots-1)) &^ 3, fp
}

func (d *DiskTier) isVerified(p string, fi fs.FileInfo, st sysStat) bool {
	table := *d.verified.Load()
	slot, fp := d.fingerprint(p, fi, st, len(table))
	for i := range 4 {
		if table[slot+i].Load() == fp {
			return true
		}
	}
	return false
}

// remember records that the file's content matched its hash. The table is
// a lossy cache: a file pushed out is hashed again on its next read, and
// so is every file once when the table grows with the tier.
func (d *DiskTier) remember(p string, fi fs.FileInfo, st sysStat) {
	table := *d.growVerified()
	slot, fp := d.fingerprint(p, fi, st, len(table))
	for i := range 4 { // a free slot of the set, else one chosen by fp
		v := table[slot+i].Load()
		if v == fp || v == 0 && table[slot+i].CompareAndSwap(0, fp) {
			return
		}
	}
	table[slot+int(fp>>62)].Store(fp)
}

// growVerified returns the table of checked files, first replacing it by
// a larger one if the tier outgrew it. While the start-up count runs the
// table is left alone, and sized once when it ends: files checked
// meanwhile are hashed once more, not at every doubling.
func (d *DiskTier) growVerified() *[]atomic.Uint64 {
	tp := d.verified.Load()
	select {
	case <-d.counted:
	default:
		return tp
	}
	if want := verifiedSlotsFor(d.nObjects.Load(), d.verifiedMin); want > len(*tp) {
		table := make([]atomic.Uint64, want)
		if d.verified.CompareAndSwap(tp, &table) {
			return &table
		}
		return d.verified.Load()
	}
	return tp
}

// resetVerified starts an empty table of checked files of min slots (a
// power of two, at least 4), the size it never shrinks below.
func (d *DiskTier) resetVerified(min int) {
	d.verifiedMin = min
	table := make([]atomic.Uint64, min)
	d.verified.Store(&table)
}

// verifiedSlotsFor is the table size for n objects: a power of two, four
// slots per object, within the bounds.
func verifiedSlotsFor(n int64, min int) int {
	slots := min
	for int64(slots) < 4*n && slots < verifiedMaxSlots {
		slots *= 2
	}
	return slots
}

func (d *DiskTier) corrupt(key, p string, err error) {
	d.removeFile(p)
	d.log.Error("corrupt cache file removed; it will be fetched again", zap.String("key", Truncate(key)), zap.String("file", p), zap.Error(err))
}

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
	d.nBytes.Add(-used(info.Size()))
	return nil
}

// createTemp makes a locked temp file in the tier's tmp directory,
// recreating the tier's directories if someone removed them.
func (d *DiskTier) createTemp(pattern string) (*os.File, error) {
	f, err := CreateTemp(d.tmp, pattern)
	if errors.Is(err, fs.ErrNotExist) {
		if err = d.mkdirs(); err == nil {
			f, err = CreateTemp(d.tmp, pattern)
		}
	}
	return f, err
}

// NewSpool creates a temp file in the tier's own directory, so a fetch
// is streamed to disk once, hashed on the way, and renamed into place.
func (d *DiskTier) NewSpool(key string) (*Spool, error) {
	if _, _, err := d.paths(key); err != nil {
		return nil, err
	}
	s, err := newMemSpool(key, func() (*os.File, error) {
		f, err := d.createTemp("fetch-*")
		if err == nil {
			return f, nil
		}
		// The tier cannot take the spool (full, read-only, removed): it
		// goes on in the system's temp directory, as Tiered does when
		// NewSpool fails, so the body is still fetched once; such a
		// spool is served from, uncached (Commit refuses it).
		if isNoSpace(err) {
			d.noteNoSpace(0)
		}
		d.log.Warn("disk tier cannot take a spool; fetching into the system's temp directory, uncached", zap.String("key", Truncate(key)), zap.Error(err))
		return createSystemTemp()
	})
	if s != nil {
		s.noSpace, s.disk = d.noteNoSpace, d
	}
	return s, err
}

// fullHold is how long a write that failed for want of space keeps the
// tier not ready, unless an object at least as large is stored first: a
// node taken out of rotation for it looks again after that long.
const fullHold = 30 * time.Second

// noteNoSpace records a write that failed for want of space, the spool
// holding held bytes.
func (d *DiskTier) noteNoSpace(held int64) {
	d.fullMu.Lock()
	defer d.fullMu.Unlock()
	if d.fullAt.IsZero() {
		d.log.Error("disk tier is full: objects are served without being stored until there is room",
			zap.String("root", d.root), zap.Int64("spooled_bytes", held))
	}
	d.fullAt, d.fullSize = time.Now(), max(d.fullSize, held)
}

// noteStored clears a full disk once an object at least as large as the
// one that found no room has been stored.
func (d *DiskTier) noteStored(size int64) {
	d.fullMu.Lock()
	defer d.fullMu.Unlock()
	if !d.fullAt.IsZero() && size >= d.fullSize {
		d.log.Info("disk tier has room again", zap.String("root", d.root))
		d.fullAt, d.fullSize = time.Time{}, 0
	}
}

// fullFor is how long ago a write last failed for want of space, while
// that keeps the tier not ready.
func (d *DiskTier) fullFor() (time.Duration, bool) {
	d.fullMu.Lock()
	defer d.fullMu.Unlock()
	if d.fullAt.IsZero() {
		return 0, false
	}
	ago := time.Since(d.fullAt)
	if ago > fullHold {
		d.fullAt, d.fullSize = time.Time{}, 0
		return 0, false
	}
	return ago, true
}

// Commit writes the spool's header and renames its file into place; the
// object returned reads the same file.
func (d *DiskTier) Commit(_ context.Context, key string, s *Spool, meta Meta) (*Object, error) {
	if s.done || s.key != key {
		return nil, fmt.Errorf("disk tier: spool of %q cannot be committed as %q", Truncate(s.key), Truncate(key))
	}
	if data, mem := s.InMemory(); mem {
		if s.disk != d {
			return nil, errors.New("disk tier: spool is not the tier's own")
		}
		if got := s.Meta(meta.Expires); got.Size != meta.Size || got.Sum != meta.Sum {
			return nil, fmt.Errorf("disk tier: %s does not match its meta", Truncate(key))
		}
		if small(meta) {
			if err := d.putSmall(key, meta, data); err != nil {
				return nil, err
			}
			s.done = true
			return NewTierObject(meta, "disk", data), nil
		}
		if err := s.OnDisk(); err != nil {
			if isNoSpace(err) {
				d.noteNoSpace(s.n)
			}
			return nil, fmt.Errorf("disk tier: %w", err)
		}
	}
	if filepath.Dir(s.f.Name()) != d.tmp {
		return nil, errors.New("disk tier: spool is not the tier's own")
	}
	p, other, err := d.pathFor(key, meta)
	if err != nil {
		return nil, err
	}
	if _, err := s.f.WriteAt(encodeHeader(key, meta), 0); err != nil {
		if isNoSpace(err) {
			d.noteNoSpace(s.n)
		}
		return nil, fmt.Errorf("disk tier: writing %s: %w", Truncate(key), err)
	}
	old, statErr := os.Lstat(p)
	f, err := renameOpen(s.f, p)
	if errors.Is(err, fs.ErrNotExist) { // a fan-out directory was removed
		if err = d.mkdirs(); err == nil {
			f, err = renameOpen(s.f, p)
		}
	}
	if err != nil {
		if isNoSpace(err) {
			d.noteNoSpace(s.n)
		}
		return nil, fmt.Errorf("disk tier: %w", err)
	}
	s.done = true
	d.noteStored(s.n)
	if statErr == nil {
		d.nObjects.Add(-1)
		d.nBytes.Add(-used(old.Size()))
	}
	d.removeFile(other) // an object of the key under its other mutability
	if d.maxBytes.Load() > 0 {
		// Stamped from the same precise clock as reads (file systems
		// stamp new files from a coarse one), for eviction's order.
		os.Chtimes(p, time.Now(), time.Time{})
	}
	if fi, err := f.Stat(); err == nil {
		d.nObjects.Add(1)
		d.nBytes.Add(used(fi.Size()))
		d.remember(p, fi, fileStat(fi)) // hashed while it was fetched
	}
	if statErr != nil && isHolding(key, meta) {
		d.addHolding(key)
	}
	if d.maxBytes.Load() > 0 && d.nBytes.Load() > d.maxBytes.Load() {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
	return newFileObject(meta, "disk", f, s.off), nil
}

// small reports whether an object of meta goes to the small store.
func small(meta Meta) bool { return meta.Expires.IsZero() && meta.Size <= smallMax }

// putSmall stores an immutable object of at most smallMax bytes in the
// small store, and removes a file of the key (an earlier version's, or
// the object's while it was mutable).
func (d *DiskTier) putSmall(key string, meta Meta, data []byte) error {
	held := d.small.has(key)
	v := append(encodeHeader(key, meta), data...)
	if err := d.small.put(key, v); err != nil {
		return fmt.Errorf("disk tier: %w", err)
	}
	imm, mut, _ := d.paths(key)
	held = d.removeFile(imm) == nil || held
	d.removeFile(mut)
	d.noteStored(meta.Size)
	if !held && isHolding(key, meta) {
		d.addHolding(key)
	}
	if d.maxBytes.Load() > 0 && d.nBytes.Load() > d.maxBytes.Load() {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// Put stores a small object: an immutable one in the small store, else
// through a spool.
func (d *DiskTier) Put(ctx context.Context, key string, meta Meta, data []byte) error {
	if _, _, err := d.paths(key); err != nil {
		return err
	}
	if int64(len(data)) == meta.Size && small(meta) {
		if sha256.Sum256(data) != meta.Sum {
			return fmt.Errorf("disk tier: %s does not match its meta", Truncate(key))
		}
		return d.putSmall(key, meta, data)
	}
	s, err := d.NewSpool(key)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Fill(bytes.NewReader(data), int64(len(data))); err != nil {
		return fmt.Errorf("disk tier: writing %s: %w", Truncate(key), err)
	}
	if got := s.Meta(meta.Expires); got.Size != meta.Size || got.Sum != meta.Sum {
		return fmt.Errorf("disk tier: %s does not match its meta", Truncate(key))
	}
	obj, err := d.Commit(ctx, key, s, meta)
	if err != nil {
		return err
	}
	return obj.Close()
}

func (d *DiskTier) Delete(_ context.Context, key string) error {
	imm, mut, err := d.paths(key)
	if err != nil {
		return err
	}
	var errs []error
	if err := d.small.delete(key); err != nil {
		errs = append(errs, err)
	}
	for _, p := range []string{imm, mut} {
		if err := d.removeFile(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("disk tier: %w", errors.Join(errs...))
	}
	return nil
}

// Flush waits until the small objects put so far are written to the
// small store's database (for tests and tools that read it from outside).
func (d *DiskTier) Flush() { d.small.sync() }

// Holds reports whether a file holds key's object (its content is not
// read: a damaged file is found, and removed, when it is read).
func (d *DiskTier) Holds(_ context.Context, key string) (bool, error) {
	if _, _, err := d.paths(key); err != nil {
		return false, nil
	}
	if d.small.has(key) {
		return true, nil
	}
	_, ok := d.File(key)
	return ok, nil
}

// File is the file that holds key's object, if there is one; for tools
// and tests that look at the cache from outside.
func (d *DiskTier) File(key string) (string, bool) {
	imm, mut, err := d.paths(key)
	if err != nil {
		return "", false
	}
	for _, p := range []string{imm, mut} {
		if _, err := os.Lstat(p); err == nil {
			return p, true
		}
	}
	return imm, false
}

// Evict removes the least recently read objects until the objects use at
// most 90% of what MaxBytes leaves them besides the directories. It samples fan-out directories in random order
// until it has enough candidates (all of them for a small cache, a few
// thousand files for a large one), so its cost does not grow with the
// cache, and evicts the oldest of them; it waits for the start-up count.
func (d *DiskTier) Evict() {
	if d.maxBytes.Load() <= 0 || !d.isCounted() {
		return
	}
	d.evictMu.Lock()
	defer d.evictMu.Unlock()
	target := dirOverhead + (d.maxBytes.Load()-dirOverhead)/10*9
	for round := 0; round < 1024 && d.nBytes.Load() > target; round++ {
		type candidate struct {
			path  string
			atime int64
		}
		var pool []candidate
		for _, i := range rand.Perm(fanOut) {
			dir := filepath.Join(d.objects, fmt.Sprintf("%02x", i))
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
					pool = append(pool, candidate{filepath.Join(dir, e.Name()), fileStat(info).atime})
				}
			}
			if len(pool) >= 2048 {
				break
			}
		}
		if len(pool) == 0 {
			d.evictSmall(target)
			return
		}
		slices.SortFunc(pool, func(a, b candidate) int { return cmp.Compare(a.atime, b.atime) })
		// Evict the oldest quarter of a large sample (the rest may be
		// younger than files in other directories), all of a full scan.
		n := len(pool)
		if n >= 2048 {
			n /= 4
		}
		for _, c := range pool[:n] {
			if d.nBytes.Load() <= target {
				return
			}
			d.removeFile(c.path)
		}
	}
}

// evictSmall removes the oldest objects of the small store until the tier
// is under target, once no file is left to remove.
func (d *DiskTier) evictSmall(target int64) {
	for round := 0; round < 1024 && d.nBytes.Load() > target; round++ {
		entries := d.small.oldest(256)
		if len(entries) == 0 {
			return
		}
		over := d.nBytes.Load() - target
		for _, e := range entries {
			if over <= 0 {
				break
			}
			d.small.delete(e.key)
			over -= e.size
		}
		d.small.sync() // the occupancy follows the commit
	}
}

// sweepStale removes, from one fan-out directory per call, the mutable
// objects that expired more than StaleMax ago.
func (d *DiskTier) sweepStale() {
	i := int(d.sweep.Add(1)) % fanOut
	dir := filepath.Join(d.objects, fmt.Sprintf("%02x", i))
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), "-m") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if expires, ok := readExpiry(p); ok && time.Since(expires) > d.cfg.StaleMax {
			d.removeFile(p)
		}
	}
}

func readExpiry(p string) (time.Time, bool) {
	f, err := os.Open(p)
	if err != nil {
		return time.Time{}, false
	}
	defer f.Close()
	var hdr [fixedHeader]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return time.Time{}, false
	}
	meta, _, err := decodeFixed(hdr[:])
	return meta.Expires, err == nil && !meta.Expires.IsZero()
}

// SweepStale sweeps every fan-out directory once; the maintenance pass
// does one per interval.
func (d *DiskTier) SweepStale() {
	for range fanOut {
		d.sweepStale()
	}
}

var _ Store = (*DiskTier)(nil)
