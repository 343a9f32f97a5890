package cachetier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Tiered composes tiers in lookup order, fastest first, with the disk tier
// last as the tier of record: every fetched object is written to disk, and
// to each faster tier whose size limit it fits.
type Tiered struct {
	tiers []Tier
	disk  *DiskTier

	// OnError, if set, hears of tier failures (not misses) that Get and
	// Store work around.
	OnError func(tier, op, key string, err error)
}

// NewTiered returns the tiers upper..., then disk.
func NewTiered(disk *DiskTier, upper ...Tier) *Tiered {
	return &Tiered{tiers: append(upper[:len(upper):len(upper)], disk), disk: disk}
}

// Tiers lists the tiers in lookup order.
func (t *Tiered) Tiers() []Tier { return t.tiers }

// Disk is the tier of record.
func (t *Tiered) Disk() *DiskTier { return t.disk }

// Get looks key up tier by tier. A hit below the first tier is promoted to
// every faster tier it fits, unless it has already expired.
func (t *Tiered) Get(ctx context.Context, key string) (*Object, error) {
	for i, tier := range t.tiers {
		obj, err := tier.Get(ctx, key)
		if errors.Is(err, ErrMiss) {
			continue
		}
		if err != nil {
			t.report(tier, "get", key, err)
			continue
		}
		if i > 0 {
			obj = t.promote(ctx, key, obj, t.tiers[:i])
		}
		return obj, nil
	}
	return nil, ErrMiss
}

func (t *Tiered) promote(ctx context.Context, key string, obj *Object, upper []Tier) *Object {
	if !obj.Expires.IsZero() && !time.Now().Before(obj.Expires) {
		return obj
	}
	data, inMemory := obj.Bytes()
	for _, u := range upper {
		if obj.Size > u.MaxObject() {
			continue
		}
		if !inMemory {
			// Read the file once; the caller is served from these bytes.
			buf := make([]byte, obj.Size)
			if _, err := io.ReadFull(obj.Reader(), buf); err != nil {
				t.report(t.disk, "promote", key, err)
				return obj
			}
			obj.Close()
			obj = &Object{Meta: obj.Meta, Tier: obj.Tier, data: buf}
			data, inMemory = buf, true
		}
		t.put(ctx, u, key, obj.Meta, data)
	}
	return obj
}

func (t *Tiered) put(ctx context.Context, tier Tier, key string, meta Meta, data []byte) {
	var err error
	if bp, ok := tier.(bytesPutter); ok {
		err = bp.PutBytes(key, meta, data)
	} else {
		err = tier.Put(ctx, key, meta, bytes.NewReader(data))
	}
	if err != nil {
		t.report(tier, "put", key, err)
	}
}

// NewSpool starts a temp file for a fetch: in the disk tier, or in the
// system's temp directory when the disk tier cannot take it.
func (t *Tiered) NewSpool() (*Spool, error) {
	s, err := t.disk.NewSpool()
	if err != nil {
		t.report(t.disk, "spool", "", err)
		return NewTempSpool()
	}
	return s, nil
}

// Store writes a checked spool through all tiers. It returns the content
// when it is small enough for a faster tier, so callers can serve it without
// another read; otherwise data is nil and the object is on disk.
func (t *Tiered) Store(ctx context.Context, key string, meta Meta, s *Spool) (data []byte, err error) {
	if err := t.disk.Put(ctx, key, meta, s.Reader()); err != nil {
		return nil, fmt.Errorf("storing %s: %w", key, err)
	}
	for _, u := range t.tiers[:len(t.tiers)-1] {
		if meta.Size > u.MaxObject() {
			continue
		}
		if data == nil {
			data = make([]byte, meta.Size)
			if _, err := io.ReadFull(s.Reader(), data); err != nil {
				return nil, fmt.Errorf("reading spool of %s: %w", key, err)
			}
		}
		t.put(ctx, u, key, meta, data)
	}
	return data, nil
}

// Delete removes key from every tier.
func (t *Tiered) Delete(ctx context.Context, key string) error {
	var errs []error
	for _, tier := range t.tiers {
		if err := tier.Delete(ctx, key); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes every tier.
func (t *Tiered) Close() error {
	var errs []error
	for _, tier := range t.tiers {
		errs = append(errs, tier.Close())
	}
	return errors.Join(errs...)
}

func (t *Tiered) report(tier Tier, op, key string, err error) {
	if t.OnError != nil {
		t.OnError(tier.Name(), op, key, err)
	}
}

// StoreUpper keeps data in the tiers above disk only: for answers, such as
// version queries, that must not be written to disk.
func (t *Tiered) StoreUpper(ctx context.Context, key string, meta Meta, data []byte) {
	for _, u := range t.tiers[:len(t.tiers)-1] {
		if meta.Size <= u.MaxObject() {
			t.put(ctx, u, key, meta, data)
		}
	}
}

// StoreBytes writes small content through every tier, disk included.
func (t *Tiered) StoreBytes(ctx context.Context, key string, meta Meta, data []byte) error {
	if err := t.disk.Put(ctx, key, meta, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	t.StoreUpper(ctx, key, meta, data)
	return nil
}

// GetBytes reads a small object whole; it is for callers, such as the
// checksum database client, that need content rather than a reader.
func (t *Tiered) GetBytes(ctx context.Context, key string) ([]byte, Meta, error) {
	obj, err := t.Get(ctx, key)
	if err != nil {
		return nil, Meta{}, err
	}
	defer obj.Close()
	if data, ok := obj.Bytes(); ok {
		return data, obj.Meta, nil
	}
	data, err := io.ReadAll(obj.Reader())
	return data, obj.Meta, err
}
