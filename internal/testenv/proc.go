package testenv

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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
