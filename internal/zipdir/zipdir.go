// Package zipdir checks and hashes a module zip read in place, a part of
// its central directory at a time. archive/zip holds every file's header
// at once, about 500 bytes a file: 67 MB for the largest module zips of
// the real ecosystem (135,561 files in one of github.com/hashicorp/
// go-azure-sdk/resource-manager), several times the mirror's memory
// budget. Here the directory's headers are walked in order, and handed to
// archive/zip a batch at a time in a small archive of their own: a view of
// the zip's bytes (where each header points to its file) followed by
// those headers and an end record. archive/zip parses each header (zip64
// fields and all) and reads each file as it would in the whole archive;
// what is kept of a file between batches is its name (less the prefix all
// names share) and where its header is: about 80 bytes a file on that
// zip.
//
// Check applies golang.org/x/mod/zip.CheckZip's rules and Hash1 computes
// golang.org/x/mod/sumdb/dirhash.HashZip's h1: hash; the tests hold them
// to those functions on generated and real zips.
package zipdir

import (
	"archive/zip"
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"sync"

	kflate "github.com/klauspost/compress/flate"
)

const (
	headerLen     = 46 // a central directory header's fixed part
	endLen        = 22 // the end of central directory record
	loc64Len      = 20 // the zip64 end of central directory locator
	end64Len      = 56 // the zip64 end of central directory record
	headerSig     = 0x02014b50
	endSig        = 0x06054b50
	loc64Sig      = 0x07064b50
	end64Sig      = 0x06064b50
	batchFiles    = 1024    // headers handed to archive/zip at once
	batchBytes    = 1 << 20 // and at most this many bytes of them
	dirInMemoryLE = 1 << 20 // a directory this small is read whole
)

// Archive is a zip whose central directory has been found.
type Archive struct {
	r    io.ReaderAt
	size int64
	// start is where the headers start in r, base the offset of the
	// archive's first byte in r (data before it, as archive/zip allows),
	// records the end record's count of headers.
	start, base int64
	records     uint64
}

// Open finds the central directory of the zip of size bytes in r, as
// archive/zip.NewReader does (its readDirectoryEnd, zip64 and a
// mislabelled base offset alike).
func Open(r io.ReaderAt, size int64) (*Archive, error) {
	var buf []byte
	var endOff int64
	for i, n := range []int64{1024, 65 * 1024} {
		n = min(n, size)
		buf = make([]byte, n)
		if _, err := r.ReadAt(buf, size-n); err != nil && err != io.EOF {
			return nil, err
		}
		if p := findEnd(buf); p >= 0 {
			buf, endOff = buf[p:], size-n+int64(p)
			break
		}
		if i == 1 || n == size {
			return nil, zip.ErrFormat
		}
	}
	le := binary.LittleEndian
	records, dirSize, dirOff := uint64(le.Uint16(buf[10:])), uint64(le.Uint32(buf[12:])), uint64(le.Uint32(buf[16:]))
	if records == 0xffff || dirSize == 0xffff || dirOff == 0xffffffff {
		if p, ok, err := findEnd64(r, endOff); err != nil {
			return nil, err
		} else if ok {
			b := make([]byte, end64Len)
			if _, err := r.ReadAt(b, p); err != nil {
				return nil, err
			}
			if le.Uint32(b) != end64Sig {
				return nil, zip.ErrFormat
			}
			endOff = p
			records, dirSize, dirOff = le.Uint64(b[32:]), le.Uint64(b[40:]), le.Uint64(b[48:])
		}
	}
	if dirSize > 1<<63-1 || dirOff > 1<<63-1 {
		return nil, zip.ErrFormat
	}
	base := endOff - int64(dirSize) - int64(dirOff)
	if o := base + int64(dirOff); o < 0 || o >= size {
		return nil, zip.ErrFormat
	}
	if base > 0 {
		// A header where the directory would be with no data before
		// the archive: archive/zip takes the offsets as they are.
		var h [headerLen]byte
		if n, _ := r.ReadAt(h[:], int64(dirOff)); n == headerLen && le.Uint32(h[:]) == headerSig {
			nameEtc := int64(le.Uint16(h[28:])) + int64(le.Uint16(h[30:])) + int64(le.Uint16(h[32:]))
			if int64(dirOff)+headerLen+nameEtc <= size {
				base = 0
			}
		}
	}
	return &Archive{r: r, size: size, start: base + int64(dirOff), base: base, records: records}, nil
}

