package zipdir

import (
	"archive/zip"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

var mv = module.Version{Path: "example.com/m", Version: "v1.0.0"}

const pre = "example.com/m@v1.0.0/"

// entry is a zip entry to write: a name and content, stored rather than
// deflated if store.
type entry struct {
	name, data string
	store      bool
}

func files(names ...string) []entry {
	var es []entry
	for _, n := range names {
		es = append(es, entry{name: n, data: "content of " + n + "\n"})
	}
	return es
}

// writeZip writes es (after lead bytes, which archive/zip reads past) and
// returns the bytes.
func writeZip(t testing.TB, lead string, es []entry) []byte {
	var buf bytes.Buffer
	buf.WriteString(lead)
	zw := zip.NewWriter(&buf)
	zw.SetOffset(int64(len(lead)))
	for _, e := range es {
		method := zip.Deflate
		if e.store || strings.HasSuffix(e.name, "/") {
			method = zip.Store
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(e.name, "/") {
			continue // no content
		}
		if _, err := w.Write([]byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// same fails unless Check and Hash1 agree with x/mod's CheckZip and
// dirhash.HashZip on data: the same verdict, the same hash or both an
// error.
func same(t *testing.T, what string, data []byte) (checked bool) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "m.zip")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cf, werr := modzip.CheckZip(mv, file)
	if werr == nil {
		werr = cf.Err()
	}
	gerr := Check(mv, bytes.NewReader(data), int64(len(data)))
	if (gerr == nil) != (werr == nil) {
		t.Errorf("%s: Check: %v; x/mod's CheckZip: %v", what, gerr, werr)
	}
	want, werr := dirhash.HashZip(file, dirhash.Hash1)
	got, gerr := Hash1(bytes.NewReader(data), int64(len(data)))
	if got != want || (gerr == nil) != (werr == nil) {
		t.Errorf("%s: Hash1: %q, %v; dirhash.HashZip: %q, %v", what, got, gerr, want, werr)
	}
	return gerr == nil
}

// Check and Hash1 give x/mod's verdicts and hashes on zips of every
// fault CheckZip knows, and on good ones in any order, with data before
// the archive, stored and deflated.
func TestSameAsXMod(t *testing.T) {
	t.Parallel()
	cases := map[string][]entry{
		"good":                   files(pre+"go.mod", pre+"b/c.go", pre+"a.go", pre+"a/b.go", pre+"LICENSE"),
		"good, with directories": files(pre, pre+"a/", pre+"a/b.go", pre+"a/", pre+"c/d/"),
		"no prefix":              files(pre+"a.go", "example.com/other@v1.0.0/b.go"),
		"not clean":              files(pre + "a/../b.go"),
		"bad file path":          files(pre + "a:b.go"),
		"case collision":         files(pre+"a/B.go", pre+"a/b.go"),
		"directory case":         files(pre+"A/x.go", pre+"b.go", pre+"a/y.go"),
		"file and directory":     files(pre+"x", pre+"x/y.go"),
		"directory and file":     files(pre+"x/", pre+"x"),
		"file twice":             files(pre+"a.go", pre+"b.go", pre+"a.go"),
		"nested go.mod":          files(pre+"go.mod", pre+"sub/go.mod"),
		"GO.MOD":                 files(pre + "GO.MOD"),
		"insecure path":          files(pre+"a.go", "../x.go"),
		"newline":                files(pre + "a\nb.go"),
		"empty":                  nil,
		"unicode fold":           files(pre+"\u212a.go", pre+"k.go"),
		"unicode, distinct":      files(pre+"é.go", pre+"e.go", pre+"É/x.go"),
	}
	for what, es := range cases {
		same(t, what, writeZip(t, "", es))
		same(t, what+", after a lead", writeZip(t, strings.Repeat("x", 100), es))
	}
	big := files(pre+"go.mod", pre+"LICENSE")
	big[1].data = strings.Repeat("L", modzip.MaxLICENSE+1)
	same(t, "LICENSE too large", writeZip(t, "", big))
	stored := files(pre+"a.go", pre+"b.go")
	stored[0].store = true
	if !same(t, "stored", writeZip(t, "", stored)) {
		t.Error("a zip with a stored file does not hash")
	}

	// A file whose bytes were changed after it was written (its CRC-32
	// no longer matches): no hash.
	data := writeZip(t, "", []entry{{name: pre + "a.go", data: "package a\n", store: true}})
	data = bytes.Replace(data, []byte("package a"), []byte("package b"), 1)
	same(t, "corrupt file", data)
	// Truncated: no directory.
	same(t, "truncated", data[:len(data)/2])
}

// A zip of many files in an order not their names' (as the go command
// writes them, a directory's files before its subdirectories'), some
// names given twice, matches too, with the directory read whole and with
// each header read where it is.
func TestManyFilesUnsorted(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(5, 6))
	var es []entry
	for i := range 3000 {
		name := fmt.Sprintf("%sd%d/f%d.go", pre, rng.IntN(50), i)
		if i%3 == 0 {
			name = fmt.Sprintf("%sd%d-x/f%d.go", pre, rng.IntN(50), i)
		}
		es = append(es, entry{name: name, data: strings.Repeat("package x\n", rng.IntN(100)), store: i%5 == 0})
	}
	rng.Shuffle(len(es), func(i, j int) { es[i], es[j] = es[j], es[i] })
	data := writeZip(t, "", es)
	if !same(t, "3,000 files", data) {
		t.Fatal("no hash")
	}
	dup := append(es[:len(es):len(es)], entry{name: pre, data: ""}, entry{name: pre + "d1/", data: ""}, entry{name: pre + "d1/", data: ""})
	same(t, "directories given twice", writeZip(t, "", dup))
}

// A zip64 archive (more than 65,535 files, so its counts are in the zip64
// end record) with a directory larger than is read whole: the same hash
// and verdict as x/mod's.
func TestZip64ManyFiles(t *testing.T) {
	t.Parallel()
	var es []entry
	for i := range 70000 {
		es = append(es, entry{name: fmt.Sprintf("%sp%d/f%d.go", pre, i%700, i), data: "x", store: true})
	}
	data := writeZip(t, "lead", es)
	if !same(t, "70,000 files", data) {
		t.Fatal("no hash")
	}
	a, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if a.records != 70000 || a.size-a.start <= dirInMemoryLE {
		t.Fatalf("records %d, directory %d bytes: not a zip64 archive with a directory read in place", a.records, a.size-a.start)
	}
}

// The memory Check and Hash1 hold for a zip of many files, once its
// directory is walked, is the files' names and a few bytes each: under a
// third of what archive/zip holds for the same zip (its headers), which
// on the largest real module zips is several times the mirror's budget.
func TestMemoryPerFile(t *testing.T) {
	data := func() []byte { // what it is written from gone after
		var es []entry
		for i := range 20000 {
			es = append(es, entry{name: fmt.Sprintf("%sservices/network/2024-01-01/virtualnetworks/model_%d.go", pre, i), data: "x", store: true})
		}
		return writeZip(t, "", es)
	}()
	r := bytes.NewReader(data)
	heap := func() int64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC() // and the pools' victims
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	whole := func() int64 {
		before := heap()
		z, err := zip.NewReader(r, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		held := heap() - before
		runtime.KeepAlive(z)
		return held
	}()
	var held, before int64
	testHookWalked = func() { held = heap() - before }
	defer func() { testHookWalked = nil }()
	before = heap()
	if _, err := Hash1(r, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	hashHeld := held
	before = heap()
	if err := Check(mv, r, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	runtime.KeepAlive(data) // the zip, in memory here, stays in the figures
	t.Logf("20,000 files: archive/zip holds %d KiB, Hash1 %d KiB, Check %d KiB", whole>>10, hashHeld>>10, held>>10)
	if hashHeld <= 0 || held <= 0 || hashHeld*3 > whole || held*3 > whole {
		t.Errorf("archive/zip holds %d bytes for the zip, Hash1 %d, Check %d: want under a third", whole, hashHeld, held)
	}
}
