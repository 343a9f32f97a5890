package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
)

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Get fetches url and returns the status and the whole body.
func Get(url string) (int, []byte, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// MustGet fetches url, failing the test unless it answers 200.
func MustGet(t testing.TB, url string) []byte {
	t.Helper()
	status, body, err := Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK {
		t.Fatalf("GET %s: %d %q", url, status, body)
	}
	return body
}

// GetCheck fetches url and says what is wrong with the answer: a failed
// request, a status other than 200, or a body other than want (if not nil).
func GetCheck(url string, want []byte) error {
	status, body, err := Get(url)
	if err != nil {
		return err
	}
	if status != http.StatusOK || (want != nil && !bytes.Equal(body, want)) {
		return fmt.Errorf("status %d, %d bytes: %q", status, len(body), body[:min(len(body), 100)])
	}
	return nil
}

// GetDuringShutdown fetches url from a proxy that may be closing, and
// says what is wrong with the answer: a 200 must be want, a 404 needs
// want nil, and a 503 asking to retry (one line) is fine.
func GetDuringShutdown(client *http.Client, url string, want []byte) error {
	resp, err := client.Get(url)
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		// The old server closed a connection it had accepted but not
		// read as it shut down (Caddy's reload, before any handler ran):
		// the request was never answered, and is sent again once.
		resp, err = client.Get(url)
	}
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusOK && want != nil && bytes.Equal(body, want):
	case resp.StatusCode == http.StatusNotFound && want == nil:
	case resp.StatusCode == http.StatusServiceUnavailable && strings.Count(string(body), "\n") == 1:
	default:
		return fmt.Errorf("%s: %d %q", url, resp.StatusCode, body[:min(len(body), 200)])
	}
	return nil
}

// GetAsync fetches url in the background; the channel gets the body, or
// nil if the request failed.
func GetAsync(url string) <-chan []byte {
	ch := make(chan []byte, 1)
	go func() {
		_, body, err := Get(url)
		if err != nil {
			body = nil
		}
		ch <- body
	}()
	return ch
}
