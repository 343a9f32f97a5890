package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// chunkRecorder records the size of every ReadFrom and Write the writer
// above it makes, and every write deadline it sets.
type chunkRecorder struct {
	*httptest.ResponseRecorder
	chunks    []int64
	deadlines int
}

func (c *chunkRecorder) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(c.ResponseRecorder.Body, r)
	c.chunks = append(c.chunks, n)
	return n, err
}

func (c *chunkRecorder) Write(p []byte) (int, error) {
	c.chunks = append(c.chunks, int64(len(p)))
	return c.ResponseRecorder.Write(p)
}

func (c *chunkRecorder) SetWriteDeadline(time.Time) error {
	c.deadlines++
	return nil
}

// Caddy's idle timeout writer, as its server installs it, under one more
// wrapper (as Caddy's access logging puts one), over a recorder.
func idleWriterOver(rec *chunkRecorder, timeout time.Duration, minRate int64, maxChunk int) (*caddyhttp.IdleTimeoutWriter, http.ResponseWriter) {
	iw := &caddyhttp.IdleTimeoutWriter{
		ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: rec},
		Ctrl:                  http.NewResponseController(rec),
		Deadline:              caddyhttp.IdleDeadline{Start: time.Now(), Timeout: timeout, MinRate: minRate},
		MaxChunk:              maxChunk,
		Logger:                zap.NewNop(),
	}
	return iw, &caddyhttp.ResponseWriterWrapper{ResponseWriter: iw}
}

func TestRaiseWriteChunk(t *testing.T) {
	body := bytes.Repeat([]byte("z"), 5<<20+123)
	for _, tc := range []struct {
		name      string
		timeout   time.Duration
		minRate   int64
		maxChunk  int
		wantChunk int64
	}{
		{"Caddy's defaults", time.Minute, 0, caddyhttp.DefaultMaxWriteChunk, 60 * slowClientRate},
		{"no chunk set", time.Minute, 0, 0, 60 * slowClientRate},
		{"a long idle timeout", 10 * time.Minute, 0, caddyhttp.DefaultMaxWriteChunk, maxWriteChunk},
		{"a short idle timeout", time.Second, 0, caddyhttp.DefaultMaxWriteChunk, caddyhttp.DefaultMaxWriteChunk},
		{"a minimum rate", time.Minute, 100 << 10, caddyhttp.DefaultMaxWriteChunk, caddyhttp.DefaultMaxWriteChunk},
		{"the operator's chunk", time.Minute, 0, 16 << 10, 16 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &chunkRecorder{ResponseRecorder: httptest.NewRecorder()}
			iw, w := idleWriterOver(rec, tc.timeout, tc.minRate, tc.maxChunk)
			restore := raiseWriteChunk(w)
			if _, err := w.(io.ReaderFrom).ReadFrom(bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(body); err != nil {
				t.Fatal(err)
			}
			// Every chunk but each copy's last is the chunk size, and the
			// deadline was reset before each one.
			if len(rec.chunks) < 2 || rec.chunks[0] != tc.wantChunk {
				t.Fatalf("chunks %v: want chunks of %d bytes", rec.chunks[:min(4, len(rec.chunks))], tc.wantChunk)
			}
			for _, n := range rec.chunks {
				if n > tc.wantChunk {
					t.Fatalf("a chunk of %d bytes, over %d", n, tc.wantChunk)
				}
			}
			if want := 2 * int((int64(len(body))+tc.wantChunk-1)/tc.wantChunk); len(rec.chunks) != want || rec.deadlines < want {
				t.Errorf("%d chunks, %d deadlines set: want %d of each", len(rec.chunks), rec.deadlines, want)
			}
			if got := rec.Body.Len(); got != 2*len(body) {
				t.Fatalf("%d bytes arrived, want %d", got, 2*len(body))
			}
			restore()
			if iw.MaxChunk != tc.maxChunk || iw.Deadline.Timeout != tc.timeout || iw.Deadline.MinRate != tc.minRate {
				t.Fatalf("after restore: chunk %d, timeout %v, min rate %d; want Caddy's %d, %v, %d",
					iw.MaxChunk, iw.Deadline.Timeout, iw.Deadline.MinRate, tc.maxChunk, tc.timeout, tc.minRate)
			}
		})
	}
	// No idle timeout writer (write_idle_timeout off): nothing to raise.
	rec := &chunkRecorder{ResponseRecorder: httptest.NewRecorder()}
	raiseWriteChunk(rec)()
}
