// Package accesstoken issues and checks the access tokens of a mirror:
// random secrets that the go command sends by itself, as the password of
// HTTP basic auth from a netrc line or as a bearer token from a GOAUTH
// command. A token names a user and their groups; the mirror keeps only
// its SHA-256, in the tier of record and the tiers that a fleet's edges
// share (Redis, a bucket), so that a token issued on one edge works on
// every edge, and a revocation reaches every edge within seconds.
package accesstoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/piraeus-go/piraeus/cachetier"
)

// Prefix starts every token, so that secret scanners and people can tell
// one when they see it.
const Prefix = "pir_"

const (
	keyPrefix = "piraeus-tokens/v1/"
	indexKey  = keyPrefix + "index"
	idBytes   = 8
	// secretBytes of randomness: a token cannot be guessed, so a plain
	// SHA-256 of it is as good a record as a slow password hash.
	secretBytes = 32
	// DefaultCheckTTL is how long a checked token is taken on this node's
	// word before its record is read again: a revocation made on another
	// node counts here within it.
	DefaultCheckTTL = 2 * time.Second
	// MaxTTL bounds a token's lifetime.
	MaxTTL = 5 * 366 * 24 * time.Hour
)

// ErrInvalid is a token that is malformed, unknown, revoked or expired.
var ErrInvalid = errors.New("invalid access token")

