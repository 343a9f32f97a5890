package goproxy

import (
	"context"
	"io"
	"time"

	"github.com/piraeus-go/piraeus/cachetier"
)

// Fleet coordinates this node with the others that share its state (the
// fleet package's, on Redis): a node fetches an artifact only while it
// holds the artifact's lock, large objects are handed over to the nodes
// waiting for them, not-found answers are shared, and purges reach every
// node. The proxy depends on this interface alone, so that it links no
// Redis client when no fleet is configured.
type Fleet interface {
	// Lock takes the fleet-wide lock for key, waiting while another node
	// holds it, until ctx ends; cachetier.ErrUnavailable means the shared
	// state is not being used now and the caller fetches without it.
	Lock(ctx context.Context, key string) (unlock func(), err error)
	// PutTransfer offers an object fetched under the lock to the nodes
	// waiting for it; it reports whether it did.
	PutTransfer(ctx context.Context, key string, meta cachetier.Meta, src io.Reader) (bool, error)
	// GetTransfer reads an object handed over for key; the caller checks
	// it against meta before using it.
	GetTransfer(ctx context.Context, key string) (cachetier.Meta, io.Reader, error)
	// DeleteTransfer drops a hand-over that failed its check.
	DeleteTransfer(ctx context.Context, key string)
	// PutNotFound shares a not-found answer for ttl; GetNotFound reads one.
	PutNotFound(ctx context.Context, key string, status int, msg string, ttl time.Duration)
	GetNotFound(ctx context.Context, key string) (status int, msg string, ok bool)
	// Purge removes keys from every node's tiers.
	Purge(ctx context.Context, keys []string) error
	// Available reports, without side effects, whether the shared state
	// is in use now.
	Available() bool
}
