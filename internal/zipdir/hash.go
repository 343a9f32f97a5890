package zipdir

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"slices"
)

// names holds a zip's file names, each less prefix (the first name's up
// to the slash after its '@', which every name of a module zip has) when
// it has it.
type names struct {
	prefix []byte
	arena  arena
}

// name is one of names: its bytes in the arena, less the prefix unless
// full.
type name struct {
	off  uint32
	n    uint16
	full bool
}

func (ns *names) add(b []byte) (name, error) {
	if ns.prefix == nil {
		ns.prefix = []byte{}
		if at := bytes.IndexByte(b, '@'); at >= 0 {
			if sl := bytes.IndexByte(b[at:], '/'); sl >= 0 {
				ns.prefix = bytes.Clone(b[:at+sl+1])
			}
		}
	}
	full := !bytes.HasPrefix(b, ns.prefix)
	if !full {
		b = b[len(ns.prefix):]
	}
	off, err := ns.arena.add(b)
	return name{off: off, n: uint16(len(b)), full: full}, err
}

// parts returns nm's bytes as the prefix (or nothing) and the rest.
func (ns *names) parts(nm name) (pre, rest []byte) {
	rest = ns.arena.get(nm.off, nm.n)
	if !nm.full {
		pre = ns.prefix
	}
	return pre, rest
}

// compare orders names as their whole bytes would.
func (ns *names) compare(a, b name) int {
	if !a.full && !b.full {
		return bytes.Compare(ns.arena.get(a.off, a.n), ns.arena.get(b.off, b.n))
	}
	a1, a2 := ns.parts(a)
	b1, b2 := ns.parts(b)
	return compare2(a1, a2, b1, b2)
}

// compare2 compares a1+a2 with b1+b2.
func compare2(a1, a2, b1, b2 []byte) int {
	for {
		if len(a1) == 0 {
			a1, a2 = a2, nil
		}
		if len(b1) == 0 {
			b1, b2 = b2, nil
		}
		if len(a1) == 0 || len(b1) == 0 {
			return len(a1) - len(b1)
		}
		k := min(len(a1), len(b1))
		if c := bytes.Compare(a1[:k], b1[:k]); c != 0 {
			return c
		}
		a1, b1 = a1[k:], b1[k:]
	}
}

// testHookWalked, when set, is called once the directory is walked,
// with what outlives the walk held.
var testHookWalked func()

// Hash1 is golang.org/x/mod/sumdb/dirhash.HashZip's h1: hash of the zip
// of size bytes in r: the SHA-256 of the lines "<SHA-256 of a file>  <its
// name>\n" of its files (directories too), sorted by name; a name given
// twice is hashed with its last file's content, each time.
func Hash1(r io.ReaderAt, size int64) (string, error) {
	a, err := Open(r, size)
	if err != nil {
		return "", err
	}
	if a.size-a.start > 1<<32-1 {
		return "", errors.New("zip: central directory too large")
	}
	type entry struct {
		name      name
		hdr, hlen uint32 // its header's offset after a.start, and length
	}
	var ns names
	// As many as the end record says, if the directory can hold them
	// (each header is at least headerLen bytes).
	entries := make([]entry, 0, min(a.records, uint64(a.size-a.start)/headerLen))
	err = a.Walk(func(h Header) error {
		nb := h.Name()
		if bytes.IndexByte(nb, '\n') >= 0 {
			return errors.New("dirhash: filenames with newlines are not supported")
		}
		nm, err := ns.add(nb)
		entries = append(entries, entry{name: nm, hdr: uint32(h.Off - a.start), hlen: uint32(len(h.Raw))})
		return err
	})
	if err != nil {
		return "", err
	}
	var dir []byte // the whole directory, when it is small
	if a.size-a.start <= dirInMemoryLE {
		dir = make([]byte, a.size-a.start)
		if _, err := a.r.ReadAt(dir, a.start); err != nil && err != io.EOF {
			return "", err
		}
	}
	if testHookWalked != nil {
		testHookWalked()
	}
	slices.SortStableFunc(entries, func(x, y entry) int { return ns.compare(x.name, y.name) })
	// A name given twice: the last file's content for each (as
	// dirhash.HashZip's map of names keeps the last).
	for i := len(entries) - 2; i >= 0; i-- {
		if ns.compare(entries[i].name, entries[i+1].name) == 0 {
			entries[i].hdr, entries[i].hlen = entries[i+1].hdr, entries[i+1].hlen
		}
	}
	sum := sha256.New()
	fh := sha256.New()
	buf := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(buf)
	var raw []byte
	b := &batch{a: a}
	for i := 0; i < len(entries); {
		j := i
		for ; j < len(entries) && !b.full(); j++ {
			e := entries[j]
			if dir != nil {
				raw = dir[e.hdr : e.hdr+e.hlen]
			} else {
				raw = slices.Grow(raw[:0], int(e.hlen))[:e.hlen]
				if _, err := a.r.ReadAt(raw, a.start+int64(e.hdr)); err != nil {
					return "", err
				}
			}
			b.add(raw)
		}
		files, err := b.files()
		if err != nil {
			return "", err
		}
		for k, f := range files {
			rc, err := f.Open()
			if err != nil {
				return "", err
			}
			fh.Reset()
			_, err = io.CopyBuffer(fh, struct{ io.Reader }{rc}, *buf)
			rc.Close()
			if err != nil {
				return "", err
			}
			pre, rest := ns.parts(entries[i+k].name)
			fmt.Fprintf(sum, "%x  %s%s\n", fh.Sum(nil), pre, rest)
		}
		i = j
	}
	return "h1:" + base64.StdEncoding.EncodeToString(sum.Sum(nil)), nil
}
