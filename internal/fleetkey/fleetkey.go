// Package fleetkey authenticates what the edges of a fleet write to the
// state they share (Redis, a bucket): every value carries an HMAC-SHA256
// under the fleet's secret, so that someone who can write to Redis or the
// bucket, but does not hold the secret, cannot make a value an edge
// accepts. A value that fails its check is counted by kind.
package fleetkey

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
)

// MinLen is the shortest secret accepted, in bytes.
const MinLen = 32

// Howto says how an operator makes a secret.
const Howto = "make one with `head -c 32 /dev/urandom | base64` and give every edge the same, e.g. fleet_key {env.PIRAEUS_FLEET_KEY}"

// TagLen is the length of a tag.
const TagLen = sha256.Size

// Kinds of signed values: a tag made for one kind is never accepted for
// another.
const (
	KindRedisObject = "redis_object"
	KindTombstone   = "redis_tombstone"
	KindS3Object    = "s3_object"
	KindLock        = "lock"
	KindHandOver    = "hand_over"
	KindNotFound    = "not_found"
	KindPurge       = "purge"
)

// Kinds lists every kind, for metrics.
var Kinds = []string{KindRedisObject, KindTombstone, KindS3Object, KindLock, KindHandOver, KindNotFound, KindPurge}

// Key signs with its first secret and accepts tags made with any of them
// (the others are older secrets, kept while a fleet rotates).
type Key struct {
	secrets [][]byte
	id      [8]byte
}

// rejected counts refused values by kind, for the whole process: the
// counts outlive a config reload, which makes a new Key.
var rejected = func() map[string]*atomic.Int64 {
	m := map[string]*atomic.Int64{}
	for _, k := range Kinds {
		m[k] = new(atomic.Int64)
	}
	return m
}()

// New returns a Key for secrets: the current one first, then any being
// retired. Each must be at least MinLen bytes.
func New(secrets ...string) (*Key, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no fleet key; " + Howto)
	}
	k := &Key{}
	for i, s := range secrets {
		if len(s) < MinLen {
			what := "fleet_key"
			if i > 0 {
				what = fmt.Sprintf("fleet_key's older key %d", i)
			}
			return nil, fmt.Errorf("%s is %d bytes; it must be at least %d bytes of random text: %s", what, len(s), MinLen, Howto)
		}
		k.secrets = append(k.secrets, []byte(s))
	}
	id := sha256.Sum256(append([]byte("piraeus fleet key id\x00"), k.secrets[0]...))
	copy(k.id[:], id[:])
	return k, nil
}

// ID is a digest of the signing secret that reveals nothing of it, for
// telling configurations apart (pools of open tiers).
func (k *Key) ID() string { return fmt.Sprintf("%x", k.id) }

// Sum is the tag of a value of kind made of parts, under the current
// secret. Each part is length-prefixed, so parts cannot be shifted into
// each other.
func (k *Key) Sum(kind string, parts ...[]byte) []byte {
	return sum(k.secrets[0], kind, parts)
}

// SumString is Sum of string parts.
func (k *Key) SumString(kind string, parts ...string) []byte {
	return k.Sum(kind, bytesOf(parts)...)
}

// Check reports whether tag is the tag of a value of kind made of parts,
// under any of the key's secrets.
func (k *Key) Check(tag []byte, kind string, parts ...[]byte) bool {
	if len(tag) != TagLen {
		return false
	}
	for _, s := range k.secrets {
		if hmac.Equal(tag, sum(s, kind, parts)) {
			return true
		}
	}
	return false
}

// CheckString is Check of string parts.
func (k *Key) CheckString(tag []byte, kind string, parts ...string) bool {
	return k.Check(tag, kind, bytesOf(parts)...)
}

// HexTag is SumString in hex, for values that are text.
func (k *Key) HexTag(kind string, parts ...string) string {
	return hex.EncodeToString(k.SumString(kind, parts...))
}

// CheckHexTag is CheckString of a tag in hex.
func (k *Key) CheckHexTag(tag, kind string, parts ...string) bool {
	b, err := hex.DecodeString(tag)
	return err == nil && k.CheckString(b, kind, parts...)
}

// Rejected counts a value of kind (one of Kinds) that was refused.
func Rejected(kind string) {
	if c := rejected[kind]; c != nil {
		c.Add(1)
	}
}

// Rejections is the number of values of kind refused in this process.
func Rejections(kind string) int64 {
	if c := rejected[kind]; c != nil {
		return c.Load()
	}
	return 0
}

func sum(secret []byte, kind string, parts [][]byte) []byte {
	m := hmac.New(sha256.New, secret)
	var n [8]byte
	write := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		m.Write(n[:])
		m.Write(b)
	}
	write([]byte(kind))
	for _, p := range parts {
		write(p)
	}
	return m.Sum(nil)
}

func bytesOf(parts []string) [][]byte {
	b := make([][]byte, len(parts))
	for i, p := range parts {
		b[i] = []byte(p)
	}
	return b
}
