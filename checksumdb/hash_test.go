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
