package cachetier

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/zap"
)

// A disk tier keeps its small immutable objects (.info and .mod files,
// checksum-database records and tiles: most of what a cold module graph
// stores) in one bbolt database beside the object files, instead of a
// file each. Creating, writing and renaming a file costs the kernel a
// fraction of a millisecond, on some disks more; a put here costs a few
// microseconds, and one transaction commits many of them.
//
// Puts are written behind: an object put is readable at once (from the
// batch waiting to be written) and committed, with an fsync, by the
// store's own goroutine together with the others that arrived
// meanwhile, so no request waits for the disk. A crash loses at most the
// objects of the batches not yet committed, which are fetched again. A
// value is stored as a file is, header and content (format.go), and read
// back checked: key, header checksum, size and SHA-256.
const (
	smallFile = layoutDir + "-small.db"
	// smallMax: immutable objects up to this size go to the small store.
	smallMax = smallRead
	// smallPending bounds the bytes put and not yet committed: a put
	// beyond it waits for the batch being written.
	smallPending = 4 << 20
	// smallOverhead is what an entry is counted for beyond its key and
	// value (bbolt's element header and page slack).
	smallOverhead = 64
	// The database's mapped pages are dropped from the resident set
	// (releaseMapped) after every commit, and after every
	// smallReleaseReads reads: a read of a tile touches three pages, and
	// on Caddy's graph releasing once a second, then every 1024 reads,
	// left 17 and 14 MiB of them resident at the peak. Releasing costs a
	// walk of the map's page tables, tens of microseconds.
	smallReleaseReads = 64
	// smallBatch bounds the entries one transaction writes: a transaction
	// reads, through the map, every leaf page it changes, and a batch of
	// thousands (a burst of prefetches) made the RSS peak 9 MiB higher.
	smallBatch = 256
)

var smallBucket = []byte("objects")

type smallStore struct {
	db      *bolt.DB
	log     *zap.Logger
	account func(objects, bytes int64) // the tier's occupancy
	noSpace func(held int64)           // a batch of held bytes found no room

	mu           sync.Mutex
	committed    *sync.Cond        // signalled when a batch is written
	pending      map[string][]byte // to be written; nil: to be deleted
	writing      map[string][]byte // the batch being written
	pendingBytes int
	closed       bool
	kick         chan struct{}
	done         chan struct{}

	reads atomic.Int64 // gets that found a value in the database
}

// openSmallStore opens the small store at path. What it holds, kept in
// the database with every batch, is told to account at once: opening
// walks nothing. A database that cannot be opened as one (damaged: a
// power loss in mid-write without a completed fsync) is set aside and a
// new one started: what it held is fetched again.
func openSmallStore(path string, log *zap.Logger, account func(objects, bytes int64), noSpace func(held int64)) (*smallStore, error) {
	// The free list is written with every commit: without it, opening
	// reads every page of the database to find the free ones (a walk of
	// the cache, and its whole size in the RSS: 117 MB once).
	opts := &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType}
	db, err := bolt.Open(path, 0o644, opts)
	if err != nil && !errors.Is(err, bolterrors.ErrTimeout) {
		if _, serr := os.Stat(path); serr == nil {
			aside := fmt.Sprintf("%s.damaged-%d", path, time.Now().Unix())
			log.Error("disk tier: the small-object database is damaged; set aside, its objects will be fetched again",
				zap.String("file", path), zap.String("moved_to", aside), zap.Error(err))
			if rerr := os.Rename(path, aside); rerr == nil {
				db, err = bolt.Open(path, 0o644, opts)
			}
		}
	}
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%s is held by another open disk tier", path)
	}
	if err != nil {
		return nil, err
	}
	var objects, bytes int64
	if err := db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(smallBucket); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(usageBucket)
		if err != nil {
			return err
		}
		objects, bytes = readUsage(b)
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	account(objects, bytes)
	releaseMapped(db) // what opening read
	s := &smallStore{db: db, log: log, account: account, noSpace: noSpace, pending: map[string][]byte{},
		kick: make(chan struct{}, 1), done: make(chan struct{})}
	s.committed = sync.NewCond(&s.mu)
	go s.run()
	return s, nil
}

var usageBucket, usageKey = []byte("usage"), []byte("usage")

// readUsage reads the objects and bytes the store holds, kept in b.
func readUsage(b *bolt.Bucket) (objects, bytes int64) {
	if v := b.Get(usageKey); len(v) == 16 {
		objects, bytes = int64(binary.BigEndian.Uint64(v[:8])), int64(binary.BigEndian.Uint64(v[8:]))
	}
	return max(objects, 0), max(bytes, 0)
}

func entrySize(key string, v []byte) int64 { return int64(len(key) + len(v) + smallOverhead) }

// sync waits until what was put or deleted before it is written.
func (s *smallStore) sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.closed && (len(s.pending) > 0 || s.writing != nil) {
		s.committed.Wait()
	}
}

// get returns the stored value of key (header and content, a copy).
func (s *smallStore) get(key string) (v []byte, ok bool) {
	if v, ok = s.queued(key); ok {
		return v, v != nil // nil: deleted, not yet written
	}
	s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(smallBucket).Get([]byte(key)); b != nil {
			v = bytes.Clone(b)
		}
		return nil
	})
	// Only a read that found a value touched its pages (a lookup of a
	// zip's key, on every disk hit of a zip, touches the few branch pages).
	if v != nil && s.reads.Add(1)%smallReleaseReads == 0 {
		releaseMapped(s.db)
	}
	return v, v != nil
}

