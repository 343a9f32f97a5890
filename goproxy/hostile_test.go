package goproxy

import (
	"bufio"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// rawRequest sends bytes as they are, for requests a client library would
// refuse to send, and returns the status.
func rawRequest(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading answer to %q: %v", raw[:min(len(raw), 80)], err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Hostile request lines and headers get 400, 404 or 405; none reaches
// upstream or creates a file anywhere.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	outside := t.TempDir()
	e := newEnv(t, up, options{memory: true, diskRoot: filepath.Join(outside, "cache")})
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	get := func(p string, hdr ...string) string {
		return "GET " + p + " HTTP/1.1\r\nHost: piraeus.test\r\n" + strings.Join(hdr, "") + "Connection: close\r\n\r\n"
	}
	tests := []struct {
		raw    string
		status int
	}{
		// traversal, in every spelling
		{get("/../../../etc/passwd"), 404},
		{get("/example.com/../../etc/@v/list"), 400},
		{get("/example.com/a/@v/../../../../etc/passwd.info"), 400},
		{get("/..%2F..%2Fetc%2Fpasswd/@v/list"), 400},
		{get("/example.com%2F..%2F..%2Fx/@v/list"), 400},
		{get("/example.com/a/@v/..%2f..%2fx.info"), 400},
		{get("/%2e%2e/%2e%2e/etc/@v/list"), 400},
		{get("/example.com/a/@v/%2e%2e.info"), 400},
		{get("/example.com/.%2e/x/@v/list"), 400},
		{get("/example.com\\..\\..\\x/@v/list"), 400},
		{get("/example.com/a/@v/..\\..\\x.info"), 400},
		{get("//etc/passwd/@v/list"), 400},
		{get("/./example.com/a/@v/list"), 400},
		{get("/example.com/a/./@v/list"), 400},
		// encoded slashes and percent tricks
		{get("/example.com%2Fa/@v/list"), 400},
		{get("/example.com/a%2F@v%2Flist"), 400},
		{get("/example.com/a/@v/v1.0.0.zip%00"), 400},
		{get("/example.com/a%252F/@v/list"), 400},
		{get("/example.com/a/@v/v1.0.0%25.zip"), 400},
		// '!' misuse
		{get("/example.com/!!a/@v/list"), 400},
		{get("/example.com/a!/@v/list"), 400},
		{get("/example.com/!A/@v/list"), 400},
		{get("/example.com/a/@v/v1.0.0-!!x.info"), 400},
		{get("/example.com/a/@v/v1.0.0!.info"), 400},
		// versions
		{get("/example.com/a/@v/v1.0.0.0.zip"), 400},
		{get("/example.com/a/@v/v" + strings.Repeat("9", 400) + ".0.0.zip"), 400},
		{get("/example.com/a/@v/v1.0.0-" + strings.Repeat("a", 300) + ".info"), 400},
		{get("/example.com/a/@v/V1.0.0.zip"), 400},
		{get("/example.com/a/@v/v1.0.0+meta.zip"), 400},
		{get("/example.com/a/@v/latest.zip"), 400},
		{get("/example.com/a/@v/v2.0.0.zip"), 400},
		// Unicode confusables and odd bytes
		{get("/exаmple.com/a/@v/list"), 400},       // Cyrillic а
		{get("/example.com/ａ/@v/list"), 400},       // fullwidth a
		{get("/example.com/a\u200b/@v/list"), 400}, // zero-width space
		{get("/example.com/%C0%AE%C0%AE/@v/list"), 400},
		{get("/example.com/a/@v/v1.0.0%FF.info"), 400},
		{get("/example.com/a%00/@v/list"), 400},
		{get("/example.com/a/@v/v1.0.0%00.zip"), 400},
		{get("/example.com/a/@v/v1.0.0%0D%0ASet-Cookie:x=y.info"), 400},
		{get("/example.com/a/@v/list%20"), 400},
		{"GET /example.com/a\x00/@v/list HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"GET /example.com/a/@v/list\r\nX: y HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		// sizes
		{get("/" + strings.Repeat("a/", 32<<10) + "@v/list"), 400},
		{get("/example.com/" + strings.Repeat("b", 64<<10) + "/@v/list"), 400},
		{get("/example.com/" + strings.Repeat("c", 256) + "/@v/list"), 400},
		// methods
		{"POST /" + path(modA, "zip") + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405},
		{"PUT /" + path(modA, "mod") + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405},
		{"DELETE /" + path(modA, "info") + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405},
		{"PATCH /example.com/a/@v/list HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 405},
		{"OPTIONS /example.com/a/@v/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405},
		{"TRACE /example.com/a/@v/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405},
		{"PROPFIND /example.com/a/@v/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405},
		{"BREW /example.com/a/@v/list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405},
		// hostile headers on hostile paths
		{get("/../x/@v/list", "Host: ../../etc\r\n"), 400},
		{get("/example.com/a%2f/@v/list", "X-Forwarded-Prefix: /../../\r\n"), 400},
		{get("/example.com/A/@v/list", "Range: bytes=0-1,"+strings.Repeat("2-3,", 1000)+"4-5\r\n"), 400},
		{get("/example.com/a/@v/v1.0.zip", "If-None-Match: *\r\n"), 400},
		{get("/nope", "X-Original-URL: /example.com/a/@v/v1.0.0.zip\r\n"), 404},
		{get("/nope", "X-Rewrite-URL: /../../etc/passwd\r\n"), 404},
		{"GET /example.com/a/@v/list HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n", 400},
		{"GET /example.com/a/@v/list HTTP/1.1\r\nHost: x\r\nX-Huge: " + strings.Repeat("h", 2<<20) + "\r\n\r\n", 431},
	}
	if n := len(tests); n < 50 {
		t.Fatalf("only %d hostile requests", n)
	}
	for i, tt := range tests {
		if got := rawRequest(t, addr, tt.raw); got != tt.status {
			t.Errorf("#%d %q: status %d; want %d", i, tt.raw[:min(len(tt.raw), 100)], got, tt.status)
		}
	}
	if n := up.Total(); n != 0 {
		t.Errorf("hostile requests reached upstream %d times: %v", n, up.Paths())
	}
	assertNoFiles(t, outside)
	e.disk.Flush()
	if objects, _ := e.disk.Usage(); objects != 0 {
		t.Errorf("the disk tier holds %d objects", objects)
	}
}
