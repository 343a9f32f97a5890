package caddymodule

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
)

func init() { caddy.RegisterModule(S3Tier{}) }

// S3Tier keeps every object in a bucket of an S3-compatible store (AWS S3,
// MinIO, Ceph, R2, versitygw...): a tier of record that edges with no
// persistent disk share. Placeholders such as {env.S3_SECRET} are
// replaced. Objects above RedirectLarge may be served by sending the
// client a short-lived pre-signed URL.
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
	// RedirectLarge, if set, answers a .zip of at least this many bytes
	// held in the bucket with a 302 to a pre-signed URL. Off by default.
	RedirectLarge int64 `json:"redirect_large,omitempty"`
	// RedirectPrivate lets RedirectLarge apply to private modules too.
	RedirectPrivate bool `json:"redirect_private,omitempty"`
	// RedirectTTL is how long a pre-signed URL lasts. Default 5m.
	RedirectTTL caddy.Duration `json:"redirect_ttl,omitempty"`

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
	// One tier per store, bucket, prefix and credentials; the redirect
	// settings are the handler's business.
	id, err := json.Marshal([]any{t.Endpoint, t.Bucket, t.Region, t.Prefix, t.AccessKey, t.SecretKey, t.Timeout, t.SpoolDir})
	if err != nil {
		return fmt.Errorf("goproxy: %w", err)
	}
	t.ref.key = "s3:" + string(id)
	t.logger = ctx.Logger()
	return nil
}

func (t *S3Tier) Validate() error {
	if t.Bucket == "" || t.Endpoint == "" {
		return fmt.Errorf("goproxy: s3 tier needs a bucket and an endpoint")
	}
	if t.Timeout < 0 || t.RedirectLarge < 0 || t.RedirectTTL < 0 {
		return fmt.Errorf("goproxy: s3 timeout, redirect_large and redirect_ttl must not be negative")
	}
	if t.RedirectTTL > caddy.Duration(7*24*time.Hour) {
		return fmt.Errorf("goproxy: s3 redirect_ttl is at most 7 days (the longest a pre-signed URL lives)")
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
		s, err := cachetier.NewS3Tier(cachetier.S3Config{
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
//		redirect_large   <size>
//		redirect_private
//		redirect_ttl     <duration>
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
		case "timeout", "redirect_ttl":
			dst := map[string]*caddy.Duration{"timeout": &t.Timeout, "redirect_ttl": &t.RedirectTTL}[key]
			if err := parseDuration(d, dst); err != nil {
				return err
			}
			continue
		case "redirect_large":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if err := parseSize(d, &t.RedirectLarge); err != nil {
				return err
			}
		case "redirect_private":
			t.RedirectPrivate = true
		default:
			return d.Errf("unknown s3 subdirective %q", key)
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	if t.Bucket == "" || t.Endpoint == "" {
		return d.Err("s3 needs a bucket and an endpoint")
	}
	return nil
}

// Interface guards
var (
	_ TierModule            = (*S3Tier)(nil)
	_ caddy.Provisioner     = (*S3Tier)(nil)
	_ caddy.Validator       = (*S3Tier)(nil)
	_ caddyfile.Unmarshaler = (*S3Tier)(nil)
)
