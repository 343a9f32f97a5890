package cachetier

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

func readAll(t *testing.T, o *Object) []byte {
	t.Helper()
	b, err := io.ReadAll(o.Reader())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openDisk(t *testing.T, cfg DiskConfig) *DiskTier {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = t.TempDir()
	}
	d, err := NewDiskTier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// waitCounted waits for the background start-up count, which every test
// that looks at occupancy needs.
func waitCounted(t *testing.T, d *DiskTier) {
	t.Helper()
	select {
	case <-d.Counted():
	case <-time.After(time.Minute):
		t.Fatal("the start-up count did not finish")
	}
}

func put(t *testing.T, tier Tier, key string, data []byte, expires time.Time) {
	t.Helper()
	if err := tier.Put(t.Context(), key, MetaFor(data, expires), data); err != nil {
		t.Fatal(err)
	}
}

func TestDiskRoundTripAndRestart(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := openDisk(t, DiskConfig{Root: root})
	data := []byte("v1.0.0\n")
	exp := time.Now().Add(time.Hour).Truncate(time.Nanosecond)
	put(t, d, "example.com/a/@v/list", data, exp)
	mod := []byte("module example.com/a\n")
	put(t, d, "example.com/a/@v/v1.0.0.mod", mod, time.Time{})
	d.Close()
	d2 := openDisk(t, DiskConfig{Root: root}) // a new process: nothing remembered
	o, err := d2.Get(t.Context(), "example.com/a/@v/list")
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	if got := readAll(t, o); !bytes.Equal(got, data) || !o.Expires.Equal(exp) || o.Tier != "disk" {
		t.Fatalf("got %q expires %v tier %s", got, o.Expires, o.Tier)
	}
	if _, err := d2.Get(t.Context(), "example.com/b/@v/list"); !errors.Is(err, ErrMiss) {
		t.Fatalf("missing key: %v", err)
	}
	if o, err := d2.Get(t.Context(), "example.com/a/@v/v1.0.0.mod"); err != nil || !bytes.Equal(readAll(t, o), mod) {
		t.Fatalf("small object after a restart: %v", err)
	}
	waitCounted(t, d2)
	// The list is a file (one block), the .mod an entry of the small store.
	small := entrySize("example.com/a/@v/v1.0.0.mod", make([]byte, headerLen("example.com/a/@v/v1.0.0.mod")+int64(len(mod))))
	if objects, bytes := d2.Usage(); objects != 2 || bytes != fanOut*blockSize+blockSize+small {
		t.Errorf("counted %d objects, %d bytes; want 2 and the directories plus a block and %d", objects, bytes, small)
	}
}

func TestDiskPutMismatchLeavesNothing(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := openDisk(t, DiskConfig{Root: root})
	data := []byte("0123456789")
	if err := d.Put(t.Context(), "example.com/a/@v/v1.0.0.mod", MetaFor(data, time.Time{}), data[:5]); err == nil {
		t.Fatal("content not matching its meta stored")
	}
	if _, err := d.Get(t.Context(), "example.com/a/@v/v1.0.0.mod"); !errors.Is(err, ErrMiss) {
		t.Fatalf("partial object visible: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "tmp")); len(entries) != 0 {
		t.Fatalf("temp files left: %v", entries)
	}
}

// Keys are opaque to the tier: whatever their bytes, objects live in the
// fixed fan-out under the root, and no key makes a directory.
func TestDiskKeysStayInsideAndLayoutIsFixed(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "cache")
	d := openDisk(t, DiskConfig{Root: root})
	for _, key := range []string{"../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a/b/"} {
		put(t, d, key, []byte(key), time.Time{})
		if o, err := d.Get(t.Context(), key); err != nil || string(readAll(t, o)) != key {
			t.Errorf("Get(%q): %v", key, err)
		} else {
			o.Close()
		}
	}
	if err := d.Put(t.Context(), "", MetaFor(nil, time.Time{}), nil); err == nil {
		t.Error("empty key accepted")
	}
	for i := range 1000 { // distinct list paths, as hostile clients would make
		put(t, d, fmt.Sprintf("example.com/m%d/deep/er/@v/list", i), []byte("v1.0.0\n"), time.Now().Add(time.Minute))
	}
	dirs := 0
	filepath.WalkDir(filepath.Dir(root), func(p string, e os.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			dirs++
		}
		return nil
	})
	if want := 1 + 1 + 1 + fanOut + 1; dirs != want { // parent, root, v2, fan-out, tmp
		t.Errorf("%d directories; want %d whatever the keys", dirs, want)
	}
}

