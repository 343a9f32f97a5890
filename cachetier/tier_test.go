package cachetier

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func metaOf(data []byte, expires time.Time) Meta {
	return Meta{Size: int64(len(data)), Sum: sha256.Sum256(data), Stored: time.Now(), Expires: expires}
}

func readAll(t *testing.T, o *Object) []byte {
	t.Helper()
	b, err := io.ReadAll(o.Reader())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDiskRoundTripAndRestart(t *testing.T) {
	root := t.TempDir()
	d, err := NewDiskTier(root)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("module example.com/a\n")
	exp := time.Now().Add(time.Hour).Truncate(time.Nanosecond)
	if err := d.Put(t.Context(), "example.com/a/@v/list", metaOf(data, exp), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	d2, err := NewDiskTier(root) // a new process: nothing remembered
	if err != nil {
		t.Fatal(err)
	}
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
}

func TestDiskPutShortReaderLeavesNothing(t *testing.T) {
	root := t.TempDir()
	d, _ := NewDiskTier(root)
	data := []byte("0123456789")
	err := d.Put(t.Context(), "example.com/a/@v/v1.0.0.mod", metaOf(data, time.Time{}), bytes.NewReader(data[:5]))
	if err == nil {
		t.Fatal("short body stored")
	}
	if _, err := d.Get(t.Context(), "example.com/a/@v/v1.0.0.mod"); !errors.Is(err, ErrMiss) {
		t.Fatalf("partial object visible: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "tmp")); len(entries) != 0 {
		t.Fatalf("temp files left: %v", entries)
	}
}

func TestDiskRefusesEscapingKeys(t *testing.T) {
	root := t.TempDir()
	d, _ := NewDiskTier(filepath.Join(root, "cache"))
	data := []byte("x")
	for _, key := range []string{"", "../x", "a/../../x", "/etc/passwd", "a//b", "a/./b", "a/b/"} {
		if err := d.Put(t.Context(), key, metaOf(data, time.Time{}), bytes.NewReader(data)); err == nil {
			t.Errorf("Put(%q) accepted", key)
		}
		if _, err := d.Get(t.Context(), key); err == nil || errors.Is(err, ErrMiss) {
			t.Errorf("Get(%q) = %v; want a refusal", key, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "x")); !os.IsNotExist(err) {
		t.Error("file written outside the root")
	}
}

func TestDiskDetectsDamage(t *testing.T) {
	root := t.TempDir()
	d, _ := NewDiskTier(root)
	var reported []string
	d.OnCorrupt = func(key string, err error) { reported = append(reported, key) }
	data := bytes.Repeat([]byte("z"), 1000)
	key := "example.com/a/@v/v1.0.0.zip"
	if err := d.Put(t.Context(), key, metaOf(data, time.Time{}), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(root, "v1", key)
	raw, _ := os.ReadFile(file)
	raw[len(raw)-1] = 'y'
	os.WriteFile(file, raw, 0o644)
	// Even within the process that wrote it: the rewrite changed mtime/size.
	os.Chtimes(file, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	if _, err := d.Get(t.Context(), key); !errors.Is(err, ErrMiss) {
		t.Fatalf("damaged file served: %v", err)
	}
	if len(reported) != 1 || reported[0] != key {
		t.Fatalf("OnCorrupt calls %v", reported)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatal("damaged file kept")
	}
}

func TestMemoryTierLimitsAndTTL(t *testing.T) {
	m, err := NewMemoryTier(1<<20, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	small, big := []byte("small"), []byte(strings.Repeat("b", 101))
	m.PutBytes("s", metaOf(small, time.Time{}), small)
	m.PutBytes("b", metaOf(big, time.Time{}), big)
	m.PutBytes("expired", metaOf(small, time.Now().Add(-time.Second)), small)
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
	d, _ := NewDiskTier(t.TempDir())
	m, _ := NewMemoryTier(1<<20, 1<<10)
	tiers := NewTiered(d, m)
	defer tiers.Close()
	data := []byte("v1.0.0\n")
	key := "example.com/a/@v/v1.0.0.info"
	if err := d.Put(t.Context(), key, metaOf(data, time.Time{}), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	o, err := tiers.Get(t.Context(), key)
	if err != nil || o.Tier != "disk" {
		t.Fatalf("first get: %v from %v", err, o)
	}
	o.Close()
	m.Wait()
	o, err = tiers.Get(t.Context(), key)
	if err != nil || o.Tier != "memory" || !bytes.Equal(readAll(t, o), data) {
		t.Fatalf("second get: %v, tier %s", err, o.Tier)
	}
}

func TestDiskEvictsLeastRecentlyRead(t *testing.T) {
	d, _ := NewDiskTier(t.TempDir())
	data := bytes.Repeat([]byte("x"), 1024)
	per := int64(len(data) + headerSize)
	d.MaxBytes = 10 * per
	key := func(i int) string { return "example.com/m/@v/v1.0." + strconv.Itoa(i) + ".zip" }
	put := func(i int) {
		if err := d.Put(t.Context(), key(i), metaOf(data, time.Time{}), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 {
		put(i)
	}
	for i := range 4 { // read 0..3: they are now the most recently used
		o, err := d.Get(t.Context(), key(i))
		if err != nil {
			t.Fatal(err)
		}
		o.Close()
	}
	for i := 8; i < 12; i++ {
		put(i)
	}
	d.Evict()
	for i := 0; i < 1000 && d.evicting.Load(); i++ { // a background eviction may still be finishing
		time.Sleep(time.Millisecond)
	}
	if objects, size := d.Usage(); size > d.MaxBytes || objects > 10 {
		t.Fatalf("after eviction: %d objects, %d bytes; limit %d", objects, size, d.MaxBytes)
	}
	has := func(i int) bool {
		o, err := d.Get(t.Context(), key(i))
		o.Close()
		return err == nil
	}
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
