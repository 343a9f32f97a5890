package caddymodule

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A zip fetched over QUIC (HTTP/3) is the same bytes, with the same ETag,
// as over HTTP/2.
func TestHTTP3(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	base, rootCert := startCaddyTLS(t, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, up.VerifiedBy(t).VKey, t.TempDir()))
	pem, err := os.ReadFile(rootCert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	url := base + "/" + testenv.EscapedPath(hello.Path, hello.Version, "zip")

	h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	body2, etag2, proto2 := fetch(t, h2, url)
	if proto2 != "HTTP/2.0" {
		t.Errorf("TCP client spoke %s; want HTTP/2.0", proto2)
	}
	h3t := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer h3t.Close()
	h3 := &http.Client{Timeout: 10 * time.Second, Transport: h3t}
	body3, etag3, proto3 := fetch(t, h3, url)
	if proto3 != "HTTP/3.0" {
		t.Errorf("QUIC client spoke %s; want HTTP/3.0", proto3)
	}
	if !bytes.Equal(body2, body3) || !bytes.Equal(body3, hello.Zip(t)) {
		t.Errorf("zip over HTTP/3 (%d bytes) differs from HTTP/2 (%d bytes)", len(body3), len(body2))
	}
	if etag2 == "" || etag2 != etag3 {
		t.Errorf("ETag over HTTP/2 %q, over HTTP/3 %q", etag2, etag3)
	}
}

func fetch(t *testing.T, c *http.Client, url string) (body []byte, etag, proto string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s over %s: %d, %v", url, resp.Proto, resp.StatusCode, err)
	}
	return body, resp.Header.Get("ETag"), resp.Proto
}
