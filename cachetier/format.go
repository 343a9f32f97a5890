package cachetier

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/piraeus-go/piraeus/internal/fleetkey"
)

// Every stored value, on disk and in Redis, starts with a header naming
// the key it was stored under, so that a value copied to another key is
// recognised and refused:
//
//	0   magic "PIRAEUS\x02"
//	8   content size          (uint64)
//	16  content SHA-256       (32 bytes)
//	48  stored, unix ns       (uint64)
//	56  expires, unix ns      (uint64, 0: never)
//	64  key length            (uint16)
//	66  CRC-32 (IEEE) of bytes 0..66 and the key
//	70  zero
//	72  in a shared tier (Redis, a hand-over): HMAC-SHA256 of bytes 0..66
//	    and the key under the fleet key, bound to the value's kind; zero
//	    on disk
//	104 zero up to fixedHeader
//	fixedHeader  the key, then the content
//
// The tag covers the content too, through its size and SHA-256, which a
// read checks against the content.
const (
	fixedHeader = 128
	headerMagic = "PIRAEUS\x02"
	maxKeyLen   = 4096
	tagOff      = 72
)

// headerLen is the length of the header of an object stored under key.
func headerLen(key string) int64 { return fixedHeader + int64(len(key)) }

func encodeHeader(key string, m Meta) []byte {
	b := make([]byte, headerLen(key))
	copy(b[0:8], headerMagic)
	binary.BigEndian.PutUint64(b[8:16], uint64(m.Size))
	copy(b[16:48], m.Sum[:])
	binary.BigEndian.PutUint64(b[48:56], uint64(m.Stored.UnixNano()))
	if !m.Expires.IsZero() {
		binary.BigEndian.PutUint64(b[56:64], uint64(m.Expires.UnixNano()))
	}
	binary.BigEndian.PutUint16(b[64:66], uint16(len(key)))
	copy(b[fixedHeader:], key)
	binary.BigEndian.PutUint32(b[66:70], headerCRC(b[0:66], key))
	return b
}

func headerCRC(fixed []byte, key string) uint32 {
	c := crc32.ChecksumIEEE(fixed)
	return crc32.Update(c, crc32.IEEETable, []byte(key))
}

// decodeFixed reads the fixed part of a header: the meta and the length
// of the key that follows it.
func decodeFixed(b []byte) (Meta, int, error) {
	if len(b) < fixedHeader || string(b[0:8]) != headerMagic {
		return Meta{}, 0, errors.New("bad header magic")
	}
	var m Meta
	m.Size = int64(binary.BigEndian.Uint64(b[8:16]))
	if m.Size < 0 {
		return Meta{}, 0, errors.New("bad size in header")
	}
	copy(m.Sum[:], b[16:48])
	m.Stored = time.Unix(0, int64(binary.BigEndian.Uint64(b[48:56])))
	if exp := int64(binary.BigEndian.Uint64(b[56:64])); exp != 0 {
		m.Expires = time.Unix(0, exp)
	}
	return m, int(binary.BigEndian.Uint16(b[64:66])), nil
}

// checkHeader verifies the header's checksum and that it names key.
func checkHeader(b []byte, key string) error {
	if string(b[fixedHeader:]) != key {
		return fmt.Errorf("stored under key %q, read as %q", Truncate(string(b[fixedHeader:])), Truncate(key))
	}
	if headerCRC(b[0:66], key) != binary.BigEndian.Uint32(b[66:70]) {
		return errors.New("header checksum mismatch")
	}
	return nil
}

// Truncate shortens a key for a log line or an error.
func Truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

// signHeader writes the tag of a header of kind under fk.
func signHeader(b []byte, key string, fk *fleetkey.Key, kind string) {
	copy(b[tagOff:tagOff+fleetkey.TagLen], fk.Sum(kind, b[0:66], []byte(key)))
}

// ErrBadTag is a shared value whose tag fails the fleet key: written by
// someone who does not hold it.
var ErrBadTag = errors.New("its tag fails the fleet key: it was not written by an edge of this fleet")

// checkTag checks the tag of a header of kind under fk.
func checkTag(b []byte, key string, fk *fleetkey.Key, kind string) error {
	if !fk.Check(b[tagOff:tagOff+fleetkey.TagLen], kind, b[0:66], []byte(key)) {
		return ErrBadTag
	}
	return nil
}

// EncodeValue is a signed header and the content, as one value (a
// shared tier's, such as Redis).
func EncodeValue(key string, m Meta, data []byte, fk *fleetkey.Key, kind string) []byte {
	hdr := encodeHeader(key, m)
	signHeader(hdr, key, fk, kind)
	return append(hdr[:len(hdr):len(hdr)], data...)
}

// DecodeValue checks a value of kind read under key, its tag first, and
// returns its meta and content.
func DecodeValue(key string, val []byte, fk *fleetkey.Key, kind string) (Meta, []byte, error) {
	return decodeValue(key, val, func(hdr []byte) error { return checkTag(hdr, key, fk, kind) })
}

// decodeValue checks a value read under key (header, key, then tag if
// checkTag is given, size and SHA-256), and returns its meta and content.
func decodeValue(key string, val []byte, checkTag func(hdr []byte) error) (Meta, []byte, error) {
	meta, keyLen, err := decodeFixed(val)
	if err != nil {
		return Meta{}, nil, err
	}
	hl := fixedHeader + keyLen
	if len(val) < hl {
		return Meta{}, nil, errors.New("value shorter than its header")
	}
	if err := checkHeader(val[:hl], key); err != nil {
		return Meta{}, nil, err
	}
	if checkTag != nil {
		if err := checkTag(val[:hl]); err != nil {
			return Meta{}, nil, err
		}
	}
	data := val[hl:]
	if int64(len(data)) != meta.Size {
		return Meta{}, nil, fmt.Errorf("content is %d bytes, header says %d", len(data), meta.Size)
	}
	if sha256.Sum256(data) != meta.Sum {
		return Meta{}, nil, errors.New("content does not match its SHA-256")
	}
	return meta, data, nil
}

// MetaFor describes data fetched now; expires is zero for content that
// never changes.
func MetaFor(data []byte, expires time.Time) Meta {
	return Meta{Size: int64(len(data)), Sum: sha256.Sum256(data), Stored: time.Now(), Expires: expires}
}

// EncodeHeader is the header of an object stored under key, signed under
// fk for kind, for values other packages keep in shared state (a
// hand-over between nodes).
func EncodeHeader(key string, m Meta, fk *fleetkey.Key, kind string) []byte {
	b := encodeHeader(key, m)
	signHeader(b, key, fk, kind)
	return b
}

// DecodeHeader reads a header made by EncodeHeader, checking that it
// names key and that its tag is good (else ErrBadTag).
func DecodeHeader(key string, b []byte, fk *fleetkey.Key, kind string) (Meta, error) {
	meta, keyLen, err := decodeFixed(b)
	if err != nil {
		return Meta{}, err
	}
	if len(b) != fixedHeader+keyLen {
		return Meta{}, errors.New("header of a wrong length")
	}
	if err := checkHeader(b, key); err != nil {
		return Meta{}, err
	}
	return meta, checkTag(b, key, fk, kind)
}
