package cachetier

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Tiered composes tiers in lookup order, fastest first, with a Store (the
// disk) last as the tier of record: every fetched object is committed to
// it, and written to each faster tier whose size limit it fits.
type Tiered struct {
	upper []Tier
	store Store
	all   []Tier
	// onError hears of tier failures (not misses) that Get and the
	// writes work around.
	onError func(tier, op, key string, err error)
}

// sharedTier is implemented by tiers that other nodes write too: what they
// hold is checked by Get's caller before it is served or promoted, and a
// value that fails is rejected (deleted and logged).
type sharedTier interface {
	Shared() bool
	Reject(ctx context.Context, key string, why error)
}

// ErrRejected is wrapped by a Get check's error when the object must not
// be kept (it contradicts the checksum database): the shared tier deletes
// it. Any other error of the check only skips the tier for this read.
var ErrRejected = errors.New("rejected")

// purger is implemented by tiers that remember a purge (Redis's
// tombstones), so that no node writes back what was purged.
type purger interface {
	Purge(ctx context.Context, key string) error
}

// NewTiered returns the tiers upper..., then store. onError, if not nil,
// hears of tier failures that are worked around.
func NewTiered(onError func(tier, op, key string, err error), store Store, upper ...Tier) *Tiered {
	all := append(upper[:len(upper):len(upper)], store)
	return &Tiered{upper: upper, store: store, all: all, onError: onError}
}

// Tiers lists the tiers in lookup order.
func (t *Tiered) Tiers() []Tier { return t.all }

// Store is the tier of record.
func (t *Tiered) Store() Store { return t.store }

// Get looks key up tier by tier. An object from a shared tier is given to
// check first, if check is not nil: one that fails is rejected there and
// the lookup goes on. A hit below the first tier is promoted to every
// faster tier it fits, unless it has expired.
func (t *Tiered) Get(ctx context.Context, key string, check func(*Object) error) (*Object, error) {
	for i, tier := range t.all {
		obj, err := tier.Get(ctx, key)
		if errors.Is(err, ErrMiss) {
			continue
		}
		if err != nil {
			t.report(tier, "get", key, err)
			continue
		}
		if st, ok := tier.(sharedTier); ok && st.Shared() && check != nil {
			if err := check(obj); err != nil {
				obj.Close()
				if errors.Is(err, ErrRejected) {
					st.Reject(ctx, key, err)
				} else {
					t.report(tier, "check", key, err)
				}
				continue
			}
		}
		if i > 0 {
			obj = t.promote(ctx, key, obj, t.all[:i])
		}
		return obj, nil
	}
	return nil, ErrMiss
}

func (t *Tiered) promote(ctx context.Context, key string, obj *Object, upper []Tier) *Object {
	if !obj.Fresh(time.Now()) {
		return obj
	}
	for _, u := range upper {
		if obj.Size > u.MaxObject() {
			continue
		}
		data, inMemory := obj.Bytes()
		if !inMemory {
			// Read the file once; the caller is served from these bytes.
			var err error
			if data, err = obj.Content(); err != nil {
				t.report(t.store, "promote", key, err)
				return obj
			}
			obj.Close()
			obj = &Object{Meta: obj.Meta, Tier: obj.Tier, data: data}
		}
		t.put(ctx, u, key, obj.Meta, data)
	}
	return obj
}

func (t *Tiered) put(ctx context.Context, tier Tier, key string, meta Meta, data []byte) {
	if err := tier.Put(ctx, key, meta, data); err != nil {
		t.report(tier, "put", key, err)
	}
}

// NewSpool starts a temp file for a fetch of key: in the store, or in the
// system's temp directory when the store cannot take one (then the object
// is served from it, uncached).
func (t *Tiered) NewSpool(key string) (*Spool, error) {
	s, err := t.store.NewSpool(key)
	if err != nil {
		t.report(t.store, "spool", key, err)
		return NewTempSpool(key)
	}
	return s, nil
}

// Commit stores a checked spool in the store, taking it over, and writes
// the object through the faster tiers it fits. The object returned reads
// the spool's own file (or memory, for a small object), so it stays
// readable whatever happens to the stored copy. When the store fails,
// the object is still returned, read from the spool and uncached, with
// the store's error.
func (t *Tiered) Commit(ctx context.Context, key string, s *Spool, meta Meta) (*Object, error) {
	obj, err := t.store.Commit(ctx, key, s, meta)
	if err != nil {
		return s.Object(meta, "spool"), fmt.Errorf("storing %s: %w", truncate(key), err)
	}
	var data []byte
	for _, u := range t.upper {
		if meta.Size > u.MaxObject() {
			continue
		}
		if data == nil {
			if data, err = obj.Content(); err != nil {
				t.report(t.store, "read", key, err)
				return obj, nil
			}
		}
		t.put(ctx, u, key, meta, data)
	}
	if data != nil {
		obj.Close()
		obj = &Object{Meta: meta, Tier: obj.Tier, data: data}
	}
	return obj, nil
}

// PutSmall writes small content through the tiers: every one, the store
// included, if durable; else only those above the store (for answers,
// such as version queries, that are never written to disk).
func (t *Tiered) PutSmall(ctx context.Context, key string, meta Meta, data []byte, durable bool) error {
	if durable {
		if err := t.store.Put(ctx, key, meta, data); err != nil {
			return fmt.Errorf("storing %s: %w", truncate(key), err)
		}
	}
	for _, u := range t.upper {
		if meta.Size <= u.MaxObject() {
			t.put(ctx, u, key, meta, data)
		}
	}
	return nil
}

// Delete removes key from every tier, leaving a tombstone in those that
// keep one, so that no node writes an older copy back.
func (t *Tiered) Delete(ctx context.Context, key string) error {
	var errs []error
	for _, tier := range t.all {
		var err error
		if p, ok := tier.(purger); ok {
			err = p.Purge(ctx, key)
		} else {
			err = tier.Delete(ctx, key)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DeleteLocal removes key from the tiers this node alone holds (memory,
// disk), for a purge another node made.
func (t *Tiered) DeleteLocal(ctx context.Context, key string) error {
	var errs []error
	for _, tier := range t.all {
		if st, ok := tier.(sharedTier); ok && st.Shared() {
			continue
		}
		if err := tier.Delete(ctx, key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Check asks every tier that can say whether it works.
func (t *Tiered) Check(ctx context.Context) error {
	for _, tier := range t.all {
		if c, ok := tier.(Checker); ok {
			if err := c.Check(ctx); err != nil {
				return fmt.Errorf("%s tier: %w", tier.Name(), err)
			}
		}
	}
	return nil
}

// List lists the keys the tier of record holds (see Lister).
func (t *Tiered) List(ctx context.Context, after string, limit int) ([]string, string, error) {
	l, ok := t.store.(Lister)
	if !ok {
		return nil, "", fmt.Errorf("the %s tier cannot list what it holds", t.store.Name())
	}
	return l.List(ctx, after, limit)
}

// Close closes every tier.
func (t *Tiered) Close() error {
	var errs []error
	for _, tier := range t.all {
		errs = append(errs, tier.Close())
	}
	return errors.Join(errs...)
}

func (t *Tiered) report(tier Tier, op, key string, err error) {
	if t.onError != nil {
		t.onError(tier.Name(), op, key, err)
	}
}
