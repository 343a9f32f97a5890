package goproxy

import (
	"context"
	"io"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// byteBudget bounds the bytes of fetched bodies that are spooled and
// checked at once, across all fetches. A fetch reserves its body's size
// (its Content-Length, which the HTTP client holds the body to, or the
// most its kind of artifact may be) in one piece before it reads the body,
// and waits while the budget is spent; holding nothing while it waits, no
// set of fetches can wait on each other. A body larger than the whole
// budget takes all of it.
type byteBudget struct {
	sem     *semaphore.Weighted
	max     int64
	used    atomic.Int64
	waiting atomic.Int32
	changed chan struct{} // signalled when a fetch starts or stops waiting
}

func newByteBudget(max int64) *byteBudget {
	return &byteBudget{sem: semaphore.NewWeighted(max), max: max, changed: make(chan struct{}, 1)}
}

func (b *byteBudget) wait(delta int32) {
	b.waiting.Add(delta)
	select {
	case b.changed <- struct{}{}:
	default:
	}
}

// reader reads r, a body of size bytes (-1: unknown, at most limit),
// within the budget; release gives back what it reserved.
func (b *byteBudget) reader(ctx context.Context, r io.Reader, size, limit int64) *budgetReader {
	if size < 0 || size > limit {
		size = limit
	}
	return &budgetReader{b: b, ctx: ctx, r: r, want: min(max(size, 1), b.max)}
}

type budgetReader struct {
	b        *byteBudget
	ctx      context.Context
	r        io.Reader
	want     int64
	reserved int64
}

func (br *budgetReader) Read(p []byte) (int, error) {
	if br.reserved == 0 {
		br.b.wait(1)
		err := br.b.sem.Acquire(br.ctx, br.want)
		br.b.wait(-1)
		if err != nil {
			return 0, err
		}
		br.reserved = br.want
		br.b.used.Add(br.want)
	}
	return br.r.Read(p)
}

func (br *budgetReader) release() {
	if br.reserved > 0 {
		br.b.used.Add(-br.reserved)
		br.b.sem.Release(br.reserved)
		br.reserved = 0
	}
}