// A file edited in place, even to the same size and mtime, is noticed by
// its ctime; a file copied over another key's file is refused by its
// header. Both are removed and logged at error level.
func TestDiskDetectsDamageAndForeignFiles(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.ErrorLevel)
	d := openDisk(t, DiskConfig{Logger: zap.New(core)})
	data := bytes.Repeat([]byte("z"), smallMax+1) // files, not the small store
	key, other := "example.com/a/@v/v1.0.0.zip", "example.com/b/@v/v1.0.0.zip"
	put(t, d, key, data, time.Time{})
	put(t, d, other, bytes.Repeat([]byte("o"), smallMax+1), time.Time{})
	o, err := d.Get(t.Context(), key) // checked once, remembered
	if err != nil {
		t.Fatal(err)
	}
	o.Close()

	file, _ := d.File(key)
	fi, _ := os.Stat(file)
	raw, _ := os.ReadFile(file)
	raw[len(raw)-1] = 'y'
	os.WriteFile(file, raw, 0o644)
	os.Chtimes(file, fi.ModTime(), fi.ModTime()) // same size, same mtime
	if _, err := d.Get(t.Context(), key); !errors.Is(err, ErrMiss) {
		t.Fatalf("a file edited in place was served: %v", err)
	}
	if _, ok := d.File(key); ok {
		t.Error("edited file kept")
	}

	put(t, d, key, data, time.Time{})
	src, _ := d.File(other)
	dst, _ := d.File(key)
	b, _ := os.ReadFile(src)
	os.WriteFile(dst, b, 0o644) // another key's object, copied over
	if _, err := d.Get(t.Context(), key); !errors.Is(err, ErrMiss) {
		t.Fatalf("another key's file was served: %v", err)
	}
	if n := logs.FilterMessageSnippet("corrupt cache file removed").Len(); n != 2 {
		t.Errorf("%d error logs for removed files; want 2", n)
	}
}

// Once a file was hashed it is not hashed again on later reads, however
// many objects the tier holds (the table grows with it), until it changes.
// The table starts at 16 slots here, so that a few hundred objects make
// it grow as a large tier's does (from 2^14 slots by default).
func TestDiskHashesEachFileOnce(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{})
	d.resetVerified(16)
	const n = 400 // the table grows from 16 to 2048 slots on the way
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("example.com/m%d/@v/v1.0.0.zip", i)
		put(t, d, keys[i], fmt.Appendf(bytes.Repeat([]byte{'z'}, smallMax), "%d", i), time.Time{}) // a file each
	}
	read := func() {
		for _, k := range keys {
			o, err := d.Get(t.Context(), k)
			if err != nil {
				t.Fatal(err)
			}
			o.Close()
		}
	}
	read()
	before := d.hashed.Load()
	read()
	read()
	// The table is lossy: a set of four slots that five files share
	// loses one, rarely (about 0.1% of the 512 sets here, each costing at
	// most its five files per pass); a table that did not grow would hash
	// nearly every read again.
	again := d.hashed.Load() - before
	t.Logf("%d of %d later reads hashed again", again, 2*n)
	if again > n/10 {
		t.Errorf("%d of %d files were hashed again on later reads", again, 2*n)
	}
	if slots := len(*d.verified.Load()); slots < 4*n {
		t.Errorf("verified table has %d slots for %d objects", slots, n)
	}
}

// The object Commit returns reads the committed file itself: removing the
// name (eviction, purge) does not take it from readers.
func TestDiskCommitServesAfterRemoval(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{})
	key := "example.com/a/@v/v1.0.0.zip"
	s, err := d.NewSpool(key)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("q"), 100<<10)
	if err := s.Fill(bytes.NewReader(data), 1<<20); err != nil {
		t.Fatal(err)
	}
	obj, err := d.Commit(t.Context(), key, s, s.Meta(time.Time{}))
	if err != nil {
		t.Fatal(err)
	}
	s.Close() // no effect on a committed spool
	clone := obj.Clone()
	obj.Close()
	if err := d.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, clone); !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes after removal; want %d", len(got), len(data))
	}
	clone.Close()
	if clone.Clone() != nil {
		t.Error("a closed object cloned")
	}
}

