package cachetier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Tiered composes tiers in lookup order, fastest first, with a Store (a
// disk or a bucket) last as the tier of record: every fetched object is
// committed to it, and written to each faster tier whose size limit it
// fits. A Store above the last one (a bounded local disk above a bucket)
// is a local copy: fetches spool in it, objects are streamed into it
// (never through memory), and it takes what the store holds as it is read.
type Tiered struct {
	upper []Tier // above the store, the local store excepted
	local Store  // a Store above the store, or nil
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
	t := &Tiered{store: store, all: append(upper[:len(upper):len(upper)], store), onError: onError}
	for _, u := range upper {
		if s, ok := u.(Store); ok && t.local == nil {
			t.local = s
			continue
		}
		t.upper = append(t.upper, u)
	}
	return t
}

// Uploader is implemented by a store that can take an object from a
// reader without taking over a spool (a bucket), so that a local store
// above it can take the spool.
type Uploader interface {
	Upload(ctx context.Context, key string, meta Meta, r io.Reader) error
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
		if u == t.local {
			t.copyLocal(ctx, key, obj)
			continue
		}
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

// copyLocal streams obj into the local store through a spool of its own,
// checking what was copied: obj stays readable by the caller.
func (t *Tiered) copyLocal(ctx context.Context, key string, obj *Object) {
	if data, ok := obj.Bytes(); ok && obj.Size <= SmallObject {
		t.put(ctx, t.local, key, obj.Meta, data)
		return
	}
	sp, err := t.local.NewSpool(key)
	if err != nil {
		t.report(t.local, "promote", key, err)
		return
	}
	defer sp.Close()
	if err := sp.Fill(obj.Reader(), obj.Size); err != nil {
		t.report(t.local, "promote", key, err)
		return
	}
	if got := sp.Meta(time.Time{}); got.Size != obj.Size || got.Sum != obj.Sum {
		t.report(t.local, "promote", key, errors.New("copy does not match the object read"))
		return
	}
	copied, err := t.local.Commit(ctx, key, sp, obj.Meta)
	if err != nil {
		t.report(t.local, "promote", key, err)
		return
	}
	copied.Close()
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
	spooler := t.store
	if t.local != nil {
		spooler = t.local
	}
	s, err := spooler.NewSpool(key)
	if err != nil {
		t.report(spooler, "spool", key, err)
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
//
// With a local store, the object is uploaded to the store from the spool,
// which the local store then takes: a failed upload is reported and the
// object stays cached locally.
func (t *Tiered) Commit(ctx context.Context, key string, s *Spool, meta Meta) (*Object, error) {
	var obj *Object
	var err error
	if up, ok := t.store.(Uploader); ok && t.local != nil {
		upErr := up.Upload(ctx, key, meta, s.Reader())
		obj, err = t.local.Commit(ctx, key, s, meta)
		switch {
		case err != nil && upErr == nil: // in the store; served from the spool
			t.report(t.local, "put", key, err)
			obj, err = s.Object(meta, t.store.Name()), nil
		case err != nil:
			err = errors.Join(upErr, err)
		case upErr != nil: // cached here only
			t.report(t.store, "put", key, upErr)
		}
	} else {
		obj, err = t.store.Commit(ctx, key, s, meta)
	}
	if err != nil {
		return s.Object(meta, SpoolTier), fmt.Errorf("storing %s: %w", Truncate(key), err)
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
			return fmt.Errorf("storing %s: %w", Truncate(key), err)
		}
	}
	if t.local != nil {
		t.put(ctx, t.local, key, meta, data)
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

// Presigner is implemented by a store that can hand out short-lived URLs
// serving an object's content (a bucket).
type Presigner interface {
	Presign(ctx context.Context, key string, minSize int64, ttl time.Duration) (string, error)
}

// CanPresign reports whether the store can hand out pre-signed URLs.
func (t *Tiered) CanPresign() bool {
	_, ok := t.store.(Presigner)
	return ok
}

// Presign returns a URL serving key's content from the store, for ttl, if
// the store can make one and the object has at least minSize bytes;
// ErrMiss otherwise.
func (t *Tiered) Presign(ctx context.Context, key string, minSize int64, ttl time.Duration) (string, error) {
	if p, ok := t.store.(Presigner); ok {
		return p.Presign(ctx, key, minSize, ttl)
	}
	return "", ErrMiss
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

// confirmer is implemented by shared tiers that can say when they could
// not be asked (Redis's circuit breaker open) rather than report a miss.
type confirmer interface {
	GetConfirmed(ctx context.Context, key string) (*Object, error)
	PutConfirmed(ctx context.Context, key string, meta Meta, data []byte) error
}

// records are the tiers that hold records (PutRecord): those other nodes
// share, then the store.
func (t *Tiered) records() []Tier {
	var ts []Tier
	for _, u := range t.upper {
		if st, ok := u.(sharedTier); ok && st.Shared() {
			ts = append(ts, u)
		}
	}
	return append(ts, t.store)
}

// PutRecord stores small content that every node must read alike, such
// as an access token: in the store and in every tier other nodes share,
// and in no tier of this node's alone (its memory), so that a delete on
// another node leaves no copy here to contradict it. A tier that cannot
// take it makes it an error.
//
// Unless confirm, a shared tier that fails is reported and passed by:
// the record is then in the store alone.
func (t *Tiered) PutRecord(ctx context.Context, key string, meta Meta, data []byte, confirm bool) error {
	for _, tier := range t.records() {
		var err error
		if c, ok := tier.(confirmer); ok {
			err = c.PutConfirmed(ctx, key, meta, data)
		} else {
			err = tier.Put(ctx, key, meta, data)
		}
		if err != nil && !confirm && tier != t.store {
			t.report(tier, "put record", key, err)
			continue
		}
		if err != nil {
			return fmt.Errorf("storing %s in the %s tier: %w", Truncate(key), tier.Name(), err)
		}
	}
	return nil
}

// GetRecord reads what PutRecord stored, from the shared tiers first,
// then the store, promoting it nowhere. If confirm, a shared tier that
// cannot be asked makes it an error, not a miss: the record may have been
// deleted there; else it is reported and passed by. A shared tier that
// knows the record was purged makes it a miss, whatever the store below
// still holds.
func (t *Tiered) GetRecord(ctx context.Context, key string, confirm bool) (*Object, error) {
	for _, tier := range t.records() {
		var obj *Object
		var err error
		if c, ok := tier.(confirmer); ok {
			obj, err = c.GetConfirmed(ctx, key)
		} else {
			obj, err = tier.Get(ctx, key)
		}
		switch {
		case err == nil:
			return obj, nil
		case errors.Is(err, ErrPurged):
			return nil, ErrMiss // the copies below are out of date
		case !errors.Is(err, ErrMiss) && !confirm && tier != t.store:
			t.report(tier, "get record", key, err)
		case !errors.Is(err, ErrMiss):
			return nil, fmt.Errorf("%s tier: %w", tier.Name(), err)
		}
	}
	return nil, ErrMiss
}

// Holds reports whether the store holds key; ok is false when the store
// cannot say without reading it (it is no Holder).
func (t *Tiered) Holds(ctx context.Context, key string) (held, ok bool, err error) {
	h, isHolder := t.store.(Holder)
	if !isHolder {
		return false, false, nil
	}
	held, err = h.Holds(ctx, key)
	return held, true, err
}
