// Tier guest modules (namespace goproxy.tiers): each in a file of its own
// (tier_memory.go, tier_disk.go, tier_redis.go, tier_s3.go), each backend
// in a package of its own (cachetier, cachetier/redistier,
// cachetier/s3tier), the handler reaching what they provide through the
// optional interfaces below.

package caddymodule

import (
	"fmt"

	"github.com/caddyserver/caddy/v2"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/goproxy"
)

// TierModule is a guest module of the namespace goproxy.tiers. Its
// Provision checks the settings only, so that `caddy validate` and
// `caddy adapt --validate` make no directory and dial nothing; OpenTier,
// called when a config that uses the tier starts, opens the tier (the
// built-in ones share it through a pool with every config that names the
// same tier, so that a reload keeps it warm and two configs never run two
// of one tier).
type TierModule interface {
	caddy.Module
	OpenTier() (cachetier.Tier, error)
}

// The handler learns what else a tier guest module provides through these
// optional interfaces, which a third party's goproxy.tiers module may
// implement as the built-in ones do.

// RecordTierModule is implemented by a tier guest module whose tier keeps
// every object (its tier is a cachetier.Store: disk, s3); only such a tier
// may be the last of the cache block, the tier of record. TierOfRecord
// reports whether it may only be the last (a bucket, below which no local
// tier sits).
type RecordTierModule interface {
	TierModule
	TierOfRecord() (onlyLast bool)
}

// FleetTierModule is implemented by a tier guest module whose backend also
// coordinates the edges of a fleet (redis): once its tier is open, the
// handler's proxy takes its fleet, and its purges (other edges') reach the
// handler's local tiers through SubscribePurges until the returned cancel
// is called.
type FleetTierModule interface {
	TierModule
	OpenedFleet() goproxy.Fleet
	SubscribePurges(forget func(keys []string)) (cancel func())
}

// LocalDirTierModule is implemented by a tier guest module that keeps
// objects under a local directory (disk): the sandboxes of direct fetches
// go below it, and the file system's usage is reported for it.
type LocalDirTierModule interface {
	TierModule
	LocalDir() string
}

// tierReleaser is a built-in tier module, which the handler lets go of
// when its proxy has closed: after the config's Cleanup, once the fetches
// that its requests started have ended, never under them.
type tierReleaser interface {
	releaseTier() error
}

// tierPool holds open tiers across config reloads, keyed by tier identity.
var tierPool = caddy.NewUsagePool()

// poolRef is a tier module's hold on a pooled tier: taken by open, given
// back by release, both at most once.
type poolRef struct {
	key    string
	tier   *pooledTier
	opened bool
}

func (p *poolRef) open(construct func() (*pooledTier, error)) (*pooledTier, error) {
	if p.opened {
		return p.tier, nil
	}
	val, _, err := tierPool.LoadOrNew(p.key, func() (caddy.Destructor, error) { return construct() })
	if err != nil {
		return nil, fmt.Errorf("goproxy: %w", err)
	}
	p.tier, p.opened = val.(*pooledTier), true
	return p.tier, nil
}

func (p *poolRef) release() error {
	if !p.opened {
		return nil
	}
	p.opened, p.tier = false, nil
	_, err := tierPool.Delete(p.key)
	return err
}

type pooledTier struct {
	tier    cachetier.Tier
	redis   *redisEntry // for a Redis tier
	destroy func() error
}

func (p *pooledTier) Destruct() error { return p.destroy() }