func TestDiskSweepsStaleMutableObjects(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{StaleMax: time.Hour})
	put(t, d, "example.com/a/@v/list", []byte("v1\n"), time.Now().Add(-2*time.Hour))    // stale too long
	put(t, d, "example.com/b/@v/list", []byte("v1\n"), time.Now().Add(-30*time.Minute)) // stale, kept to serve
	put(t, d, "example.com/c/@v/list", []byte("v1\n"), time.Now().Add(time.Minute))
	put(t, d, "example.com/a/@v/v1.0.0.mod", []byte("module example.com/a\n"), time.Time{})
	d.SweepStale()
	for key, want := range map[string]bool{"example.com/a/@v/list": false, "example.com/b/@v/list": true, "example.com/c/@v/list": true, "example.com/a/@v/v1.0.0.mod": true} {
		if ok, _ := d.Holds(t.Context(), key); ok != want {
			t.Errorf("%s kept: %v; want %v", key, ok, want)
		}
	}
}

func TestDiskRemovesOldLayout(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	old := filepath.Join(root, "v1", "example.com", "a", "@v")
	os.MkdirAll(old, 0o755)
	os.WriteFile(filepath.Join(old, "list"), []byte("x"), 0o644)
	d := openDisk(t, DiskConfig{Root: root})
	waitCounted(t, d) // removal comes before the count
	if _, err := os.Stat(filepath.Join(root, "v1")); !os.IsNotExist(err) {
		t.Errorf("the old layout is still there: %v", err)
	}
}

func TestMemoryTierLimitsAndTTL(t *testing.T) {
	t.Parallel()
	m, err := NewMemoryTier(1<<20, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	small, big := []byte("small"), []byte(strings.Repeat("b", 101))
	put(t, m, "s", small, time.Time{})
	put(t, m, "b", big, time.Time{})
	put(t, m, "expired", small, time.Now().Add(-time.Second))
	m.Wait()
	if o, err := m.Get(t.Context(), "s"); err != nil || !bytes.Equal(readAll(t, o), small) {
		t.Fatalf("small object: %v", err)
	}
	for _, k := range []string{"b", "expired"} {
		if _, err := m.Get(t.Context(), k); !errors.Is(err, ErrMiss) {
			t.Errorf("%s kept: %v", k, err)
		}
	}
}

func TestTieredPromotes(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{})
	m, _ := NewMemoryTier(1<<20, 1<<10)
	tiers := NewTiered(nil, d, m)
	defer tiers.Close()
	data := []byte("v1.0.0\n")
	key := "example.com/a/@v/v1.0.0.info"
	put(t, d, key, data, time.Time{})
	o, err := tiers.Get(t.Context(), key, nil)
	if err != nil || o.Tier != "disk" {
		t.Fatalf("first get: %v from %v", err, o)
	}
	o.Close()
	m.Wait()
	o, err = tiers.Get(t.Context(), key, nil)
	if err != nil || o.Tier != "memory" || !bytes.Equal(readAll(t, o), data) {
		t.Fatalf("second get: %v, tier %s", err, o.Tier)
	}
}

func TestDiskEvictsLeastRecentlyRead(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	data := bytes.Repeat([]byte("x"), smallMax+1) // a file each
	key := func(i int) string { return "example.com/m/@v/v1.0." + strconv.Itoa(i) + ".zip" }
	size := used(headerLen(key(10)) + int64(len(data)))
	// Room for 10 objects besides the directories; eviction leaves 9.
	d := openDisk(t, DiskConfig{Root: root, MaxBytes: dirOverhead + 10*size, Logger: zaptest.NewLogger(t)})
	waitCounted(t, d)
	age := func(i int, ago time.Duration) {
		f, _ := d.File(key(i))
		os.Chtimes(f, time.Now().Add(-ago), time.Time{})
	}
	for i := range 8 {
		put(t, d, key(i), data, time.Time{})
		age(i, time.Hour+time.Duration(10-i)*time.Minute) // written long ago, in order
	}
	for i := range 4 { // read 0..3: they are now the most recently used
		o, err := d.Get(t.Context(), key(i))
		if err != nil {
			t.Fatal(err)
		}
		o.Close()
	}
	for i := 8; i < 12; i++ {
		put(t, d, key(i), data, time.Time{})
	}
	d.Evict()
	if objects, size := d.Usage(); size > d.maxBytes.Load() || objects > 9 {
		t.Fatalf("after eviction: %d objects, %d bytes; limit %d", objects, size, d.maxBytes.Load())
	}
	has := func(i int) bool { _, ok := d.File(key(i)); return ok }
	for i := range 4 {
		if !has(i) {
			t.Errorf("recently read %s was evicted", key(i))
		}
	}
	if has(4) {
		t.Errorf("least recently read %s kept", key(4))
	}
	for i := 8; i < 12; i++ {
		if !has(i) {
			t.Errorf("newest %s was evicted", key(i))
		}
	}
}