// queued returns what was put or deleted (nil) under key and is not yet
// written, if anything: the newest first.
func (s *smallStore) queued(key string) (v []byte, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok = s.pending[key]; !ok {
		v, ok = s.writing[key]
	}
	return v, ok
}

// has reports whether key is stored, without copying its value.
func (s *smallStore) has(key string) bool {
	if v, ok := s.queued(key); ok {
		return v != nil
	}
	found := false
	s.db.View(func(tx *bolt.Tx) error {
		found = tx.Bucket(smallBucket).Get([]byte(key)) != nil
		return nil
	})
	return found
}

// put stores v, the value of key (which the store keeps), behind: it is
// readable when put returns, and written with the next batch.
func (s *smallStore) put(key string, v []byte) error {
	return s.queue(key, v)
}

// delete removes key: at once for readers, from the database with the
// next batch.
func (s *smallStore) delete(key string) error {
	return s.queue(key, nil)
}

var errSmallClosed = errors.New("disk tier closed")

func (s *smallStore) queue(key string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !s.closed && s.pendingBytes > smallPending {
		s.committed.Wait()
	}
	if s.closed {
		return errSmallClosed
	}
	if old, ok := s.pending[key]; ok {
		s.pendingBytes -= len(key) + len(old)
	}
	s.pending[key] = v
	s.pendingBytes += len(key) + len(v)
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return nil
}

// run writes the batches until the store is closed, then the last one.
func (s *smallStore) run() {
	defer close(s.done)
	for range s.kick {
		s.commit()
	}
	for s.pendingLeft() { // what was queued before the close
		s.commit()
	}
}

func (s *smallStore) pendingLeft() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0
}

// commit writes what is pending, up to smallBatch entries, in one
// transaction; what is left is written by the next one.
func (s *smallStore) commit() {
	s.mu.Lock()
	batch := s.pending
	if len(batch) == 0 {
		s.mu.Unlock()
		return
	}
	if len(batch) <= smallBatch {
		s.pending, s.pendingBytes = map[string][]byte{}, 0
	} else {
		batch = make(map[string][]byte, smallBatch)
		for k, v := range s.pending {
			if len(batch) == smallBatch {
				break
			}
			batch[k] = v
			delete(s.pending, k)
			s.pendingBytes -= len(k) + len(v)
		}
		if !s.closed { // the rest next (after a close, run writes it all)
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
	s.writing = batch
	s.mu.Unlock()
	var dObjects, dBytes int64
	err := s.db.Update(func(tx *bolt.Tx) error {
		dObjects, dBytes = 0, 0
		b := tx.Bucket(smallBucket)
		for k, v := range batch {
			kb := []byte(k)
			if old := b.Get(kb); old != nil {
				dObjects--
				dBytes -= entrySize(k, old)
			}
			var err error
			if v == nil {
				err = b.Delete(kb)
			} else {
				err = b.Put(kb, v)
				dObjects++
				dBytes += entrySize(k, v)
			}
			if err != nil {
				return err
			}
		}
		u := tx.Bucket(usageBucket)
		objects, bytes := readUsage(u)
		var v [16]byte
		binary.BigEndian.PutUint64(v[:8], uint64(max(objects+dObjects, 0)))
		binary.BigEndian.PutUint64(v[8:], uint64(max(bytes+dBytes, 0)))
		return u.Put(usageKey, v[:])
	})
	if err == nil {
		s.account(dObjects, dBytes)
		releaseMapped(s.db)
	} else {
		s.log.Error("disk tier: writing small objects failed; they will be fetched again", zap.Int("objects", len(batch)), zap.Error(err))
		if isNoSpace(err) {
			held := 0
			for k, v := range batch {
				held += len(k) + len(v)
			}
			s.noSpace(int64(held))
		}
	}
	s.mu.Lock()
	s.writing = nil
	s.committed.Broadcast()
	s.mu.Unlock()
}

// keys returns the keys of the store that keep says to.
func (s *smallStore) keys(keep func(key string) bool) []string {
	var keys []string
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(smallBucket).ForEach(func(k, _ []byte) error {
			if key := string(k); keep(key) {
				keys = append(keys, key)
			}
			return nil
		})
	})
	return keys
}

// oldest returns up to n keys of the oldest objects (by the time they
// were stored) among a random sample of the store's entries, for
// eviction when the files alone cannot bring the tier under its bound.
func (s *smallStore) oldest(n int) []smallEntry {
	var sample []smallEntry
	seen := 0
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(smallBucket).ForEach(func(k, v []byte) error {
			var stored int64 // a damaged header goes first
			if meta, _, err := decodeFixed(v); err == nil {
				stored = meta.Stored.UnixNano()
			}
			// A reservoir of 8n entries: every entry as likely to be
			// in it, whatever the store holds.
			e := smallEntry{string(k), stored, entrySize(string(k), v)}
			if seen++; len(sample) < 8*n {
				sample = append(sample, e)
			} else if i := rand.IntN(seen); i < len(sample) {
				sample[i] = e
			}
			return nil
		})
	})
	slices.SortFunc(sample, func(a, b smallEntry) int { return cmp.Compare(a.stored, b.stored) })
	return sample[:min(n, len(sample))]
}

// smallEntry is an entry of the store, for eviction.
type smallEntry struct {
	key    string
	stored int64 // unix ns
	size   int64 // as counted in the tier's usage
}

// close writes what is pending and closes the database.
func (s *smallStore) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		<-s.done
		return nil
	}
	s.closed = true
	s.committed.Broadcast()
	s.mu.Unlock()
	close(s.kick)
	<-s.done
	return s.db.Close()
}
