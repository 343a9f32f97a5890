package cachetier

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// memoryEntryOverhead approximates the bookkeeping per entry so that many
// tiny objects cannot exceed the budget.
const memoryEntryOverhead = 128

// MemoryTier keeps small objects in a ristretto cache whose cost is bytes.
type MemoryTier struct {
	cache     *ristretto.Cache[string, *memoryEntry]
	maxObject int64
}

type memoryEntry struct {
	meta Meta
	data []byte
}

// NewMemoryTier returns a memory tier holding up to budget bytes, none of
// its objects larger than maxObject.
func NewMemoryTier(budget, maxObject int64) (*MemoryTier, error) {
	if budget <= 0 {
		return nil, fmt.Errorf("memory tier budget must be positive, got %d", budget)
	}
	if maxObject <= 0 || maxObject > budget {
		maxObject = budget
	}
	// About ten counters per expected entry, assuming a few KiB average.
	counters := max(budget/1024, 1000)
	c, err := ristretto.NewCache(&ristretto.Config[string, *memoryEntry]{
		NumCounters:        counters,
		MaxCost:            budget,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, fmt.Errorf("memory tier: %w", err)
	}
	return &MemoryTier{cache: c, maxObject: maxObject}, nil
}

func (m *MemoryTier) Name() string     { return "memory" }
func (m *MemoryTier) MaxObject() int64 { return m.maxObject }

func (m *MemoryTier) Get(_ context.Context, key string) (*Object, error) {
	e, ok := m.cache.Get(key)
	if !ok {
		return nil, ErrMiss
	}
	return &Object{Meta: e.meta, Tier: "memory", data: e.data}, nil
}

// Put keeps data, which the caller must not modify afterwards.
func (m *MemoryTier) Put(_ context.Context, key string, meta Meta, data []byte) error {
	if int64(len(data)) > m.maxObject {
		return nil
	}
	if cap(data)-len(data) > len(data)/8 {
		// Spare capacity (of an io.ReadAll, a grown buffer) would be
		// held unseen by the budget, which counts the length.
		data = bytes.Clone(data)
	}
	e := &memoryEntry{meta: meta, data: data}
	cost := int64(len(data)) + int64(len(key)) + memoryEntryOverhead
	if meta.Expires.IsZero() {
		m.cache.Set(key, e, cost)
		return nil
	}
	if ttl := time.Until(meta.Expires); ttl > 0 {
		m.cache.SetWithTTL(key, e, cost, ttl)
	}
	return nil
}

// Bound is the budget.
func (m *MemoryTier) Bound() int64 { return m.cache.MaxCost() }

// Usage is the part of the budget in use, in bytes.
func (m *MemoryTier) Usage() (objects, bytes int64) {
	return -1, m.cache.MaxCost() - m.cache.RemainingCost()
}

// Wait blocks until buffered writes are applied; tests use it to observe
// a Put deterministically.
func (m *MemoryTier) Wait() { m.cache.Wait() }

func (m *MemoryTier) Delete(_ context.Context, key string) error {
	m.cache.Del(key)
	return nil
}

func (m *MemoryTier) Close() error {
	m.cache.Close()
	return nil
}

var _ Tier = (*MemoryTier)(nil)
