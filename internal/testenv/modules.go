// Package testenv holds the real parts that tests share: module fixtures
// built with x/mod/zip, a counting upstream GOPROXY on loopback, and the
// go command as a client. Every helper registers its own cleanup.
package testenv

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// Module is one version of a fixture module.
type Module struct {
	Path    string
	Version string
	Time    time.Time
	GoMod   string            // default: "module <Path>\n\ngo 1.21\n"
	Files   map[string]string // file name -> content, besides go.mod
}

// Info is the module's .info JSON.
func (m Module) Info() []byte {
	t := m.Time
	if t.IsZero() {
		t = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	return fmt.Appendf(nil, `{"Version":%q,"Time":%q}`, m.Version, t.UTC().Format(time.RFC3339))
}

// Mod is the module's go.mod.
func (m Module) Mod() []byte {
	if m.GoMod != "" {
		return []byte(m.GoMod)
	}
	return []byte("module " + m.Path + "\n\ngo 1.21\n")
}

type memFile struct {
	name string
	data []byte
}

func (f memFile) Path() string                { return f.name }
func (f memFile) Lstat() (os.FileInfo, error) { return memInfo{f}, nil }
func (f memFile) Open() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(f.data)), nil
}

type memInfo struct{ f memFile }

func (i memInfo) Name() string       { return filepath.Base(i.f.name) }
func (i memInfo) Size() int64        { return int64(len(i.f.data)) }
func (i memInfo) Mode() os.FileMode  { return 0o644 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// WriteZip writes the module zip, made by x/mod/zip, to w.
func (m Module) WriteZip(w io.Writer) error {
	files := []modzip.File{memFile{"go.mod", m.Mod()}}
	// In the order of their names, so that a module's zip is always the
	// same bytes.
	for _, name := range slices.Sorted(maps.Keys(m.Files)) {
		files = append(files, memFile{name, []byte(m.Files[name])})
	}
	return modzip.Create(w, module.Version{Path: m.Path, Version: m.Version}, files)
}

// Zip returns the module zip.
func (m Module) Zip(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := m.WriteZip(&buf); err != nil {
		t.Fatalf("building zip of %s@%s: %v", m.Path, m.Version, err)
	}
	return buf.Bytes()
}

// WriteBigZip writes to a file in dir a valid module zip whose content is
// about size bytes of incompressible data, and returns the file's path.
// It streams, so the test process never holds the zip in memory.
func WriteBigZip(t testing.TB, dir string, m Module, size int64) string {
	t.Helper()
	p := filepath.Join(dir, strings.ReplaceAll(m.Path, "/", "_")+"@"+m.Version+".zip")
	f, err := os.Create(p)
	if err == nil {
		err = WriteNoiseZip(f, m, size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("writing big zip: %v", err)
	}
	return p
}

// WriteNoiseZip writes a valid module zip for m holding its go.mod, its
// Files, and size bytes of incompressible data.
func WriteNoiseZip(w io.Writer, m Module, size int64) error {
	zw := zip.NewWriter(w)
	prefix := m.Path + "@" + m.Version + "/"
	fw, err := zw.CreateHeader(&zip.FileHeader{Name: prefix + "go.mod", Method: zip.Deflate})
	if err == nil {
		_, err = fw.Write(m.Mod())
	}
	for _, name := range slices.Sorted(maps.Keys(m.Files)) {
		if err == nil {
			fw, err = zw.CreateHeader(&zip.FileHeader{Name: prefix + name, Method: zip.Deflate})
		}
		if err == nil {
			_, err = io.WriteString(fw, m.Files[name])
		}
	}
	if err == nil {
		fw, err = zw.CreateHeader(&zip.FileHeader{Name: prefix + "data.bin", Method: zip.Store})
	}
	if err == nil {
		_, err = io.CopyN(fw, newNoise(), size)
	}
	if err == nil {
		err = zw.Close()
	}
	return err
}

// noise is a cheap deterministic incompressible byte stream (xorshift).
type noise struct{ s uint64 }

func newNoise() *noise { return &noise{s: 0x9e3779b97f4a7c15} }

func (n *noise) Read(p []byte) (int, error) {
	for i := range p {
		n.s ^= n.s << 13
		n.s ^= n.s >> 7
		n.s ^= n.s << 17
		p[i] = byte(n.s)
	}
	return len(p), nil
}

// Noise is size bytes that do not compress, as a zip's are.
func Noise(size int) []byte {
	b := make([]byte, size)
	newNoise().Read(b)
	return b
}