// findEnd is archive/zip's findSignatureInBlock: the last end record in b
// whose comment fits.
func findEnd(b []byte) int {
	for i := len(b) - endLen; i >= 0; i-- {
		if binary.LittleEndian.Uint32(b[i:]) == endSig {
			if n := int(binary.LittleEndian.Uint16(b[i+endLen-2:])); n+endLen+i > len(b) {
				return -1
			}
			return i
		}
	}
	return -1
}

// findEnd64 reads the zip64 locator before the end record at endOff.
func findEnd64(r io.ReaderAt, endOff int64) (int64, bool, error) {
	off := endOff - loc64Len
	if off < 0 {
		return 0, false, nil
	}
	b := make([]byte, loc64Len)
	if _, err := r.ReadAt(b, off); err != nil {
		return 0, false, err
	}
	le := binary.LittleEndian
	if le.Uint32(b) != loc64Sig || le.Uint32(b[4:]) != 0 || le.Uint32(b[16:]) != 1 {
		return 0, false, nil
	}
	return int64(le.Uint64(b[8:])), true, nil
}

// A Header is one central directory header: its bytes (valid during the
// walk's call only) at Off in the zip.
type Header struct {
	Raw []byte
	Off int64
}

// Name is the file name the header gives.
func (h Header) Name() []byte {
	return h.Raw[headerLen : headerLen+int(binary.LittleEndian.Uint16(h.Raw[28:]))]
}

// Walk calls fn with each header of the directory, in order. As
// archive/zip does, it reads headers until one does not start as a header
// should, and fails when their count is not the end record's (modulo
// 65,536, a classic count's width).
func (a *Archive) Walk(fn func(Header) error) error {
	br := bufio.NewReaderSize(io.NewSectionReader(a.r, a.start, a.size-a.start), 64<<10)
	raw := make([]byte, 0, 512)
	off := a.start
	var n uint64
	var stop error
	for {
		raw = raw[:headerLen]
		if _, err := io.ReadFull(br, raw); err != nil {
			stop = err
			break
		}
		le := binary.LittleEndian
		if le.Uint32(raw) != headerSig {
			stop = zip.ErrFormat
			break
		}
		rest := int(le.Uint16(raw[28:])) + int(le.Uint16(raw[30:])) + int(le.Uint16(raw[32:]))
		raw = append(raw, make([]byte, rest)...)
		if _, err := io.ReadFull(br, raw[headerLen:]); err != nil {
			stop = err
			break
		}
		if err := fn(Header{Raw: raw, Off: off}); err != nil {
			return err
		}
		off += int64(len(raw))
		n++
	}
	if stop == io.EOF {
		return io.ErrUnexpectedEOF // no end record after the headers
	}
	if stop != zip.ErrFormat && stop != io.ErrUnexpectedEOF {
		return stop
	}
	if uint16(n) != uint16(a.records) {
		return stop
	}
	return nil
}

// batch is headers gathered for archive/zip to read together.
type batch struct {
	a   *Archive
	dir []byte // the headers, in order
	n   int
}

func (b *batch) add(raw []byte) {
	b.dir = append(b.dir, raw...)
	b.n++
}

func (b *batch) full() bool { return b.n >= batchFiles || len(b.dir) >= batchBytes }

// files returns archive/zip's reading of the batch's headers, with files
// opened through a pooled klauspost inflater, and resets the batch.
func (b *batch) files() ([]*zip.File, error) {
	v := &view{r: b.a.r, start: b.a.start, dir: b.dir}
	le := binary.LittleEndian
	v.end = make([]byte, endLen)
	le.PutUint32(v.end, endSig)
	le.PutUint16(v.end[8:], uint16(b.n))
	le.PutUint16(v.end[10:], uint16(b.n))
	le.PutUint32(v.end[12:], uint32(len(b.dir)))
	le.PutUint32(v.end[16:], uint32(b.a.start-b.a.base))
	z, err := zip.NewReader(v, b.a.start+int64(len(b.dir))+endLen)
	n := b.n
	// Not reused: the files read through v, which holds these bytes.
	b.dir, b.n = make([]byte, 0, len(b.dir)), 0
	if err != nil {
		return nil, err
	}
	if len(z.File) != n {
		return nil, zip.ErrFormat
	}
	z.RegisterDecompressor(zip.Deflate, inflate)
	return z.File, nil
}

