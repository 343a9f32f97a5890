package goproxy

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// Every upstream fetch is one structured log line with module, version,
// upstream, duration, bytes and outcome.
func TestFetchLog(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	core, logs := observer.New(zap.DebugLevel)
	e := newEnv(t, up, options{logger: zap.New(core)})
	e.get(path(modA, "zip"), 200)
	e.get(path(modA, "zip"), 200) // a hit: no fetch, no line
	e.get("example.com/a/@v/v1.9.9.mod", 404)

	lines := logs.FilterMessage("upstream fetch").All()
	if len(lines) != 2 {
		t.Fatalf("%d fetch log lines; want 2", len(lines))
	}
	want := []map[string]any{
		{"module": "example.com/a", "version": "v1.0.0", "kind": "zip", "outcome": "ok", "bytes": int64(len(modA.Zip(t)))},
		{"module": "example.com/a", "version": "v1.9.9", "kind": "mod", "outcome": "not_found", "bytes": int64(0)},
	}
	for i, l := range lines {
		f := l.ContextMap()
		for k, v := range want[i] {
			if got := f[k]; got != v {
				t.Errorf("line %d: %s = %v (%T); want %v", i, k, got, got, v)
			}
		}
		if f["upstream"] != up.URL[len("http://"):] {
			t.Errorf("line %d: upstream = %v", i, f["upstream"])
		}
		if _, ok := f["duration"]; !ok {
			t.Errorf("line %d: no duration", i)
		}
	}
}
