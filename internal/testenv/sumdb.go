package testenv

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
)

// SumDB is a real checksum database on loopback (x/mod's sumdb test server
// signing with a fresh note key) that knows the hashes of fixture modules.
type SumDB struct {
	URL  string
	Name string
	VKey string // verifier key, as GOSUMDB takes it

	tamperTiles atomic.Bool
	requests    atomic.Int64
	mu          sync.Mutex
	mods        map[string]Module // path@version
	zips        map[string]string // path@version -> zip file, for big zips
	paths       []string
	close       func()
}

// Close stops the database: connections are refused from now on.
func (s *SumDB) Close() { s.close() }

// NewSumDB starts a checksum database named name for mods.
func NewSumDB(t testing.TB, name string, mods ...Module) *SumDB {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s := &SumDB{Name: name, VKey: vkey, mods: map[string]Module{}, zips: map[string]string{}}
	for _, m := range mods {
		s.mods[m.Path+"@"+m.Version] = m
	}
	dir := t.TempDir()
	gosum := func(path, vers string) ([]byte, error) {
		s.mu.Lock()
		m, ok := s.mods[path+"@"+vers]
		zipFile := s.zips[path+"@"+vers]
		s.mu.Unlock()
		if !ok {
			return nil, &fs.PathError{Op: "lookup", Path: path + "@" + vers, Err: fs.ErrNotExist}
		}
		if zipFile != "" {
			return GoSumLinesOf(m, zipFile)
		}
		return GoSumLines(m, dir)
	}
	srv := sumdb.NewServer(sumdb.NewTestServer(skey, gosum))
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		s.paths = append(s.paths, r.URL.Path)
		s.mu.Unlock()
		if !strings.HasPrefix(r.URL.Path, "/tile/") || !s.tamperTiles.Load() {
			srv.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if len(body) > 0 {
			body[len(body)/2] ^= 0x01
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(h.Close)
	s.URL = h.URL
	s.close = h.Close
	return s
}

// Add makes the database know m. A module's hashes are fixed once the
// database has been asked for them.
func (s *SumDB) Add(m Module) {
	s.mu.Lock()
	s.mods[m.Path+"@"+m.Version] = m
	s.mu.Unlock()
}

// AddZip makes the database know m with its zip in zipFile.
func (s *SumDB) AddZip(m Module, zipFile string) {
	s.mu.Lock()
	s.mods[m.Path+"@"+m.Version] = m
	s.zips[m.Path+"@"+m.Version] = zipFile
	s.mu.Unlock()
}

// TamperTiles makes every tile answer carry one flipped bit.
func (s *SumDB) TamperTiles(on bool) { s.tamperTiles.Store(on) }

// Paths lists the paths the database was asked for.
func (s *SumDB) Paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...)
}

// Requests is how many requests the database got.
func (s *SumDB) Requests() int { return int(s.requests.Load()) }

// GoSumLines are the go.sum lines of m: its zip hash and go.mod hash.
func GoSumLines(m Module, tmp string) ([]byte, error) {
	zipFile := filepath.Join(tmp, strings.ReplaceAll(m.Path, "/", "_")+"@"+m.Version+".zip")
	var buf bytes.Buffer
	if err := m.WriteZip(&buf); err != nil {
		return nil, err
	}
	if err := os.WriteFile(zipFile, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return GoSumLinesOf(m, zipFile)
}

// GoSumLinesOf is GoSumLines for a zip already in zipFile.
func GoSumLinesOf(m Module, zipFile string) ([]byte, error) {
	zh, err := dirhash.HashZip(zipFile, dirhash.Hash1)
	if err != nil {
		return nil, err
	}
	mh, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(m.Mod())), nil
	})
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%s %s %s\n%s %s/go.mod %s\n", m.Path, m.Version, zh, m.Path, m.Version, mh), nil
}
