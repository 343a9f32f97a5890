package goproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// attackerKey signs what someone with write access to Redis or the bucket,
// but without the fleet's key, plants.
func attackerKey(t *testing.T) *fleetkey.Key {
	k, err := fleetkey.New("the-attacker-does-not-know-the-fleet-key-0123")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Values someone with write access to Redis plants without the fleet key
// — a downgraded @latest, a list, an .info, a private module's .mod and
// .zip (which no checksum database vouches for), a shared not-found entry,
// a lock with a huge TTL and a hand-over — are refused, deleted, logged
// at error level and counted; the genuine answers are fetched. Not
// parallel: the counts are the process's.
func TestFleetValuesAuthenticated(t *testing.T) {
	r := testenv.StartRedis(t)
	priv := testenv.Module{Path: "git.corp.example/secret", Version: "v1.0.0", Files: map[string]string{"s.go": "package secret\n"}}
	privBig := testenv.Module{Path: "git.corp.example/big", Version: "v1.0.0", Files: map[string]string{"b.go": "package big\n", "pad.txt": noiseText(16 << 10)}}
	up := testenv.NewUpstream(t, modA, modA11, priv, privBig)
	core, logs := observer.New(zapcore.ErrorLevel)
	e := newEnv(t, up, options{redis: r, redisMax: 4096, private: "git.corp.example", privateUpstream: up.URL,
		logger: zap.New(core), timeout: 20 * time.Second})
	rc := redisClient(t, r)
	ctx := context.Background()
	bad := attackerKey(t)
	plantedVals := map[string][]byte{}
	plant := func(p string, data []byte, expires time.Time) {
		meta := cachetier.MetaFor(data, expires)
		val := append(cachetier.EncodeHeader(e.key(p), meta, bad, fleetkey.KindRedisObject), data...)
		plantedVals[p] = val
		if err := rc.Set(ctx, e.redisKey("obj", p), val, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	soon := time.Now().Add(time.Hour)
	evilMod := []byte("module git.corp.example/secret\n\nrequire example.com/evil v1.0.0\n")
	evilZip := testenv.Module{Path: priv.Path, Version: priv.Version, Files: map[string]string{"s.go": "package secret\n\nfunc init() { panic(\"pwned\") }\n"}}.Zip(t)
	planted := map[string][]byte{
		"example.com/a/@latest": []byte(`{"Version":"v1.0.0","Time":"2019-01-01T00:00:00Z"}`),
		"example.com/a/@v/list": []byte("v1.0.0\n"),
		path(modA11, "info"):    []byte(`{"Version":"v1.1.0","Time":"2001-01-01T00:00:00Z"}`),
		path(priv, "mod"):       evilMod,
		path(priv, "zip"):       evilZip,
	}
	for p, data := range planted {
		exp := time.Time{}
		if strings.HasSuffix(p, "@latest") || strings.HasSuffix(p, "/list") {
			exp = soon
		}
		plant(p, data, exp)
	}
	// A not-found entry in the format an edge writes, but tagged with
	// another key.
	rc.Set(ctx, e.redisKey("nf", path(modA, "mod")), "404 9999999999999 "+strings.Repeat("ab", 32)+" not found", time.Hour)
	// A lock with a huge TTL on modA's .zip.
	rc.Set(ctx, e.redisKey("lock", path(modA, "zip")), "x 1 1 "+strings.Repeat("00", 32), 1000*time.Hour)
	// A hand-over of the big private zip (above redisMax), tagged with
	// another key.
	bigZip := privBig.Zip(t)
	if len(bigZip) <= 4096 {
		t.Fatalf("fixture zip of %d bytes is not above redisMax", len(bigZip))
	}
	evilBig := testenv.Module{Path: privBig.Path, Version: privBig.Version, Files: map[string]string{"b.go": "package big\n\nfunc init() { panic(\"pwned\") }\n", "pad.txt": strings.Repeat("x", 8192)}}.Zip(t)
	xfer := e.redisKey("xfer", path(privBig, "zip"))
	rc.Set(ctx, xfer+":0", evilBig, time.Minute)
	rc.Set(ctx, xfer, cachetier.EncodeHeader(e.key(path(privBig, "zip")), cachetier.MetaFor(evilBig, time.Time{}), bad, fleetkey.KindHandOver), time.Minute)

	before := map[string]int64{}
	for _, k := range fleetkey.Kinds {
		before[k] = fleetkey.Rejections(k)
	}
	want := map[string][]byte{
		"example.com/a/@v/list": []byte("v1.0.0\nv1.1.0\n"),
		path(modA11, "info"):    modA11.Info(),
		path(priv, "mod"):       priv.Mod(),
		path(priv, "zip"):       priv.Zip(t),
		path(modA, "mod"):       modA.Mod(),
		path(modA, "zip"):       modA.Zip(t),
		path(privBig, "zip"):    bigZip,
	}
	for p, body := range want {
		if _, got := e.get(p, 200); !bytes.Equal(got, body) {
			t.Errorf("%s: served %q; want the genuine answer", p, truncate(got))
		}
	}
	if _, got := e.get("example.com/a/@latest", 200); !bytes.Contains(got, []byte(`"v1.1.0"`)) {
		t.Errorf("@latest served %s: the planted downgrade", got)
	}
	for p := range planted {
		if val, _ := rc.Get(ctx, e.redisKey("obj", p)).Bytes(); bytes.Equal(val, plantedVals[p]) {
			t.Errorf("%s: the planted value is still in redis", p)
		}
		if n := up.Requests(p); n != 1 {
			t.Errorf("%s: %d upstream requests; want 1", p, n)
		}
	}
	for kind, n := range map[string]int64{fleetkey.KindRedisObject: int64(len(planted)), fleetkey.KindNotFound: 1, fleetkey.KindLock: 1, fleetkey.KindHandOver: 1} {
		if got := fleetkey.Rejections(kind) - before[kind]; got != n {
			t.Errorf("%s: %d values counted as refused; want %d", kind, got, n)
		}
	}
	if n := logs.Filter(func(e observer.LoggedEntry) bool {
		text := e.Message
		for _, f := range e.Context {
			if f.Interface != nil {
				if err, ok := f.Interface.(error); ok {
					text += " " + err.Error()
				}
			}
		}
		return strings.Contains(text, "fleet key")
	}).Len(); n != len(planted)+3 {
		t.Errorf("%d error-level logs of values failing the fleet key; want %d:\n%v", n, len(planted)+3, logs.All())
	}
	// What the edge wrote back is signed: a second edge with the same
	// key takes it from Redis.
	e2 := newEnv(t, up, options{redis: r, redisMax: 4096, private: "git.corp.example", privateUpstream: up.URL})
	e2.get(path(priv, "mod"), 200)
	if n := up.Requests(path(priv, "mod")); n != 1 {
		t.Errorf("a second edge fetched the private .mod again (%d requests): the value the first one wrote was not accepted", n)
	}
}

// noiseText is n bytes of text that compresses poorly.
func noiseText(n int) string {
	var b strings.Builder
	h := sha256.Sum256([]byte("noise"))
	for b.Len() < n {
		b.WriteString(hex.EncodeToString(h[:]))
		h = sha256.Sum256(h[:])
	}
	return b.String()[:n]
}

func truncate(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}
