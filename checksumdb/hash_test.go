package checksumdb

import (
	"archive/zip"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/dirhash"
)

// HashZipReader, which inflates with klauspost's decoder, gives the hash
// that x/mod's dirhash.HashZip (the standard library's decoder, as the
// go command uses) gives, on deflated files of every shape: empty, tiny,
// text, mixed text and noise beyond the 32 KiB window, stored.
func TestHashZipReaderMatchesDirhash(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i, files := range []int{1, 3, 40, 300} {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for f := range files {
			method := zip.Deflate
			if f%7 == 6 {
				method = zip.Store
			}
			w, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("example.com/m@v1.0.0/f%d.go", f), Method: method})
			if err != nil {
				t.Fatal(err)
			}
			size := rng.IntN(1 << uint(rng.IntN(18)+1)) // 0 up to 256 KiB
			data := make([]byte, size)
			for j := range data {
				if rng.IntN(8) == 0 {
					data[j] = byte(rng.Uint32()) // noise among text
				} else {
					data[j] = "package m // func main() {}\n"[j%28]
				}
			}
			w.Write(data)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "m.zip")
		if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		want, err := dirhash.HashZip(file, dirhash.Hash1)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second time with the pooled decoders reset
			got, err := HashZipReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
			if err != nil || got != want {
				t.Fatalf("zip %d (%d files): HashZipReader %s, %v; dirhash.HashZip %s", i, files, got, err, want)
			}
		}
	}
}

// manyFilesZip is a module zip of n deflated source-like files.
func manyFilesZip(b *testing.B, n int) []byte {
	rng := rand.New(rand.NewPCG(3, 4))
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for f := range n {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("example.com/m@v1.0.0/f%d.go", f), Method: zip.Deflate})
		if err != nil {
			b.Fatal(err)
		}
		data := make([]byte, 2<<10+rng.IntN(16<<10))
		for j := range data {
			data[j] = "package m // func main() {}\n"[(j+rng.IntN(3))%28]
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
	return buf.Bytes()
}

// The h1 hash of a zip of 500 source files: HashZipReader beside
// dirhash.HashZip (the standard decoder, a buffer per file), in one run.
func BenchmarkHashZip(b *testing.B) {
	data := manyFilesZip(b, 500)
	file := filepath.Join(b.TempDir(), "m.zip")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("HashZipReader", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := HashZipReader(bytes.NewReader(data), int64(len(data))); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("dirhash.HashZip", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := dirhash.HashZip(file, dirhash.Hash1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
