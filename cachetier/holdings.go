package cachetier

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// The holdings of a disk tier are the index the catalog pages through: the
// keys of the module versions it holds (their .info objects), one a line,
// appended as each is stored. A page of the catalog reads its own lines and
// looks each object up by name (one stat, no open), instead of opening
// files to read the keys in their headers; objects removed since (evicted,
// purged) are skipped. The file is rewritten without them when the tier
// opens (a key stored again after a purge may be listed twice); a tier of
// an earlier version, which had no holdings, is indexed once from its
// headers in the background.

// ErrBadToken is a List token that the tier did not give.
var ErrBadToken = errors.New("not a token of this listing")

func (d *DiskTier) holdingsPath() string { return d.objects + "-holdings" }

// isHolding reports whether an object of key is one the holdings list: a
// version's .info.
func isHolding(key string, meta Meta) bool {
	return meta.Expires.IsZero() && strings.HasSuffix(key, ".info") && !strings.ContainsAny(key, "\n\r")
}

// openHoldings notes how the holdings stand: a fresh tier's are complete
// from the start (the file and its mark are made with the first entry, so
// a tier that stored nothing leaves no file); an earlier version's tier
// is indexed by the background work (indexHoldings).
func (d *DiskTier) openHoldings(fresh bool) {
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	d.holdingsFresh = fresh
	if !fresh && !d.holdingsComplete() {
		d.indexing = map[string]bool{}
	}
}

func (d *DiskTier) markHoldingsComplete() {
	if err := os.WriteFile(d.holdingsPath()+".complete", nil, 0o644); err != nil {
		d.log.Warn("disk tier: marking the catalog's index complete failed", zap.Error(err))
	}
}

// addHolding appends the key of an object just stored to the holdings.
// While an earlier version's tier is indexed, the key is remembered, so
// that the walk does not add it again.
func (d *DiskTier) addHolding(key string) {
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	if d.indexing != nil {
		if d.indexing[key] {
			return
		}
		d.indexing[key] = true
	}
	d.appendHolding(key)
}

// addIndexed appends a key the indexing walk found, unless it was stored
// (and added) since the walk began. Only those keys are remembered, so
// the walk of a large cache holds no set of all its keys.
func (d *DiskTier) addIndexed(key string) {
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	if d.indexing[key] {
		return
	}
	d.appendHolding(key)
}

