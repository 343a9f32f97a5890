package cachetier

import (
	"crypto/sha256"
	"time"
)

// MetaFor describes data fetched now; expires is zero for content that
// never changes.
func MetaFor(data []byte, expires time.Time) Meta {
	return Meta{Size: int64(len(data)), Sum: sha256.Sum256(data), Stored: time.Now(), Expires: expires}
}
