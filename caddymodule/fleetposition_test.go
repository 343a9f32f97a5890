package caddymodule

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// The fleet's purge position is kept under Caddy's data directory, one
// file per Redis and key prefix followed: a reload that changes another
// setting keeps it, another Redis or prefix has its own.
func TestFleetPositionFile(t *testing.T) {
	t.Setenv("XDG_DATA_HOME", t.TempDir())
	a := &RedisTier{URL: "redis://127.0.0.1:6379/0", KeyPrefix: DefaultRedisKeyPrefix}
	b := &RedisTier{URL: "redis://127.0.0.1:6379/0", KeyPrefix: DefaultRedisKeyPrefix, Timeout: caddy.Duration(5 * time.Second), MaxObject: 1 << 20}
	c := &RedisTier{URL: "redis://127.0.0.1:6380/0", KeyPrefix: DefaultRedisKeyPrefix}
	d := &RedisTier{URL: "redis://127.0.0.1:6379/0", KeyPrefix: "other:"}
	pa := a.positionFile()
	if !strings.HasPrefix(pa, filepath.Join(caddy.AppDataDir(), "goproxy-fleet")+string(filepath.Separator)) {
		t.Errorf("position file %s is not under Caddy's data directory %s", pa, caddy.AppDataDir())
	}
	if pb := b.positionFile(); pb != pa {
		t.Errorf("other settings moved the position file: %s, %s", pa, pb)
	}
	if pa == c.positionFile() || pa == d.positionFile() {
		t.Error("another Redis or key prefix shares the position file")
	}
}
