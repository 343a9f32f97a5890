package testenv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ProcStatusKiB reads a field in kB (VmHWM:, VmRSS:, RssAnon: ...) of
// /proc/<pid>/status; 0 where there is no /proc or no such field.
func ProcStatusKiB(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// ProcCPU is the CPU time (user and system) a process has used so far,
// from /proc/<pid>/stat in clock ticks of 10 ms (Linux's USER_HZ); 0 where
// there is no /proc.
func ProcCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields are
	// counted after its closing one (utime and stime are fields 14, 15).
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// Slow skips a system test of seconds (stalls, kills, large objects)
// under -short, which is for a quick check while editing; make test and
// CI run them all.
func Slow(t interface {
	Helper()
	Skip(...any)
}) {
	t.Helper()
	if testing.Short() {
		t.Skip("a slow system test: not with -short")
	}
}

// DiskTierFiles counts the objects of a disk tier rooted at root as the
// tier counts them: its files under v2/, each in 4 KiB blocks, plus the
// 256 fan-out directories of a block each, and the entries of its small
// store (v2-small.db), each its key, its value and 64 bytes. The small
// store is read from a copy, the tier holding its lock: call it when the
// tier has written what was put (DiskTier.Flush, or a stopped process).
func DiskTierFiles(t testing.TB, root string) (objects, bytes int64) {
	t.Helper()
	bytes = 256 * 4096
	filepath.WalkDir(filepath.Join(root, "v2"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				objects++
				bytes += (info.Size() + 4095) / 4096 * 4096
			}
		}
		return nil
	})
	data, err := os.ReadFile(filepath.Join(root, "v2-small.db"))
	if errors.Is(err, fs.ErrNotExist) {
		return objects, bytes
	}
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "small.db")
	if err := os.WriteFile(cp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(cp, 0o644, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("the disk tier's small store: %v", err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("objects")); b != nil {
			b.ForEach(func(k, v []byte) error {
				objects++
				bytes += int64(len(k) + len(v) + 64)
				return nil
			})
		}
		return nil
	})
	return objects, bytes
}