// A disk object read by one request alone is sent with sendfile(2) from
// the file's offset (its reader is a syscall.Conn); what arrives, whole
// or by ranges, is the content, however reads and sends are mixed.
func TestDiskObjectServedFromItsFile(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{})
	data := testenv.Noise(3<<20 + 17)
	key := "example.com/big/@v/v1.0.0.zip"
	put(t, d, key, data, time.Time{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		obj, err := d.Get(r.Context(), key)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer obj.Close()
		if r.URL.Query().Has("clone") { // as every waiter of a fetch is served
			c := obj.Clone()
			defer c.Close()
			obj = c
		}
		rd := obj.Reader()
		if _, ok := rd.(syscall.Conn); !ok {
			http.Error(w, "the reader of a disk object is not a syscall.Conn", 500)
			return
		}
		if r.URL.Query().Has("mixed") { // read some, then let net/http send the rest
			buf := make([]byte, 1000)
			io.ReadFull(rd, buf)
			w.Write(buf)
			io.CopyN(w, rd, 2<<20)
			io.Copy(w, rd)
			return
		}
		if r.URL.Query().Has("chunked") {
			// As under Caddy: a writer that sends in chunks, each one a
			// LimitedReader of its own, below one that gives it the file.
			w = sendfileWriter{chunkingWriter{w}}
		}
		http.ServeContent(w, r, "", time.Time{}, rd)
	}))
	defer srv.Close()
	get := func(query, rng string) []byte {
		req, _ := http.NewRequest("GET", srv.URL+"/"+query, nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %v %.100s", query, rng, resp.StatusCode, err, body)
		}
		return body
	}
	if !bytes.Equal(get("", ""), data) {
		t.Error("whole content differs")
	}
	if !bytes.Equal(get("", "bytes=1000000-2000000"), data[1000000:2000001]) {
		t.Error("range differs")
	}
	if !bytes.Equal(get("?mixed", ""), data) {
		t.Error("content read partly, then sent, differs")
	}
	if !bytes.Equal(get("?chunked", ""), data) {
		t.Error("content sent in chunks differs")
	}
	if !bytes.Equal(get("?chunked", "bytes=5-70000"), data[5:70001]) {
		t.Error("a range sent in chunks differs")
	}
	if !bytes.Equal(get("?clone", "bytes=5-70000"), data[5:70001]) {
		t.Error("a range of a clone differs")
	}
	// A clone has a handle of its own: reading one does not move the
	// other. Once the name leads elsewhere (purged, evicted, replaced),
	// a clone shares the file and reads it with ReadAt only.
	obj, err := d.Get(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	c := obj.Clone()
	first := make([]byte, 1000)
	if _, err := io.ReadFull(obj.Reader(), first); err != nil || !bytes.Equal(first, data[:1000]) {
		t.Fatal("reading the object failed", err)
	}
	if got := readAll(t, c); !bytes.Equal(got, data) {
		t.Error("a clone read after the object differs")
	}
	c.Close()
	if err := d.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	c = obj.Clone()
	defer c.Close()
	if _, ok := c.Reader().(syscall.Conn); ok {
		t.Error("a clone of a removed file may move the shared file's offset")
	}
	if got := readAll(t, c); !bytes.Equal(got, data) {
		t.Error("a clone of a removed file differs")
	}
}

// chunkingWriter sends what its ReadFrom is given 64 KiB at a time, each
// chunk an io.LimitedReader, as Caddy's IdleTimeoutWriter does.
type chunkingWriter struct{ http.ResponseWriter }

func (c chunkingWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		n, err := c.ResponseWriter.(io.ReaderFrom).ReadFrom(io.LimitReader(r, 64<<10))
		total += n
		if err != nil || n < 64<<10 {
			return total, err
		}
	}
}

// sendfileWriter hands its writer the file itself (SendfileSource).
type sendfileWriter struct{ chunkingWriter }

func (s sendfileWriter) ReadFrom(r io.Reader) (int64, error) {
	return s.chunkingWriter.ReadFrom(SendfileSource(r))
}

