package cachetier

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// objectFiles counts the object files under a disk tier's fan-out.
func objectFiles(t *testing.T, d *DiskTier) int {
	t.Helper()
	n := 0
	for i := range fanOut {
		entries, err := os.ReadDir(filepath.Join(d.objects, fmt.Sprintf("%02x", i)))
		if err != nil {
			t.Fatal(err)
		}
		n += len(entries)
	}
	return n
}

// Small immutable objects (a module version's .info and .mod, checksum
// database records and tiles) go to the tier's one small store, not a
// file each: readable as soon as they are put, written behind, there
// after a restart, counted, and removed by Delete. Mutable ones and large
// ones stay files.
func TestDiskSmallObjectsInOneStore(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := openDisk(t, DiskConfig{Root: root})
	waitCounted(t, d)
	_, base := d.Usage()
	const n = 300
	key := func(i int) string { return fmt.Sprintf("ns/example.com/m%d/@v/v1.0.0.mod", i) }
	content := func(i int) []byte { return fmt.Appendf(nil, "module example.com/m%d\n", i) }
	for i := range n {
		put(t, d, key(i), content(i), time.Time{})
		// Readable at once, before the batch is written.
		o, err := d.Get(t.Context(), key(i))
		if err != nil || !bytes.Equal(readAll(t, o), content(i)) || o.Tier != "disk" {
			t.Fatalf("object %d just put: %v", i, err)
		}
	}
	tile := bytes.Repeat([]byte{7}, 8192)
	put(t, d, "sumdb/sum.golang.org/tile/8/0/x001/234", tile, time.Time{})
	put(t, d, "ns/example.com/m0/@v/list", []byte("v1.0.0\n"), time.Now().Add(time.Hour)) // mutable: a file
	big := bytes.Repeat([]byte{'z'}, smallMax+1)
	put(t, d, "ns/example.com/m0/@v/v1.0.0.zip", big, time.Time{}) // large: a file
	if got := objectFiles(t, d); got != 2 {
		t.Errorf("%d object files; want 2 (the list and the large object), the rest in the small store", got)
	}
	if err := d.Delete(t.Context(), key(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(t.Context(), key(1)); !errors.Is(err, ErrMiss) {
		t.Fatalf("deleted object served: %v", err)
	}
	d.small.sync()
	objects, used := d.Usage()
	if objects != n+2 {
		t.Errorf("%d objects; want %d", objects, n+2)
	}
	d.Close()

	d2 := openDisk(t, DiskConfig{Root: root}) // a new process
	waitCounted(t, d2)
	if o2, u2 := d2.Usage(); o2 != objects || u2 != used {
		t.Errorf("after a restart: %d objects, %d bytes; before: %d, %d", o2, u2, objects, used)
	}
	if used <= base {
		t.Errorf("usage %d does not count the small objects (empty: %d)", used, base)
	}
	for i := range n {
		o, err := d2.Get(t.Context(), key(i))
		if i == 1 {
			if !errors.Is(err, ErrMiss) {
				t.Errorf("deleted object back after a restart: %v", err)
			}
			continue
		}
		if err != nil || !bytes.Equal(readAll(t, o), content(i)) {
			t.Fatalf("object %d after a restart: %v", i, err)
		}
	}
	if o, err := d2.Get(t.Context(), "sumdb/sum.golang.org/tile/8/0/x001/234"); err != nil || !bytes.Equal(readAll(t, o), tile) {
		t.Fatalf("tile after a restart: %v", err)
	}
	if ok, _ := d2.Holds(t.Context(), key(0)); !ok {
		t.Error("Holds does not see the small store")
	}
}

// A damaged value in the small store, or one copied there from another
// key, is refused, removed and logged at error level, as a damaged file
// is.
func TestDiskSmallStoreDamage(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.ErrorLevel)
	d := openDisk(t, DiskConfig{Logger: zap.New(core)})
	key, other := "ns/example.com/a/@v/v1.0.0.mod", "ns/example.com/b/@v/v1.0.0.mod"
	put(t, d, key, []byte("module example.com/a\n"), time.Time{})
	put(t, d, other, []byte("module example.com/b\n"), time.Time{})
	d.small.sync()
	edit := func(f func(b *bolt.Bucket) error) {
		if err := d.small.db.Update(func(tx *bolt.Tx) error { return f(tx.Bucket(smallBucket)) }); err != nil {
			t.Fatal(err)
		}
	}
	edit(func(b *bolt.Bucket) error {
		v := bytes.Clone(b.Get([]byte(key)))
		v[len(v)-2] = 'B' // "module example.com/B": same size
		return b.Put([]byte(key), v)
	})
	if _, err := d.Get(t.Context(), key); !errors.Is(err, ErrMiss) {
		t.Fatalf("an edited value was served: %v", err)
	}
	if d.small.has(key) {
		t.Error("edited value kept")
	}
	put(t, d, key, []byte("module example.com/a\n"), time.Time{})
	d.small.sync()
	edit(func(b *bolt.Bucket) error { return b.Put([]byte(key), bytes.Clone(b.Get([]byte(other)))) })
	if _, err := d.Get(t.Context(), key); !errors.Is(err, ErrMiss) {
		t.Fatalf("another key's value was served: %v", err)
	}
	if n := logs.FilterMessageSnippet("corrupt cache object removed").Len(); n != 2 {
		t.Errorf("%d error logs for removed values; want 2", n)
	}
}

// A small-object database that is not one (damaged) is set aside with an
// error logged, and the tier opens with a new one.
func TestDiskSmallStoreDamagedFileSetAside(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, smallFile), bytes.Repeat([]byte("not bbolt "), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.ErrorLevel)
	d := openDisk(t, DiskConfig{Root: root, Logger: zap.New(core)})
	put(t, d, "ns/example.com/a/@v/v1.0.0.mod", []byte("module example.com/a\n"), time.Time{})
	if _, err := d.Get(t.Context(), "ns/example.com/a/@v/v1.0.0.mod"); err != nil {
		t.Fatal(err)
	}
	if logs.FilterMessageSnippet("small-object database is damaged").Len() != 1 {
		t.Errorf("no error logged for the damaged database: %v", logs.All())
	}
	aside, _ := filepath.Glob(filepath.Join(root, smallFile+".damaged-*"))
	if len(aside) != 1 {
		t.Errorf("damaged database not set aside: %v", aside)
	}
}

// Under a bound that the files alone cannot meet, eviction removes the
// oldest small objects too.
func TestDiskEvictsSmallObjects(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{MaxBytes: dirOverhead + 64<<10})
	waitCounted(t, d)
	data := bytes.Repeat([]byte("s"), 1000)
	for i := range 200 { // about 250 KiB of small objects
		put(t, d, fmt.Sprintf("ns/example.com/m%d/@v/v1.0.0.mod", i), data, time.Time{})
	}
	d.small.sync()
	d.Evict() // after the background's own passes, kicked by the puts
	if objects, used := d.Usage(); used > d.Bound() || objects >= 200 {
		t.Errorf("after eviction: %d objects, %d bytes; bound %d", objects, used, d.Bound())
	}
	if o, err := d.Get(t.Context(), "ns/example.com/m199/@v/v1.0.0.mod"); err != nil {
		t.Errorf("the newest small object was evicted: %v", err)
	} else {
		o.Close()
	}
}