// appendHolding writes key as a line of the holdings. Under holdMu.
func (d *DiskTier) appendHolding(key string) {
	if d.holdingsFresh {
		d.markHoldingsComplete()
		d.holdingsFresh = false
	}
	// Opened for each entry: no file stays open for writing (which would
	// keep its file system from being remounted read-only).
	f, err := os.OpenFile(d.holdingsPath(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		_, err = f.WriteString(key + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		d.log.Warn("disk tier: adding to the catalog's index failed", zap.String("key", Truncate(key)), zap.Error(err))
	}
}

func (d *DiskTier) holdingsComplete() bool {
	_, err := os.Stat(d.holdingsPath() + ".complete")
	return err == nil
}

// holds reports whether an immutable object of key is on disk.
func (d *DiskTier) holds(key string) bool {
	imm, _, err := d.paths(key)
	if err != nil {
		return false
	}
	if d.small.has(key) {
		return true
	}
	fi, err := os.Lstat(imm)
	return err == nil && fi.Mode().IsRegular()
}

// readHolding reads one line of the holdings; ok is false at the end, or
// at a line not yet whole (being appended, or cut by a crash).
func readHolding(r *bufio.Reader) (key string, n int, ok bool) {
	line, err := r.ReadSlice('\n')
	n = len(line)
	if errors.Is(err, bufio.ErrBufferFull) {
		// Longer than any key: skipped whole.
		for errors.Is(err, bufio.ErrBufferFull) {
			line, err = r.ReadSlice('\n')
			n += len(line)
		}
		return "", n, err == nil
	}
	if err != nil {
		return "", 0, false
	}
	return string(line[:len(line)-1]), n, true
}

// List lists the keys of the .info objects the tier holds from its
// holdings; a token is an offset in them.
func (d *DiskTier) List(_ context.Context, after string, limit int) ([]string, string, error) {
	var off int64
	if after != "" {
		var err error
		if off, err = strconv.ParseInt(after, 10, 64); err != nil || off < 0 {
			return nil, "", ErrBadToken
		}
	}
	f, err := os.Open(d.holdingsPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("disk tier: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || off > fi.Size() {
		return nil, "", ErrBadToken
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, "", fmt.Errorf("disk tier: %w", err)
	}
	r := bufio.NewReaderSize(f, maxKeyLen+1)
	var keys []string
	for range limit {
		key, n, ok := readHolding(r)
		if !ok {
			return keys, "", nil
		}
		off += int64(n)
		if key != "" && d.holds(key) {
			keys = append(keys, key)
		}
	}
	if _, err := r.Peek(1); err != nil {
		return keys, "", nil // nothing after this page
	}
	return keys, strconv.FormatInt(off, 10), nil
}

// indexHoldings writes the holdings of a tier that has none (an earlier
// version's) from the headers of its files, once; objects stored
// meanwhile add themselves.
func (d *DiskTier) indexHoldings() {
	d.log.Info("disk tier: indexing what the tier holds for the catalog, once")
	for i := range fanOut {
		select {
		case <-d.stop:
			return
		default:
		}
		dir := filepath.Join(d.objects, fmt.Sprintf("%02x", i))
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), "-m") {
				continue // never opened: a FIFO would block, a device worse
			}
			if key, ok := readKey(filepath.Join(dir, e.Name())); ok && isHolding(key, Meta{}) {
				d.addIndexed(key)
			}
		}
	}
	for _, key := range d.small.keys(func(key string) bool { return isHolding(key, Meta{}) }) {
		d.addIndexed(key)
	}
	d.markHoldingsComplete()
	d.holdMu.Lock()
	d.indexing = nil
	d.holdMu.Unlock()
}

// compactHoldings rewrites the holdings without the keys whose objects
// are gone, if there are any, streaming: it holds no set of the keys, so a
// key stored again after a purge may stay listed twice. Lines appended
// while it reads are carried over.
func (d *DiskTier) compactHoldings() {
	p := d.holdingsPath()
	f, err := os.Open(p)
	if err != nil {
		return
	}
	defer f.Close()
	d.holdMu.Lock()
	fi, err := f.Stat()
	d.holdMu.Unlock()
	if err != nil {
		return
	}
	r := bufio.NewReaderSize(io.LimitReader(f, fi.Size()), maxKeyLen+1)
	var (
		tmp     *os.File
		w       *bufio.Writer
		off     int64 // bytes read
		kept    int
		dropped int
	)
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	for {
		select {
		case <-d.stop:
			return
		default:
		}
		key, n, ok := readHolding(r)
		if !ok {
			break
		}
		if key != "" && d.holds(key) {
			kept++
			if w != nil {
				w.WriteString(key + "\n")
			}
		} else {
			if dropped++; w == nil {
				// The first line dropped: what came before it is kept
				// as it is.
				if tmp, err = d.createTemp("holdings-*"); err != nil {
					return
				}
				w = bufio.NewWriter(tmp)
				if _, err := io.Copy(w, io.NewSectionReader(f, 0, off)); err != nil {
					return
				}
			}
		}
		off += int64(n)
	}
	if dropped == 0 {
		return
	}
	d.holdMu.Lock()
	defer d.holdMu.Unlock()
	// What was appended since the file was measured.
	_, err = f.Seek(fi.Size(), io.SeekStart)
	if err == nil {
		_, err = io.Copy(w, f)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr // closed before the rename, which Windows needs
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err != nil {
		d.log.Warn("disk tier: compacting the catalog's index failed", zap.Error(err))
		return
	}
	d.log.Info("disk tier: compacted the catalog's index", zap.Int("kept", kept), zap.Int("dropped", dropped))
}
