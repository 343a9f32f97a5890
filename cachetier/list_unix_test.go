//go:build unix

package cachetier

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Listing examines at most limit objects a page, whatever they are, and
// never opens anything but a regular file: a FIFO planted in the tier
// (which an open would wait on for ever) is passed over.
func TestDiskListBoundedAndSkipsSpecialFiles(t *testing.T) {
	t.Parallel()
	d := openDisk(t, DiskConfig{})
	for i := range 40 {
		put(t, d, fmt.Sprintf("ns/example.com/m/@v/v1.0.%d.mod", i), []byte("module example.com/m\n"), time.Time{})
	}
	imm, _, err := d.paths("ns/example.com/m/@v/v1.0.0.mod")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(filepath.Dir(imm), "00-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan int)
	go func() {
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
		t.Fatal("listing hung on the FIFO")
	}
}
