package s3tier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/piraeus-go/piraeus/cachetier"
	"github.com/piraeus-go/piraeus/cachetier/tiertest"
	"github.com/piraeus-go/piraeus/internal/fleetkey"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tier suite on a real S3 server (versitygw).
func TestTierSuite(t *testing.T) {
	t.Parallel()
	tiertest.Suite(t, func(t *testing.T) cachetier.Tier { return openS3(t, testenv.StartS3(t), Config{}) })
}

func openS3(t *testing.T, srv *testenv.S3, cfg Config) *Tier {
	t.Helper()
	cfg.Endpoint, cfg.Bucket, cfg.AccessKey, cfg.SecretKey = srv.Endpoint, "piraeus", srv.AccessKey, srv.SecretKey
	if cfg.SpoolDir == "" {
		cfg.SpoolDir = t.TempDir()
	}
	if cfg.Key == nil {
		cfg.Key = tiertest.FleetKey(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// spoolOf fills a spool of tier with data.
func spoolOf(t *testing.T, tier cachetier.Store, key string, data []byte) (*cachetier.Spool, cachetier.Meta) {
	t.Helper()
	sp, err := tier.NewSpool(key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	if err := sp.Fill(bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	return sp, sp.Meta(time.Time{})
}

// A zip larger than a part goes up in parts, streamed from the spool, and
// comes back whole, from a file, checked; its name in the bucket is its
// key, and a key too long for S3 gets a hashed name.
func TestS3LargeObjectsAndNames(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	s := openS3(t, srv, Config{Prefix: "mirror/"})
	ctx := context.Background()
	data := testenv.Noise(40 << 20) // three parts
	key := "ns/example.com/big/@v/v1.0.0.zip"
	sp, meta := spoolOf(t, s, key, data)
	obj, err := s.Commit(ctx, key, sp, meta)
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	got, err := s.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if _, inMemory := got.Bytes(); inMemory {
		t.Error("a 40MiB object was read into memory")
	}
	if b := tiertest.ReadAll(t, got); !bytes.Equal(b, data) || got.Sum != meta.Sum {
		t.Fatal("large object read back differs")
	}
	long := "ns/example.com/" + strings.Repeat("a", 1100) + "/@v/v1.0.0.mod"
	tiertest.Put(t, s, long, []byte("module x\n"), time.Time{})
	if o, err := s.Get(ctx, long); err != nil || string(tiertest.ReadAll(t, o)) != "module x\n" {
		t.Fatalf("long key: %v", err)
	}
	var names []string
	for _, n := range srv.Objects("piraeus") {
		if !strings.HasPrefix(n, ".") { // the server's own
			names = append(names, n)
		}
	}
	if len(names) != 2 || names[0] != "mirror/h/"+names[0][len("mirror/h/"):] || names[1] != "mirror/o/"+key {
		t.Errorf("objects in the bucket: %q", names)
	}
	keys, next, err := s.List(ctx, "", 10)
	if err != nil || len(keys) != 1 || keys[0] != key || next != "" {
		t.Errorf("List: %q %q %v", keys, next, err)
	}
}

// What is read is checked: content changed in the bucket, or an object
// copied under another key, is refused, deleted and logged.
func TestS3ChecksWhatItReads(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	core, logs := observer.New(zapcore.ErrorLevel)
	s := openS3(t, srv, Config{Logger: zap.New(core)})
	ctx := context.Background()
	for _, size := range []int{100, 2 << 20} { // in memory, and spooled
		key := "ns/example.com/a/@v/v1.0.0.zip"
		data := testenv.Noise(size)
		tiertest.Put(t, s, key, data, time.Time{})
		// Flip a byte of the stored file behind the server's back.
		p := filepath.Join(srv.Root, "piraeus", "o", filepath.FromSlash(key))
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 1
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, key); !errors.Is(err, cachetier.ErrMiss) {
			t.Fatalf("%d bytes, damaged: %v; want a miss", size, err)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("damaged object not deleted: %v", err)
		}
	}
	tiertest.Put(t, s, "ns/example.com/a/@v/v1.0.0.mod", []byte("module example.com/a\n"), time.Time{})
	_, err := s.client.CopyObject(ctx,
		minio.CopyDestOptions{Bucket: "piraeus", Object: s.objectName("ns/example.com/b/@v/v1.0.0.mod")},
		minio.CopySrcOptions{Bucket: "piraeus", Object: s.objectName("ns/example.com/a/@v/v1.0.0.mod")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "ns/example.com/b/@v/v1.0.0.mod"); !errors.Is(err, cachetier.ErrMiss) {
		t.Fatalf("object copied to another key: %v; want a miss", err)
	}
	if n := logs.FilterMessageSnippet("rejected").Len(); n != 3 {
		t.Errorf("%d rejections logged at error level; want 3", n)
	}
}

// An upload that fails midway leaves no object: nothing partial is ever
// visible, in one part or in several.
func TestS3NoPartialObjects(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	s := openS3(t, srv, Config{})
	for _, size := range []int{1 << 20, 20 << 20} {
		data := testenv.Noise(size)
		key := "ns/example.com/p/@v/v1.0.0.zip"
		ctx, cancel := context.WithCancel(context.Background())
		r := &cancelAfter{r: bytes.NewReader(data), n: int64(size) * 3 / 4, cancel: cancel}
		err := s.Upload(ctx, key, cachetier.MetaFor(data, time.Time{}), r)
		cancel()
		if err == nil {
			t.Fatalf("%d bytes: an upload cancelled midway succeeded", size)
		}
		if _, err := s.Get(context.Background(), key); !errors.Is(err, cachetier.ErrMiss) {
			t.Fatalf("%d bytes: after a failed upload: %v; want a miss", size, err)
		}
	}
}

// cancelAfter reads r and cancels a context once n bytes have been read.
type cancelAfter struct {
	r      io.Reader
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	return n, err
}

// A bucket that stalls costs one timeout: the first read that stalls
// misses after one timeout (one attempt, its headers bounded), and opens
// the breaker, which stops asking until its probe finds the bucket back.
func TestS3StallsAreBounded(t *testing.T) {
	t.Parallel()
	testenv.Slow(t)
	srv := testenv.StartS3(t)
	const timeout = time.Second
	s := openS3(t, srv, Config{Timeout: timeout})
	ctx := context.Background()
	tiertest.Put(t, s, "ns/example.com/s/@v/v1.0.0.info", []byte(`{"Version":"v1.0.0"}`), time.Time{})
	srv.Pause()
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	start := time.Now()
	if _, err := s.Get(ctx, "ns/example.com/s/@v/v1.0.0.info"); err == nil {
		t.Fatal("a stalled bucket answered")
	}
	if d := time.Since(start); d >= 2*timeout {
		t.Errorf("a read of a stalled bucket took %v; want about one timeout (%v)", d, timeout)
	}
	if !s.ProbeAt().After(time.Now()) {
		t.Fatal("the breaker did not open after a stalled read")
	}
	if _, err := s.Get(ctx, "ns/example.com/s/@v/v1.0.0.info"); !errors.Is(err, cachetier.ErrMiss) {
		t.Errorf("open breaker: %v; want a miss at once", err)
	}
	if err := s.Put(ctx, "ns/example.com/s/@v/v1.0.1.info", cachetier.MetaFor([]byte("x"), time.Time{}), []byte("x")); err == nil {
		t.Error("a write to an open breaker succeeded")
	}
	srv.Resume()
	resumed = true
	<-time.After(time.Until(s.ProbeAt()))
	if o, err := s.Get(ctx, "ns/example.com/s/@v/v1.0.0.info"); err != nil {
		t.Fatalf("after the bucket came back: %v", err)
	} else {
		o.Close()
	}
}

// A pre-signed URL serves the content alone, for objects at least as
// large as asked.
func TestS3Presign(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	s := openS3(t, srv, Config{})
	ctx := context.Background()
	data := testenv.Noise(3 << 20)
	tiertest.Put(t, s, "ns/example.com/z/@v/v1.0.0.zip", data, time.Time{})
	if _, err := s.Presign(ctx, "ns/example.com/z/@v/v1.0.0.zip", 4<<20, time.Minute); !errors.Is(err, cachetier.ErrMiss) {
		t.Errorf("presigned below the size asked: %v", err)
	}
	u, err := s.Presign(ctx, "ns/example.com/z/@v/v1.0.0.zip", 1<<20, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || sha256.Sum256(body) != sha256.Sum256(data) {
		t.Fatalf("GET presigned: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// Edges with a bounded local disk above one bucket: a fetch is spooled on
// the disk and kept there and in the bucket; another edge reads it from
// the bucket and keeps a copy on its own disk, streamed (not in memory).
func TestTieredDiskAboveS3(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	ctx := context.Background()
	edge := func() (*cachetier.Tiered, *cachetier.DiskTier) {
		d := tiertest.Disk(t)
		mem, err := cachetier.NewMemoryTier(8<<20, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { mem.Close() })
		return cachetier.NewTiered(nil, openS3(t, srv, Config{}), mem, d), d
	}
	a, diskA := edge()
	b, diskB := edge()
	key := "ns/example.com/d/@v/v1.0.0.zip"
	data := testenv.Noise(3 << 20)
	sp, err := a.NewSpool(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Fill(bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(filepath.Dir(sp.Name())) != diskA.Root() {
		t.Errorf("spool %s is not on the local disk %s", sp.Name(), diskA.Root())
	}
	obj, err := a.Commit(ctx, key, sp, sp.Meta(time.Time{}))
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	if _, ok := diskA.File(key); !ok {
		t.Error("committed object not on the local disk")
	}
	got, err := b.Get(ctx, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tier != "s3" || !bytes.Equal(tiertest.ReadAll(t, got), data) {
		t.Fatalf("other edge: from %s", got.Tier)
	}
	if _, inMemory := got.Bytes(); inMemory {
		t.Error("an object above the memory tier's limit was promoted through memory")
	}
	got.Close()
	if _, ok := diskB.File(key); !ok {
		t.Fatal("object read from the bucket not copied to the local disk")
	}
	if got, err = b.Get(ctx, key, nil); err != nil || got.Tier != "disk" {
		t.Fatalf("second read: %v", err)
	}
	got.Close()
}

// An object that someone without the fleet key wrote to the bucket — with
// its key, size and SHA-256 right in its metadata — is refused, deleted
// and counted, as is one that carries no tag (written before fleet_key).
// Its stat for a pre-signed redirect is refused alike.
func TestS3ObjectsSigned(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	s := openS3(t, srv, Config{})
	other, err := fleetkey.New("another-fleet-key-that-is-long-enough-0000")
	if err != nil {
		t.Fatal(err)
	}
	forger := openS3(t, srv, Config{Key: other})
	ctx := context.Background()
	before := fleetkey.Rejections(fleetkey.KindS3Object)
	for _, size := range []int{100, 2 << 20} {
		key := "ns/git.corp.example/x/@v/v1.0.0.zip"
		tiertest.Put(t, forger, key, testenv.Noise(size), time.Time{})
		if _, err := s.Presign(ctx, key, 0, time.Minute); !errors.Is(err, cachetier.ErrMiss) {
			t.Errorf("%d bytes: a forged object was pre-signed: %v", size, err)
		}
		tiertest.Put(t, forger, key, testenv.Noise(size), time.Time{})
		if _, err := s.Get(ctx, key); !errors.Is(err, cachetier.ErrMiss) {
			t.Fatalf("%d bytes: a forged object was read: %v", size, err)
		}
		if _, err := s.client.StatObject(ctx, "piraeus", s.objectName(key), minio.StatObjectOptions{}); err == nil {
			t.Errorf("%d bytes: the forged object was not deleted", size)
		}
	}
	// No tag at all.
	data := []byte("module git.corp.example/x\n")
	meta := cachetier.MetaFor(data, time.Time{})
	md := encodeMeta(s.cfg.Key, "ns/git.corp.example/x/@v/v1.0.0.mod", meta)
	delete(md, metaTag)
	if _, err := s.client.PutObject(ctx, "piraeus", s.objectName("ns/git.corp.example/x/@v/v1.0.0.mod"), bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{UserMetadata: md}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "ns/git.corp.example/x/@v/v1.0.0.mod"); !errors.Is(err, cachetier.ErrMiss) {
		t.Fatalf("an object without a tag was read: %v", err)
	}
	if n := fleetkey.Rejections(fleetkey.KindS3Object) - before; n != 5 {
		t.Errorf("%d refused objects counted; want 5", n)
	}
	// What the tier writes itself it reads back.
	tiertest.Put(t, s, "ns/example.com/a/@v/v1.0.0.mod", []byte("module example.com/a\n"), time.Time{})
	if o, err := s.Get(ctx, "ns/example.com/a/@v/v1.0.0.mod"); err != nil || string(tiertest.ReadAll(t, o)) != "module example.com/a\n" {
		t.Errorf("the tier's own object: %v", err)
	}
}

// A multipart upload that its edge never completed (it died in mid-upload)
// is aborted once it is older than AbandonedUploads, by its upload id: a
// younger one, and uploads outside the tier's prefix, are left alone.
func TestS3AbandonedUploadsAborted(t *testing.T) {
	t.Parallel()
	srv := testenv.StartS3(t)
	cl, err := minio.New(strings.TrimPrefix(srv.Endpoint, "http://"), &minio.Options{Creds: credentials.NewStaticV4(srv.AccessKey, srv.SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	core := minio.Core{Client: cl}
	ctx := t.Context()
	for _, name := range []string{"edge/o/ns/example.com/p/@v/v1.0.0.zip", "other/o/x.zip"} {
		if _, err := core.NewMultipartUpload(ctx, "piraeus", name, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	uploads := func() []string {
		var names []string
		for u := range cl.ListIncompleteUploads(ctx, "piraeus", "", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			names = append(names, u.Key)
		}
		return names
	}
	young := openS3(t, srv, Config{Prefix: "edge/", AbandonedUploads: time.Hour})
	<-young.Swept()
	if got := uploads(); len(got) != 2 {
		t.Fatalf("uploads younger than an hour: %v left; want both", got)
	}
	old := openS3(t, srv, Config{Prefix: "edge/", AbandonedUploads: time.Nanosecond})
	<-old.Swept()
	if got := uploads(); len(got) != 1 || got[0] != "other/o/x.zip" {
		t.Fatalf("after the sweep of edge/: uploads %v; want only other/o/x.zip", got)
	}
}
