package cachetier

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rssFile is the process's resident file-backed memory, in KiB.
func rssFile(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// The pages of the small store's map that reads touched do not stay in
// the process's RSS: they are dropped (the page cache keeps them) after
// a bounded number of reads. Not parallel: the RSS is the process's.
func TestDiskSmallStoreReleasesMappedPages(t *testing.T) {
	d := openDisk(t, DiskConfig{})
	tile := bytes.Repeat([]byte{1}, 8192)
	const n = 3000 // 24 MiB of tiles
	for i := range n {
		put(t, d, fmt.Sprintf("sumdb/sum.golang.org/tile/8/0/x%03d/%03d", i/1000, i%1000), tile, time.Time{})
	}
	d.Flush()
	releaseMapped(d.small.db)
	base := rssFile(t)
	read := func(count int) {
		for i := range count {
			i %= n
			o, err := d.Get(t.Context(), fmt.Sprintf("sumdb/sum.golang.org/tile/8/0/x%03d/%03d", i/1000, i%1000))
			if err != nil {
				t.Fatal(err)
			}
			o.Close()
		}
	}
	// Fewer reads than a release takes: the pages they touched stay.
	d.small.reads.Store(0)
	read(smallReleaseReads - 1)
	touched := rssFile(t) - base
	if touched < int64(smallReleaseReads-1)*8/2 { // KiB: half of the tiles read
		t.Fatalf("reading %d tiles of the map added %d KiB to the RSS: not the map this test models", smallReleaseReads-1, touched)
	}
	read(1) // the read that releases
	if left := rssFile(t) - base; left > touched/4 {
		t.Errorf("after the release %d KiB of the %d KiB the reads touched are still resident", left, touched)
	}
}

// Opening a tier whose small store holds tens of MiB reads none of it
// into the RSS (no walk of the database at open). Not parallel: the RSS
// is the process's.
func TestDiskSmallStoreOpensWithoutReadingIt(t *testing.T) {
	root := t.TempDir()
	d := openDisk(t, DiskConfig{Root: root})
	tile := bytes.Repeat([]byte{2}, 8192)
	for i := range 3000 { // 24 MiB
		put(t, d, fmt.Sprintf("sumdb/sum.golang.org/tile/8/1/x%03d/%03d", i/1000, i%1000), tile, time.Time{})
	}
	d.Close()
	base := rssFile(t)
	d2 := openDisk(t, DiskConfig{Root: root})
	if grew := rssFile(t) - base; grew > 4<<10 {
		t.Errorf("opening the tier added %d KiB to the RSS", grew)
	}
	if objects, _ := d2.Usage(); objects != 3000 {
		t.Errorf("%d objects after reopening; want 3000", objects)
	}
}