// A small object is read in on a hit (one write for the response, headers
// and all); a larger one stays in its file, to be sent with sendfile(2).
func TestDiskSmallHitsReadIn(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{})
	small, large := testenv.Noise(smallRead), testenv.Noise(smallRead+1)
	put(t, d, "example.com/a/@v/v1.0.0.mod", small, time.Time{})
	put(t, d, "example.com/a/@v/v1.0.0.zip", large, time.Time{})
	for key, want := range map[string]struct {
		data     []byte
		inMemory bool
	}{"example.com/a/@v/v1.0.0.mod": {small, true}, "example.com/a/@v/v1.0.0.zip": {large, false}} {
		obj, err := d.Get(t.Context(), key)
		if err != nil {
			t.Fatal(err)
		}
		if _, inMemory := obj.Bytes(); inMemory != want.inMemory || obj.Tier != "disk" {
			t.Errorf("%s: in memory %v, tier %q; want %v, disk", key, inMemory, obj.Tier, want.inMemory)
		}
		if got := readAll(t, obj); !bytes.Equal(got, want.data) {
			t.Errorf("%s: content differs", key)
		}
		obj.Close()
	}
}

// A page of the disk tier's listing costs its own size: it reads that
// many lines of the holdings, which name the .info objects alone, so a
// page of 10 over a tier of 30 versions and 60 other objects holds 10
// versions. Objects removed since are skipped, and dropped from the
// holdings when the tier opens again; a bad token is refused.
func TestDiskListFromHoldings(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := openDisk(t, DiskConfig{Root: root})
	for i := range 30 {
		base := fmt.Sprintf("ns/example.com/m/@v/v1.0.%d", i)
		put(t, d, base+".info", []byte(`{"Version":"v1.0.0"}`), time.Time{})
		put(t, d, base+".mod", []byte("module example.com/m\n"), time.Time{})
		put(t, d, base+".zip", []byte("zip"), time.Time{})
	}
	put(t, d, "ns/example.com/m/@v/v1.0.0.info", []byte(`{"Version":"v1.0.0"}`), time.Time{}) // again
	list := func(d *DiskTier) (pages [][]string) {
		t.Helper()
		for after := ""; len(pages) < 100; {
			keys, next, err := d.List(t.Context(), after, 10)
			if err != nil {
				t.Fatal(err)
			}
			pages = append(pages, keys)
			if after = next; next == "" {
				return pages
			}
		}
		t.Fatal("listing did not end")
		return nil
	}
	pages := list(d)
	if len(pages) != 3 {
		t.Fatalf("%d pages of 10 for 30 versions; want 3", len(pages))
	}
	for i, p := range pages {
		if len(p) != 10 {
			t.Errorf("page %d holds %d keys; want 10", i, len(p))
		}
		for _, k := range p {
			if !strings.HasSuffix(k, ".info") {
				t.Errorf("listed %s", k)
			}
		}
	}
	for i := range 5 {
		if err := d.Delete(t.Context(), fmt.Sprintf("ns/example.com/m/@v/v1.0.%d.info", i)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for _, p := range list(d) {
		n += len(p)
	}
	if n != 25 {
		t.Errorf("listed %d after 5 deletions; want 25", n)
	}
	if _, _, err := d.List(t.Context(), "00/abc", 10); !errors.Is(err, ErrBadToken) {
		t.Errorf("a token the tier did not give: %v; want ErrBadToken", err)
	}
	d.Close()
	d = openDisk(t, DiskConfig{Root: root})
	<-d.Counted()
	data, err := os.ReadFile(d.holdingsPath())
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(data), "\n"); lines != 25 {
		t.Errorf("the holdings hold %d lines after reopening; want the 25 held", lines)
	}
}

// The memory tier's budget counts lengths: what it keeps holds no spare
// capacity that the budget would not see (an io.ReadAll's).
func TestMemoryTierKeepsNoSlack(t *testing.T) {
	t.Parallel()
	m, err := NewMemoryTier(1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	data := make([]byte, 1000, 64<<10)
	put(t, m, "example.com/s/@v/v1.0.0.mod", data, time.Time{})
	m.Wait()
	o, err := m.Get(t.Context(), "example.com/s/@v/v1.0.0.mod")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := o.Bytes(); len(b) != 1000 || cap(b) > 1000+1000/8 {
		t.Errorf("kept %d bytes with capacity %d; want no more than an eighth spare", len(b), cap(b))
	}
}
