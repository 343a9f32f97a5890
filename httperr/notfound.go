package httperr

import (
	"fmt"
	"sync"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// NotFoundCache remembers not-found answers (404, 410) for a while. It is
// bounded in entries: keys come from clients, and a flood of distinct
// missing paths must not grow it.
//
// It may be closed while fetches that outlived their proxy (a reload)
// still write to it: a closed cache forgets writes and answers nothing,
// where ristretto's own would panic (a send on its closed buffer).
type NotFoundCache struct {
	c   *ristretto.Cache[string, *Error]
	ttl time.Duration

	mu     sync.RWMutex // held for reading by each use, for writing by Close
	closed bool
}

// NewNotFoundCache keeps up to entries answers for ttl each.
func NewNotFoundCache(entries int64, ttl time.Duration) (*NotFoundCache, error) {
	c, err := ristretto.NewCache(&ristretto.Config[string, *Error]{
		// One admission counter per entry, not ristretto's suggested ten:
		// the cache is usually near empty, and ten per entry of 65,536
		// entries cost 3.6 MiB of sketch that every node carries.
		NumCounters:        entries,
		MaxCost:            entries,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("not-found cache: %w", err)
	}
	return &NotFoundCache{c: c, ttl: ttl}, nil
}

// Get returns the answer remembered for key.
func (n *NotFoundCache) Get(key string) (*Error, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return nil, false
	}
	return n.c.Get(key)
}

// Put remembers e for key if it is a not-found answer; a Get right after
// it sees it (ristretto buffers writes: Put waits for them).
func (n *NotFoundCache) Put(key string, e *Error) { n.PutFor(key, e, n.ttl) }

// PutFor is Put with a time to live of its own, at most the cache's.
func (n *NotFoundCache) PutFor(key string, e *Error, ttl time.Duration) {
	if ttl = min(ttl, n.ttl); ttl <= 0 || !IsNotFound(e) {
		return
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.closed {
		n.c.SetWithTTL(key, e, 1, ttl)
		n.c.Wait()
	}
}

// Del forgets key.
func (n *NotFoundCache) Del(key string) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.closed {
		n.c.Del(key)
	}
}

// TTL is how long an answer is remembered.
func (n *NotFoundCache) TTL() time.Duration { return n.ttl }

// Close releases the cache; later uses are no-ops. It may be called more
// than once.
func (n *NotFoundCache) Close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.closed {
		n.closed = true
		n.c.Close()
	}
}
