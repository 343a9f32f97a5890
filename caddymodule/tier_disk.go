package caddymodule

import (
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
)

func init() { caddy.RegisterModule(DiskTier{}) }

// DiskTier keeps every object in files under a directory: the tier of
// record. One disk tier runs per directory, whatever else differs, and one
// process: a second server on the same directory is refused at start.
type DiskTier struct {
	// Root is the directory. Default: goproxy under Caddy's data directory.
	Root string `json:"root,omitempty"`
	// Max bounds what the tier uses, directories included; above it the
	// least recently read objects are removed. Default: unbounded.
	Max int64 `json:"max,omitempty"`

	ref    poolRef
	logger *zap.Logger
}

func (DiskTier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "goproxy.tiers.disk", New: func() caddy.Module { return new(DiskTier) }}
}

func (t *DiskTier) Provision(ctx caddy.Context) error {
	if t.Root == "" {
		t.Root = filepath.Join(caddy.AppDataDir(), "goproxy")
	}
	root, err := filepath.Abs(caddy.NewReplacer().ReplaceKnown(t.Root, ""))
	if err != nil {
		return fmt.Errorf("goproxy: disk tier: %w", err)
	}
	t.Root = root
	t.ref.key = "disk:" + root
	t.logger = ctx.Logger()
	return nil
}

func (t *DiskTier) Validate() error {
	if t.Max < 0 {
		return fmt.Errorf("goproxy: disk tier max must not be negative")
	}
	return nil
}

// OpenTier makes the directory and opens the tier in it.
func (t *DiskTier) OpenTier() (cachetier.Tier, error) {
	p, err := t.ref.open(func() (*pooledTier, error) {
		// One process per directory: a second Caddy on it is refused.
		unlock, err := cachetier.LockDir(t.Root)
		if err != nil {
			return nil, err
		}
		d, err := cachetier.NewDiskTier(cachetier.DiskConfig{Root: t.Root, MaxBytes: t.Max, Logger: t.logger})
		if err != nil {
			unlock()
			return nil, err
		}
		return &pooledTier{tier: d, destroy: func() error {
			err := d.Close()
			unlock()
			return err
		}}, nil
	})
	if err != nil {
		return nil, err
	}
	// The newest config's bound holds (a reload may change it).
	d := p.tier.(*cachetier.DiskTier)
	return d, d.SetMaxBytes(t.Max)
}

func (t *DiskTier) releaseTier() error { return t.ref.release() }

// TierOfRecord: a disk keeps every object, and may be the last tier or
// sit above a bucket.
func (t *DiskTier) TierOfRecord() (onlyLast bool) { return false }

// LocalDir is the tier's directory.
func (t *DiskTier) LocalDir() string { return t.Root }

// UnmarshalCaddyfile reads `disk <dir> [{ max <size> }]`.
func (t *DiskTier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "disk"
	if !d.NextArg() {
		return d.ArgErr()
	}
	t.Root = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(d.Nesting()) {
		if d.Val() != "max" || !d.NextArg() {
			return d.Errf("want: max <size>")
		}
		if err := parseSize(d, &t.Max); err != nil {
			return err
		}
	}
	return nil
}

// Interface guards
var (
	_ RecordTierModule      = (*DiskTier)(nil)
	_ LocalDirTierModule    = (*DiskTier)(nil)
	_ caddyfile.Unmarshaler = (*DiskTier)(nil)
)
