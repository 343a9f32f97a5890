package accesstoken

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/cachetier/redistier"
	"github.com/piraeus-go/piraeus/cachetier/tiertest"
	"github.com/piraeus-go/piraeus/fleet"
	"github.com/piraeus-go/piraeus/internal/redisconn"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// node is the tiers of one edge: memory, its own disk, and, if given,
// the Redis the fleet shares.
func node(t *testing.T, shared cachetier.Tier) *cachetier.Tiered {
	t.Helper()
	mem, err := cachetier.NewMemoryTier(1<<20, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	upper := []cachetier.Tier{mem}
	if shared != nil {
		upper = append(upper, shared)
	}
	return cachetier.NewTiered(nil, tiertest.Disk(t), upper...)
}

func TestCreateCheckRevoke(t *testing.T) {
	ctx := context.Background()
	tiers := node(t, nil)
	s := New(tiers, nil, -1)
	raw, tok, err := s.Create(ctx, "alice", []string{"payments", "engineering"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(raw, Prefix+tok.ID+"_") || tok.SHA256 != "" {
		t.Fatalf("token %q, record %+v", raw, tok)
	}
	got, err := s.Check(ctx, raw)
	if err != nil || got.User != "alice" || strings.Join(got.Groups, ",") != "payments,engineering" {
		t.Fatalf("Check: %+v, %v", got, err)
	}
	// Only the hash is kept: the secret is in no tier.
	obj, err := tiers.GetRecord(ctx, keyPrefix+tok.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if data := tiertest.ReadAll(t, obj); strings.Contains(string(data), raw[len(Prefix)+len(tok.ID)+1:]) {
		t.Fatalf("the record holds the secret: %s", data)
	}
	for _, bad := range []string{
		"", "alice", raw + "x", raw[:len(raw)-1] + "A", strings.Replace(raw, tok.ID, "0123456789abcdef", 1),
		Prefix + strings.ToUpper(tok.ID) + raw[len(Prefix)+len(tok.ID):],
	} {
		if _, err := s.Check(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%q): %v, want ErrInvalid", bad, err)
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != tok.ID || list[0].SHA256 != "" {
		t.Fatalf("List: %+v, %v", list, err)
	}
	if err := s.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(ctx, raw); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a revoked token: %v", err)
	}
	if list, err := s.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("List after the revocation: %+v, %v", list, err)
	}
	if err := s.Revoke(ctx, tok.ID); err == nil {
		t.Error("revoking twice: no error")
	}
	for _, bad := range []struct {
		user   string
		groups []string
		ttl    time.Duration
	}{{"", nil, time.Hour}, {"a b", nil, time.Hour}, {"a", []string{"x,y"}, time.Hour}, {"a", nil, 0}, {"a", nil, MaxTTL + time.Hour}} {
		if _, _, err := s.Create(ctx, bad.user, bad.groups, bad.ttl); err == nil {
			t.Errorf("Create(%q, %q, %v): no error", bad.user, bad.groups, bad.ttl)
		}
	}
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	s := New(node(t, nil), nil, -1)
	now := time.Now()
	s.now = func() time.Time { return now }
	raw, _, err := s.Create(ctx, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Check(ctx, raw); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour + time.Second)
	if _, err := s.Check(ctx, raw); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an expired token: %v", err)
	}
}

// Two edges with their own memory and disk share a real Redis: a token
// issued on one is good on the other, a revocation on the issuer counts
// on the other at its next read, and a Redis that cannot be asked makes
// the check fail closed.
func TestSharedThroughRedis(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	conn, err := redisconn.Open(redisconn.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rt, err := redistier.New(redistier.Config{Conn: conn, Prefix: "tokens-test:", Key: tiertest.FleetKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	a, b := New(node(t, rt), nil, time.Hour), New(node(t, rt), nil, -1)
	raw, tok, err := a.Create(ctx, "ci-bot", []string{"ci"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := b.Check(ctx, raw); err != nil || got.User != "ci-bot" {
		t.Fatalf("the other edge: %+v, %v", got, err)
	}
	if list, err := b.List(ctx); err != nil || len(list) != 1 {
		t.Fatalf("the other edge's list: %+v, %v", list, err)
	}
	if err := a.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Check(ctx, raw); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revoked on the issuer, checked on the other edge: %v", err)
	}

	raw2, _, err := a.Create(ctx, "ci-bot", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	r.Stop()
	if _, err := b.Check(ctx, raw2); err == nil || errors.Is(err, ErrInvalid) {
		t.Fatalf("Redis down: %v, want an error that is not ErrInvalid (cannot confirm)", err)
	}
	if _, _, err := a.Create(ctx, "x", nil, time.Hour); err == nil {
		t.Fatal("Redis down: a token was issued that the other edges cannot see")
	}
}

// edge is one node of a fleet on a real Redis: its own memory and disk,
// the shared Redis tier, and a real fleet.Fleet that follows purges when
// follow is set, signalling purged after applying one.
type edge struct {
	tiers  *cachetier.Tiered
	tokens *Store
	purged chan struct{}
}

func newEdge(t *testing.T, r *testenv.Redis, follow bool, checkTTL time.Duration) *edge {
	t.Helper()
	conn, err := redisconn.Open(redisconn.Config{URL: r.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := tiertest.FleetKey(t)
	rt, err := redistier.New(redistier.Config{Conn: conn, Prefix: "tokens-fleet:", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	e := &edge{tiers: node(t, rt), purged: make(chan struct{}, 16)}
	cfg := fleet.Config{Conn: conn, Prefix: "tokens-fleet:", Key: key}
	if follow {
		cfg.OnPurge = func(keys []string) {
			for _, k := range keys {
				e.tiers.DeleteLocal(context.Background(), k)
			}
			e.tokens.Forget(keys)
			e.purged <- struct{}{}
		}
	}
	f, err := fleet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	e.tokens = New(e.tiers, f.Purge, checkTTL)
	return e
}

// A token revoked on one edge of a fleet is refused by another: at once
// when that edge reads its record (Redis's tombstone outweighs the copy
// on the issuer's own disk), and, where the edge took the token on trust
// for a while, as soon as the fleet's purge reaches it.
func TestRevokedOnAnotherEdge(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)

	// The issuer reads the record at every check and follows no purges:
	// only the tombstone can tell it.
	issuer, other := newEdge(t, r, false, -1), newEdge(t, r, true, time.Hour)
	raw, tok, err := issuer.tokens.Create(ctx, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*edge{issuer, other} {
		if _, err := e.tokens.Check(ctx, raw); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.tokens.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := issuer.tokens.Check(ctx, raw); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revoked on the other edge, checked on the issuer (its disk holds the record): %v", err)
	}

	// An edge that took the token on trust for an hour drops it when
	// the purge arrives.
	raw, tok, err = issuer.tokens.Create(ctx, "ci", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.tokens.Check(ctx, raw); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := issuer.tokens.Revoke(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-other.purged:
	case <-time.After(30 * time.Second):
		t.Fatal("the purge of the revoked token did not reach the other edge in 30 s")
	}
	t.Logf("the revocation reached the other edge in %v", time.Since(start))
	if _, err := other.tokens.Check(ctx, raw); !errors.Is(err, ErrInvalid) {
		t.Fatalf("after the purge: %v", err)
	}
}