// view is a zip's bytes up to its central directory, then dir (some of
// its headers) and end, an end record for them.
type view struct {
	r        io.ReaderAt
	start    int64
	dir, end []byte
}

func (v *view) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for len(p) > 0 {
		switch {
		case off < 0:
			return n, errors.New("zipdir: negative offset")
		case off < v.start:
			k := int(min(int64(len(p)), v.start-off))
			m, err := v.r.ReadAt(p[:k], off)
			n += m
			if m < k {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			p, off = p[k:], off+int64(k)
		case off < v.start+int64(len(v.dir))+endLen:
			i := off - v.start
			var m int
			if i < int64(len(v.dir)) {
				m = copy(p, v.dir[i:])
			} else {
				m = copy(p, v.end[i-int64(len(v.dir)):])
			}
			n += m
			p, off = p[m:], off+int64(m)
		default:
			return n, io.EOF
		}
	}
	return n, nil
}

// inflaters are klauspost flate decoders that a zip file's reader closed,
// to be reset for the next one (each holds a 32 KiB window and tables);
// byteReaders the buffered readers they read from (without one the
// decoder makes its own, for every file). klauspost's decoder inflates in
// about seven eighths of the standard library's time, with the same
// output.
var inflaters, byteReaders sync.Pool

// inflate is a zip.Decompressor of klauspost's flate decoder, pooled.
func inflate(r io.Reader) io.ReadCloser {
	br, ok := byteReaders.Get().(*bufio.Reader)
	if ok {
		br.Reset(r)
	} else {
		br = bufio.NewReaderSize(r, 16<<10)
	}
	if fr, ok := inflaters.Get().(io.ReadCloser); ok {
		if fr.(kflate.Resetter).Reset(br, nil) == nil {
			return &pooledInflater{fr: fr, br: br}
		}
	}
	return &pooledInflater{fr: kflate.NewReader(br), br: br}
}

type pooledInflater struct {
	fr io.ReadCloser
	br *bufio.Reader
}

func (p *pooledInflater) Read(b []byte) (int, error) {
	if p.fr == nil {
		return 0, errors.New("read of a closed inflater")
	}
	return p.fr.Read(b)
}

func (p *pooledInflater) Close() error {
	if p.fr == nil {
		return nil
	}
	err := p.fr.Close()
	inflaters.Put(p.fr)
	p.br.Reset(nil)
	byteReaders.Put(p.br)
	p.fr, p.br = nil, nil
	return err
}

// copyBuffers are the buffers files are hashed through.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// arenaChunk is the size of an arena's chunks (a name, at most 65,535
// bytes, is never split between two).
const arenaChunk = 1 << 18

// arena holds a zip's names in chunks, so that what grows with them is
// at most a chunk's room, not a doubling slice's.
type arena struct{ chunks [][]byte }

// add copies b in and returns its address.
func (a *arena) add(b []byte) (uint32, error) {
	if n := len(a.chunks); n == 0 || len(a.chunks[n-1])+len(b) > arenaChunk {
		if n >= 1<<32/arenaChunk {
			return 0, errors.New("zip: file names too long in all")
		}
		a.chunks = append(a.chunks, make([]byte, 0, arenaChunk))
	}
	last := &a.chunks[len(a.chunks)-1]
	addr := uint32(len(a.chunks)-1)*arenaChunk + uint32(len(*last))
	*last = append(*last, b...)
	return addr, nil
}

// get returns the n bytes at addr.
func (a *arena) get(addr uint32, n uint16) []byte {
	c, i := addr/arenaChunk, addr%arenaChunk
	return a.chunks[c][i : i+uint32(n)]
}
