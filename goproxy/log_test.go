package goproxy

import (
	"fmt"
	"net/http"
	"strings"
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

// Credentials in an upstream URL are never shown: not in the start-up
// line or any other log line, not on the status page (HTML or JSON); and
// token-shaped strings in an upstream's error text never reach a client.
func TestNothingSecretShown(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-pw"
	up := testenv.NewUpstream(t, modA)
	db := up.VerifiedBy(t)
	core, logs := observer.New(zap.DebugLevel)
	withCreds := strings.Replace(up.URL, "http://", "http://alice:"+secret+"@", 1)
	e := newEnv(t, up, options{upstream: withCreds, logger: zap.New(core), sumdb: db, sumdbProbe: true,
		statusPath: "/-/status"})
	e.get(path(modA, "zip"), 200)
	up.Override(path(modA11, "info"), func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "version gone, see token=ghp_0123456789abcdefABCDEF and Authorization: Bearer abcdefgh12345678", 404)
	})
	if _, body := e.get(path(modA11, "info"), 404); strings.Contains(string(body), "ghp_") || strings.Contains(string(body), "abcdefgh12345678") {
		t.Errorf("a token reached the client: %q", body)
	}
	for _, p := range []string{"/-/status", "/-/status?format=json"} {
		_, body := e.get(strings.TrimPrefix(p, "/"), 200)
		if strings.Contains(string(body), secret) || strings.Contains(string(body), "alice") {
			t.Errorf("%s shows the upstream's credentials: %s", p, body)
		}
		if !strings.Contains(string(body), "redacted@") {
			t.Errorf("%s does not show the redacted upstream URL: %s", p, body)
		}
	}
	for _, l := range logs.All() {
		if line := fmt.Sprint(l.Message, l.ContextMap()); strings.Contains(line, secret) {
			t.Errorf("a log line shows the upstream's credentials: %s", line)
		}
	}
	if logs.FilterMessageSnippet("goproxy ready").Len() != 1 {
		t.Error("no start-up line")
	}
}
