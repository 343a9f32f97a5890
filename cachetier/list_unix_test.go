//go:build unix

package cachetier

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// The catalog's index of a tier of an earlier version is built once from
// its headers, skipping anything that is not a regular file (a FIFO
// would block, a device worse); pages then hold at most their limit.
func TestDiskListBoundedAndSkipsSpecialFiles(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	d := openDisk(t, DiskConfig{Root: root})
	for i := range 40 {
		put(t, d, fmt.Sprintf("ns/example.com/m/@v/v1.0.%d.info", i), []byte(`{"Version":"v1.0.0"}`), time.Time{})
	}
	imm, _, err := d.paths("ns/example.com/m/@v/v1.0.0.info")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(filepath.Dir(imm), "00-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Close()
	os.Remove(d.holdingsPath())
	os.Remove(d.holdingsPath() + ".complete")
	done := make(chan int)
	go func() {
		d := openDisk(t, DiskConfig{Root: root})
		<-d.Counted() // indexed, then counted
		total, pages := 0, 0
		for after := ""; pages < 100; pages++ {
			keys, next, err := d.List(t.Context(), after, 7)
			if err != nil {
				t.Error(err)
				break
			}
			if len(keys) > 7 {
				t.Errorf("a page of limit 7 holds %d keys", len(keys))
			}
			total += len(keys)
			if after = next; next == "" {
				break
			}
		}
		done <- total
	}()
	select {
	case total := <-done:
		if total != 40 {
			t.Errorf("listed %d keys; want 40", total)
		}
	case <-time.After(time.Minute):
		t.Fatal("indexing or listing hung on the FIFO")
	}
}
