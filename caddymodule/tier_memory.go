package caddymodule

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
)

func init() { caddy.RegisterModule(MemoryTier{}) }

// DefaultMemory and DefaultMemoryMaxObject size the memory tier.
const (
	// DefaultMemory keeps the default configuration's peak RSS within
	// 96 MiB on Caddy's graph (595 modules, make realworld: 91-92 MiB),
	// its cold and warm go mod download as fast as with the 16 MiB it
	// was, which took the peak to 96-107 MiB.
	DefaultMemory = 8 << 20
	// DefaultMemoryMaxObject keeps the small objects in memory (.info,
	// .mod, lists, checksum database tiles and small zips); larger zips are
	// read from disk through the page cache.
	DefaultMemoryMaxObject = 256 << 10
)

// MemoryTier keeps small objects in memory (ristretto; cost in bytes).
// One memory tier is shared by the configs with the same sizes.
type MemoryTier struct {
	// Max is the budget in bytes. Default 8MiB.
	Max int64 `json:"max,omitempty"`
	// MaxObject is the largest object kept. Default 256KiB.
	MaxObject int64 `json:"max_object,omitempty"`

	ref    poolRef
	logger *zap.Logger
}

func (MemoryTier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "goproxy.tiers.memory", New: func() caddy.Module { return new(MemoryTier) }}
}

func (m *MemoryTier) Provision(ctx caddy.Context) error {
	if m.Max == 0 {
		m.Max = DefaultMemory
	}
	if m.MaxObject == 0 {
		m.MaxObject = DefaultMemoryMaxObject
	}
	m.ref.key = fmt.Sprintf("memory:%d:%d", m.Max, m.MaxObject)
	m.logger = ctx.Logger()
	return nil
}

func (m *MemoryTier) Validate() error {
	if m.Max < 0 || m.MaxObject < 0 {
		return fmt.Errorf("goproxy: memory tier sizes must not be negative")
	}
	return nil
}

// OpenTier opens the memory tier, whose contents the soft memory limit
// then counts.
func (m *MemoryTier) OpenTier() (cachetier.Tier, error) {
	p, err := m.ref.open(func() (*pooledTier, error) {
		t, err := cachetier.NewMemoryTier(m.Max, m.MaxObject)
		if err != nil {
			return nil, err
		}
		key, logger := m.ref.key, m.logger
		trackMemoryTier(key, func() int64 { _, n := t.Usage(); return n }, logger)
		return &pooledTier{tier: t, destroy: func() error {
			trackMemoryTier(key, nil, logger)
			return t.Close()
		}}, nil
	})
	if err != nil {
		return nil, err
	}
	return p.tier, nil
}

func (m *MemoryTier) releaseTier() error { return m.ref.release() }

// UnmarshalCaddyfile reads `memory <size>|off [{ max_object <size> }]`.
// (`off` is handled by the cache block.)
func (m *MemoryTier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "memory"
	if !d.NextArg() {
		return d.ArgErr()
	}
	if err := parseSize(d, &m.Max); err != nil {
		return err
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(d.Nesting()) {
		if d.Val() != "max_object" || !d.NextArg() {
			return d.Errf("want: max_object <size>")
		}
		if err := parseSize(d, &m.MaxObject); err != nil {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ TierModule            = (*MemoryTier)(nil)
	_ caddyfile.Unmarshaler = (*MemoryTier)(nil)
)
