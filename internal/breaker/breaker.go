// Package breaker is a circuit breaker for a remote store (Redis, an S3
// bucket): after consecutive failures it stops asking for a while, so a
// store that is down or hangs costs a bounded delay, and it probes again
// with one request per cooldown, backing off while the store stays down.
package breaker

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
)

// New returns a closed breaker; name says what it guards, in its logs.
func New(name string, log *zap.Logger) *Breaker {
	if log == nil {
		log = zap.NewNop()
	}
	return &Breaker{name: name, log: log}
}

// ProbeAt is when the open breaker next lets a request through; a time in
// the past when it is closed.
func (b *Breaker) ProbeAt() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openUntil
}

// Breaker opens after breakerThreshold consecutive failures, or at once
// when a request stalled (timed out): a stall has already cost its caller
// the whole timeout, and each further request would cost it again, so a
// request waits about one timeout for the store, not one per read. It then lets
// one request through per cooldown, doubling the cooldown up to a limit
// while the store stays down.
type Breaker struct {
	name string
	log  *zap.Logger

	mu        sync.Mutex
	failures  int
	cooldown  time.Duration
	openUntil time.Time // no request before this, but one probe after it
	tripped   time.Time // when the breaker last opened or backed off
	open      bool
	// failingSince is the first failure since the last success.
	failingSince time.Time
}

const (
	breakerThreshold   = 3
	breakerMinCooldown = 500 * time.Millisecond
	breakerMaxCooldown = 15 * time.Second
)

// Available reports whether a request would be let through now, without
// taking the half-open probe (for status pages, which must not use up the
// one request per cooldown that finds the store back).
func (b *Breaker) Available() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.open || !time.Now().Before(b.openUntil)
}

// Allow reports whether a request may go; when the breaker is open, one
// caller per cooldown is let through to probe.
func (b *Breaker) Allow() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if time.Now().Before(b.openUntil) {
		return false
	}
	// Half-open: this caller probes; the others wait for its outcome.
	b.openUntil = time.Now().Add(b.cooldown)
	return true
}

// Success records a request that worked.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		b.log.Warn(b.name + " is reachable again; using it")
	}
	b.failures, b.open, b.cooldown, b.failingSince = 0, false, 0, time.Time{}
}

// FailingFor is how long requests have failed without one that worked
// since; zero while the last request worked.
func (b *Breaker) FailingFor() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failingSince.IsZero() {
		return 0
	}
	return time.Since(b.failingSince)
}

// Failure records a request that failed.
func (b *Breaker) Failure(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if b.failures == 0 {
		b.failingSince = now
	}
	b.failures++
	if b.open {
		// A failed probe backs off further; requests that were already
		// under way when the breaker opened do not.
		if now.Sub(b.tripped) >= b.cooldown {
			b.cooldown = min(b.cooldown*2, breakerMaxCooldown)
			b.openUntil, b.tripped = now.Add(b.cooldown), now
		}
		return
	}
	stalled := IsStall(err)
	if b.failures < breakerThreshold && !stalled {
		return
	}
	if stalled {
		b.log.Warn(b.name+" stalled; bypassing it", zap.Error(err))
	} else {
		b.log.Warn(b.name+" unavailable; bypassing it", zap.Error(err))
	}
	b.open, b.cooldown = true, breakerMinCooldown
	b.openUntil, b.tripped = now.Add(b.cooldown), now
}

// ErrStalled is the cause given to a request cancelled because the store
// did not answer within its timeout.
var ErrStalled = errors.New("stalled: no answer within the timeout")

// IsStall reports whether err is a timeout: a deadline passed, a network
// operation timed out, or a request was cancelled with ErrStalled.
func IsStall(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrStalled) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