// Token is what the mirror records of a token: never the secret itself.
type Token struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Groups  []string  `json:"groups,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	SHA256  string    `json:"sha256,omitempty"` // of the secret; left out of listings
}

// Records is where tokens are kept: *cachetier.Tiered. Tokens read and
// write them confirmed: a shared tier that cannot be asked fails the
// check.
type Records interface {
	PutRecord(ctx context.Context, key string, meta cachetier.Meta, data []byte, confirm bool) error
	GetRecord(ctx context.Context, key string, confirm bool) (*cachetier.Object, error)
	Delete(ctx context.Context, key string) error
}

// Store issues, checks, lists and revokes tokens.
type Store struct {
	records Records
	// purge, if set, removes keys from every other node of the fleet.
	purge    func(ctx context.Context, keys []string) error
	checkTTL time.Duration
	now      func() time.Time

	mu      sync.Mutex
	checked map[string]checked // by id

	indexMu sync.Mutex // one rewrite of the index at a time on this node
}

type checked struct {
	tok   Token
	until time.Time
}

// New returns a store over records. purge, if not nil, tells the other
// nodes of a fleet to drop a revoked token; checkTTL is DefaultCheckTTL
// when 0, and a negative one reads the record at every check.
func New(records Records, purge func(ctx context.Context, keys []string) error, checkTTL time.Duration) *Store {
	if checkTTL == 0 {
		checkTTL = DefaultCheckTTL
	}
	return &Store{records: records, purge: purge, checkTTL: checkTTL, now: time.Now, checked: map[string]checked{}}
}

// CheckName says whether s may be a user id or a group name: not empty,
// at most 128 bytes, no spaces, commas or control characters.
func CheckName(what, s string) error {
	if s == "" || len(s) > 128 || strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == ',' || r == 0x7f }) {
		return fmt.Errorf("%s %q: want 1 to 128 bytes without spaces, commas or control characters", what, s)
	}
	return nil
}

// Create issues a token for user in groups that lasts ttl, and returns
// the token (shown once: the store keeps only its hash) and its record.
func (s *Store) Create(ctx context.Context, user string, groups []string, ttl time.Duration) (string, Token, error) {
	raw, tok, err := NewToken(user, groups, ttl, s.now())
	if err != nil {
		return "", Token{}, err
	}
	if err := s.Add(ctx, tok); err != nil {
		return "", Token{}, err
	}
	tok.SHA256 = ""
	return raw, tok, nil
}

// NewToken makes a token for user in groups that lasts ttl from now, and
// its record (with the hash, for Add), without storing it.
func NewToken(user string, groups []string, ttl time.Duration, now time.Time) (string, Token, error) {
	if err := CheckName("user", user); err != nil {
		return "", Token{}, err
	}
	for _, g := range groups {
		if err := CheckName("group", g); err != nil {
			return "", Token{}, err
		}
	}
	if ttl <= 0 || ttl > MaxTTL {
		return "", Token{}, fmt.Errorf("a token's lifetime must be positive and at most %v", MaxTTL)
	}
	var id [idBytes]byte
	var secret [secretBytes]byte
	rand.Read(id[:])
	rand.Read(secret[:])
	now = now.UTC().Truncate(time.Second)
	tok := Token{ID: hex.EncodeToString(id[:]), User: user, Groups: slices.Clone(groups), Created: now, Expires: now.Add(ttl)}
	raw := Prefix + tok.ID + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(raw))
	tok.SHA256 = hex.EncodeToString(sum[:])
	return raw, tok, nil
}

// Add stores the record of a token made by NewToken.
func (s *Store) Add(ctx context.Context, tok Token) error {
	if !validID(tok.ID) || len(tok.SHA256) != 2*sha256.Size {
		return errors.New("not a token's record")
	}
	data, err := json.Marshal(tok)
	if err != nil {
		return err
	}
	if err := s.records.PutRecord(ctx, keyPrefix+tok.ID, cachetier.MetaFor(data, time.Time{}), data, true); err != nil {
		return fmt.Errorf("storing the token: %w", err)
	}
	return s.editIndex(ctx, func(ids []string) []string { return append(ids, tok.ID) })
}

// validID reports whether id is a token id: idBytes in lower-case hex.
func validID(id string) bool {
	_, err := hex.DecodeString(id)
	return err == nil && len(id) == 2*idBytes && strings.ToLower(id) == id
}

// parse returns the id of a well-formed token.
func parse(raw string) (string, bool) {
	rest, ok := strings.CutPrefix(raw, Prefix)
	if !ok {
		return "", false
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok || !validID(id) || base64.RawURLEncoding.EncodedLen(secretBytes) != len(secret) {
		return "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(secret); err != nil {
		return "", false
	}
	return id, true
}

// Check returns the record of a valid token. ErrInvalid means the token
// is not one (malformed, unknown, revoked, expired); any other error,
// that the store could not be read, and the token must not be accepted.
func (s *Store) Check(ctx context.Context, raw string) (Token, error) {
	id, ok := parse(raw)
	if !ok {
		return Token{}, ErrInvalid
	}
	sum := sha256.Sum256([]byte(raw))
	want := hex.EncodeToString(sum[:])
	now := s.now()
	s.mu.Lock()
	c, ok := s.checked[id]
	s.mu.Unlock()
	if !ok || !now.Before(c.until) {
		tok, err := s.read(ctx, id)
		if err != nil {
			s.forget(id)
			return Token{}, err
		}
		c = checked{tok: tok, until: now.Add(s.checkTTL)}
		if s.checkTTL > 0 {
			s.mu.Lock()
			if len(s.checked) >= 1<<16 { // bounded: start afresh
				clear(s.checked)
			}
			s.checked[id] = c
			s.mu.Unlock()
		}
	}
	if subtle.ConstantTimeCompare([]byte(c.tok.SHA256), []byte(want)) != 1 || !now.Before(c.tok.Expires) {
		return Token{}, ErrInvalid
	}
	tok := c.tok
	tok.SHA256 = ""
	return tok, nil
}

// read reads the record of id.
func (s *Store) read(ctx context.Context, id string) (Token, error) {
	obj, err := s.records.GetRecord(ctx, keyPrefix+id, true)
	if errors.Is(err, cachetier.ErrMiss) {
		return Token{}, ErrInvalid
	}
	if err != nil {
		return Token{}, fmt.Errorf("reading the access token's record: %w", err)
	}
	defer obj.Close()
	data, err := obj.Content()
	if err != nil {
		return Token{}, fmt.Errorf("reading the access token's record: %w", err)
	}
	var tok Token
	if err := json.Unmarshal(data, &tok); err != nil || tok.ID != id {
		return Token{}, ErrInvalid
	}
	return tok, nil
}

// Revoke deletes token id everywhere: the tiers of this node and the
// shared ones, leaving tombstones, and, through the fleet, the tiers of
// every other node.
func (s *Store) Revoke(ctx context.Context, id string) error {
	if !validID(id) {
		return fmt.Errorf("token id %q: want the %d hex digits that list shows", id, 2*idBytes)
	}
	if _, err := s.read(ctx, id); err != nil {
		if errors.Is(err, ErrInvalid) {
			return fmt.Errorf("no token %s", id)
		}
		return err
	}
	key := keyPrefix + id
	err := s.records.Delete(ctx, key)
	s.forget(id)
	if s.purge != nil {
		err = errors.Join(err, s.purge(ctx, []string{key}))
	}
	if err != nil {
		return fmt.Errorf("revoking token %s: %w", id, err)
	}
	return s.editIndex(ctx, func(ids []string) []string {
		return slices.DeleteFunc(ids, func(x string) bool { return x == id })
	})
}

// Forget drops what this node took on trust of the tokens among keys,
// which another node purged.
func (s *Store) Forget(keys []string) {
	for _, k := range keys {
		if id, ok := strings.CutPrefix(k, keyPrefix); ok {
			s.forget(id)
		}
	}
}

func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.checked, id)
	s.mu.Unlock()
}

// List returns the tokens that have not been revoked, expired ones
// included, oldest first.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	ids, err := s.index(ctx)
	if err != nil {
		return nil, err
	}
	var toks []Token
	for _, id := range ids {
		tok, err := s.read(ctx, id)
		if errors.Is(err, ErrInvalid) {
			continue // revoked on another node, the index not yet edited
		}
		if err != nil {
			return nil, err
		}
		tok.SHA256 = ""
		toks = append(toks, tok)
	}
	slices.SortStableFunc(toks, func(a, b Token) int { return a.Created.Compare(b.Created) })
	return toks, nil
}

// index is the ids of the tokens issued and not revoked: the list's
// source, never the check's, which reads each token's own record.
func (s *Store) index(ctx context.Context) ([]string, error) {
	obj, err := s.records.GetRecord(ctx, indexKey, true)
	if errors.Is(err, cachetier.ErrMiss) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the token index: %w", err)
	}
	defer obj.Close()
	data, err := obj.Content()
	if err != nil {
		return nil, fmt.Errorf("reading the token index: %w", err)
	}
	var ids []string
	if err := json.Unmarshal(data, &ids); err != nil {
		return nil, fmt.Errorf("the token index is damaged: %w", err)
	}
	return ids, nil
}

func (s *Store) editIndex(ctx context.Context, edit func([]string) []string) error {
	s.indexMu.Lock()
	defer s.indexMu.Unlock()
	ids, err := s.index(ctx)
	if err != nil {
		return err
	}
	data, err := json.Marshal(edit(ids))
	if err != nil {
		return err
	}
	if err := s.records.PutRecord(ctx, indexKey, cachetier.MetaFor(data, time.Time{}), data, true); err != nil {
		return fmt.Errorf("storing the token index: %w", err)
	}
	return nil
}
