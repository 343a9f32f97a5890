package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/cachetier/s3tier"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
)

func init() { caddy.RegisterModule(S3Tier{}) }

// S3Tier keeps every object in a bucket of an S3-compatible store (AWS S3,
// MinIO, Ceph, R2, versitygw...): a tier of record that edges with no
// persistent disk share. Placeholders such as {env.S3_SECRET} are
// replaced. The handler's redirect_large serves large zips from it by
// sending the client a short-lived pre-signed URL.
type S3Tier struct {
	// Endpoint is the store's URL, e.g. https://s3.eu-west-1.amazonaws.com.
	Endpoint  string `json:"endpoint,omitempty"`
	Bucket    string `json:"bucket,omitempty"`
	Region    string `json:"region,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
	// Timeout bounds one operation, and any wait for a transfer's next
	// bytes. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
	// SpoolDir holds the temp files of uploads and downloads when no disk
	// tier is above the bucket. Default: the system's temp directory.
	SpoolDir string `json:"spool_dir,omitempty"`
	// AbandonedUploads is the age at which a multipart upload that was
	// never completed (its edge died in mid-upload) is aborted, so that
	// its parts stop using the bucket's space. Default 24h: longer than
	// any upload may take.
	AbandonedUploads caddy.Duration `json:"abandoned_uploads,omitempty"`

	ref    poolRef
	key    *fleetkey.Key // the handler's fleet_key
	logger *zap.Logger
}

func (t *S3Tier) useFleetKey(k *fleetkey.Key) {
	t.key = k
	t.ref.key += "|fleet_key:" + k.ID()
}

func (S3Tier) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "goproxy.tiers.s3", New: func() caddy.Module { return new(S3Tier) }}
}

func (t *S3Tier) Provision(ctx caddy.Context) error {
	// One tier per store, bucket, prefix and credentials.
	id, err := json.Marshal([]any{t.Endpoint, t.Bucket, t.Region, t.Prefix, t.AccessKey, t.SecretKey, t.Timeout, t.SpoolDir, t.AbandonedUploads})
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	t.ref.key = "s3:" + string(id)
	t.logger = ctx.Logger()
	return nil
}

// checkPlace is the rule on where the bucket is: both are needed.
// Validate applies it, and the Caddyfile's reader too, to say where.
func (t *S3Tier) checkPlace() error {
	if t.Bucket == "" || t.Endpoint == "" {
		return errors.New("s3 needs a bucket and an endpoint")
	}
	return nil
}

func (t *S3Tier) Validate() error {
	if err := t.checkPlace(); err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	if t.Timeout < 0 {
		return fmt.Errorf("goproxy: s3 timeout must not be negative")
	}
	return nil
}

// OpenTier opens the bucket's tier (which checks that the bucket is
// there).
func (t *S3Tier) OpenTier() (cachetier.Tier, error) {
	p, err := t.ref.open(func() (*pooledTier, error) {
		repl := caddy.NewReplacer()
		spool := repl.ReplaceKnown(t.SpoolDir, "")
		if spool != "" {
			var err error
			if spool, err = filepath.Abs(spool); err != nil {
				return nil, err
			}
		}
		s, err := s3tier.New(s3tier.Config{
			Endpoint:  repl.ReplaceKnown(t.Endpoint, ""),
			Bucket:    repl.ReplaceKnown(t.Bucket, ""),
			Region:    repl.ReplaceKnown(t.Region, ""),
			Prefix:    repl.ReplaceKnown(t.Prefix, ""),
			AccessKey: repl.ReplaceKnown(t.AccessKey, ""),
			SecretKey: repl.ReplaceKnown(t.SecretKey, ""),
			Timeout:   time.Duration(t.Timeout),
			SpoolDir:  spool,
			Key:       t.key,
			Logger:    t.logger,

			AbandonedUploads: time.Duration(t.AbandonedUploads),
		})
		if err != nil {
			return nil, err
		}
		return &pooledTier{tier: s, destroy: s.Close}, nil
	})
	if err != nil {
		return nil, err
	}
	return p.tier, nil
}

func (t *S3Tier) releaseTier() error { return t.ref.release() }

// TierOfRecord: a bucket keeps every object, and is the last tier.
func (t *S3Tier) TierOfRecord() (onlyLast bool) { return true }

// UnmarshalCaddyfile reads:
//
//	s3 {
//		endpoint         <url>
//		bucket           <name>
//		region           <region>
//		prefix           <prefix>
//		access_key       <key>
//		secret_key       <secret>
//		timeout          <duration>
//		spool_dir        <dir>
//		abandoned_uploads <duration>
//	}
func (t *S3Tier) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // "s3"
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		key := d.Val()
		switch key {
		case "endpoint", "bucket", "region", "prefix", "access_key", "secret_key", "spool_dir":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dst := map[string]*string{"endpoint": &t.Endpoint, "bucket": &t.Bucket, "region": &t.Region, "prefix": &t.Prefix,
				"access_key": &t.AccessKey, "secret_key": &t.SecretKey, "spool_dir": &t.SpoolDir}[key]
			*dst = d.Val()
		case "timeout", "abandoned_uploads":
			dst := map[string]*caddy.Duration{"timeout": &t.Timeout, "abandoned_uploads": &t.AbandonedUploads}[key]
			if err := parseDuration(d, dst); err != nil {
				return err
			}
			continue
		case "redirect_large", "redirect_private", "redirect_ttl":
			return d.Errf("%s is a setting of the goproxy block (the handler's policy), not of s3", key)
		default:
			return d.Errf("unknown s3 subdirective %q", key)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	if err := t.checkPlace(); err != nil {
		return d.Err(err.Error())
	}
	return nil
}

// Interface guards
var (
	_ RecordTierModule      = (*S3Tier)(nil)
	_ caddy.Provisioner     = (*S3Tier)(nil)
	_ caddy.Validator       = (*S3Tier)(nil)
	_ caddyfile.Unmarshaler = (*S3Tier)(nil)
)
