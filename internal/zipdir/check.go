package zipdir

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/mod/module"
	modzip "golang.org/x/mod/zip"
)

// maxFileErrors is how many of a zip's invalid files Check names.
const maxFileErrors = 10

// Check is golang.org/x/mod/zip.CheckZip's verdict on the zip of size
// bytes in r as module m's: nil for a zip CheckZip finds no fault in, or
// an error naming the faults (the size's first, as CheckedFiles.Err puts
// it; at most maxFileErrors files).
func Check(m module.Version, r io.ReaderAt, size int64) error {
	if vers := module.CanonicalVersion(m.Version); vers != m.Version {
		return fmt.Errorf("version %q is not canonical (should be %q)", m.Version, vers)
	}
	if err := module.Check(m.Path, m.Version); err != nil {
		return err
	}
	if size > modzip.MaxZipFile {
		return fmt.Errorf("module zip file is too large (%d bytes; limit is %d bytes)", size, modzip.MaxZipFile)
	}
	a, err := Open(r, size)
	if err != nil {
		return err
	}
	c := checker{prefix: m.Path + "@" + m.Version + "/"}
	b := &batch{a: a}
	flush := func() error {
		files, err := b.files() // archive/zip's own checks, ErrInsecurePath among them
		if err != nil {
			return err
		}
		for _, zf := range files {
			c.file(zf)
		}
		return nil
	}
	err = a.Walk(func(h Header) error {
		b.add(h.Raw)
		if b.full() {
			return flush()
		}
		return nil
	})
	if err == nil && b.n > 0 {
		err = flush()
	}
	if err != nil {
		return err
	}
	if testHookWalked != nil {
		testHookWalked()
	}
	c.collisions()
	if c.sizeErr != nil {
		return c.sizeErr
	}
	if len(c.invalid) > 0 {
		if c.more > 0 {
			c.invalid = append(c.invalid, modzip.FileError{Path: "…", Err: fmt.Errorf("and %d more", c.more)})
		}
		return modzip.FileErrorList(c.invalid)
	}
	return nil
}

// checker applies CheckZip's rules to a zip's files one at a time; the
// names of those valid so far are kept for the check of collisions, which
// needs them all.
type checker struct {
	prefix  string
	size    int64
	sizeErr error
	invalid []modzip.FileError
	more    int
	arena   arena
	paths   []pathRef // the valid files and directories, and their parents
	parent  []byte    // the last file's parent directory
}

// pathRef is a path in the arena, and whether it is a directory's.
type pathRef struct {
	off uint32
	n   uint16
	dir bool
}

func (c *checker) bad(p string, err error) {
	if len(c.invalid) < maxFileErrors {
		c.invalid = append(c.invalid, modzip.FileError{Path: p, Err: err})
	} else {
		c.more++
	}
}

// file is CheckZip's loop for one file, with the collision check left to
// collisions.
func (c *checker) file(zf *zip.File) {
	if !strings.HasPrefix(zf.Name, c.prefix) {
		c.bad(zf.Name, fmt.Errorf("path does not have prefix %q", c.prefix))
		return
	}
	name := zf.Name[len(c.prefix):]
	if name == "" {
		return
	}
	isDir := strings.HasSuffix(name, "/")
	if isDir {
		name = name[:len(name)-1]
	}
	if path.Clean(name) != name {
		c.bad(zf.Name, errors.New("file path is not clean"))
		return
	}
	if err := module.CheckFilePath(name); err != nil {
		c.bad(zf.Name, err)
		return
	}
	c.addPath(name, isDir)
	if isDir {
		return
	}
	if base := path.Base(name); strings.EqualFold(base, "go.mod") {
		if base != name {
			c.bad(zf.Name, errors.New("go.mod file not in module root directory"))
			return
		}
		if name != "go.mod" {
			c.bad(zf.Name, errors.New("go.mod files must have lowercase names"))
			return
		}
	}
	sz := int64(zf.UncompressedSize64)
	if sz >= 0 && modzip.MaxZipFile-c.size >= sz {
		c.size += sz
	} else if c.sizeErr == nil {
		c.sizeErr = fmt.Errorf("total uncompressed size of module contents too large (max size is %d bytes)", modzip.MaxZipFile)
	}
	if name == "go.mod" && sz > modzip.MaxGoMod {
		c.bad(zf.Name, fmt.Errorf("go.mod file too large (max size is %d bytes)", modzip.MaxGoMod))
		return
	}
	if name == "LICENSE" && sz > modzip.MaxLICENSE {
		c.bad(zf.Name, fmt.Errorf("LICENSE file too large (max size is %d bytes)", modzip.MaxLICENSE))
	}
}

// addPath keeps a valid path, and its parent directories unless the last
// path's parent was the same (then they are kept already).
func (c *checker) addPath(name string, isDir bool) {
	off, err := c.arena.add([]byte(name))
	if err != nil {
		c.bad(c.prefix+name, err)
		return
	}
	c.paths = append(c.paths, pathRef{off: off, n: uint16(len(name)), dir: isDir})
	parent := len(name) - len(path.Base(name)) - 1 // -1: no parent
	if parent < 0 || string(c.parent) == name[:parent] {
		return
	}
	c.parent = append(c.parent[:0], name[:parent]...)
	for i := 0; i < parent; i++ {
		if name[i] == '/' {
			c.paths = append(c.paths, pathRef{off: off, n: uint16(i), dir: true})
		}
	}
	c.paths = append(c.paths, pathRef{off: off, n: uint16(parent), dir: true})
}

func (c *checker) bytes(p pathRef) []byte { return c.arena.get(p.off, p.n) }

// collisions is CheckZip's collision check, on every path at once: paths
// equal once case-folded (strToFold's folding) must be one directory's,
// or one file's given once.
func (c *checker) collisions() {
	slices.SortFunc(c.paths, func(x, y pathRef) int {
		if f := foldCompare(c.bytes(x), c.bytes(y)); f != 0 {
			return f
		}
		return bytes.Compare(c.bytes(x), c.bytes(y))
	})
	for i := 0; i < len(c.paths); {
		first := c.paths[i]
		j := i + 1
		for ; j < len(c.paths) && foldCompare(c.bytes(first), c.bytes(c.paths[j])) == 0; j++ {
			p := c.paths[j]
			switch fp, pp := string(c.bytes(first)), string(c.bytes(p)); {
			case fp != pp:
				c.bad(c.prefix+pp, fmt.Errorf("case-insensitive file name collision: %q and %q", fp, pp))
			case p.dir != first.dir:
				c.bad(c.prefix+pp, fmt.Errorf("entry %q is both a file and a directory", pp))
			case !p.dir:
				c.bad(c.prefix+pp, fmt.Errorf("multiple entries for file %q", pp))
			}
		}
		i = j
	}
}

// foldCompare compares a and b as x/mod/zip's strToFold would have them:
// each rune its case-folding orbit's least, A-Z then as a-z.
func foldCompare(a, b []byte) int {
	for len(a) > 0 && len(b) > 0 {
		ra, na := rune(a[0]), 1
		if ra >= utf8.RuneSelf {
			ra, na = utf8.DecodeRune(a)
		}
		rb, nb := rune(b[0]), 1
		if rb >= utf8.RuneSelf {
			rb, nb = utf8.DecodeRune(b)
		}
		if ra, rb = fold(ra), fold(rb); ra != rb {
			return int(ra - rb)
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

func fold(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			r += 'a' - 'A'
		}
		return r
	}
	for {
		r0 := r
		if r = unicode.SimpleFold(r0); r <= r0 {
			break
		}
	}
	if 'A' <= r && r <= 'Z' {
		r += 'a' - 'A'
	}
	return r
}
