package caddymodule

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// startCaddyTLS serves goproxyBlock on https://localhost:<port> with a
// certificate from Caddy's internal CA, and returns the base URL and the
// CA's root certificate file for SSL_CERT_FILE.
func startCaddyTLS(t *testing.T, goproxyBlock string) (base, rootCert string) {
	t.Helper()
	return startCaddyTLSWith(t, nil, "tls internal", goproxyBlock)
}

// startCaddyTLSWith is startCaddyTLS with more global options and the
// site's tls directive given.
func startCaddyTLSWith(t *testing.T, globals []string, tlsDirective, goproxyBlock string) (base, rootCert string) {
	t.Helper()
	port := testenv.FreePort(t)
	storage := tlsStorage
	config := testcaddy.Global(append([]string{"auto_https disable_redirects", "storage file_system " + storage}, globals...)...) + fmt.Sprintf(`https://localhost:%d {
	bind 127.0.0.1
	%s
	%s
}
`, port, tlsDirective, goproxyBlock)
	testcaddy.Load(t, config)
	base = fmt.Sprintf("https://localhost:%d", port)
	rootCert = filepath.Join(storage, "pki", "authorities", "local", "root.crt")
	// Caddy issues the certificate in the background: wait for a handshake
	// that verifies against its root.
	var lastErr error
	for range 100 { // up to 10 s
		if lastErr = tlsReady(base, rootCert); lastErr == nil {
			return base, rootCert
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("https with Caddy's internal CA not ready: %v", lastErr)
	return "", ""
}

// rootPool is the pool of the CA root certificate in the file rootCert.
func rootPool(rootCert string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(rootCert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return pool, nil
}

// tlsClient is an HTTP client that trusts the CA root in rootCert.
func tlsClient(t *testing.T, rootCert string) *http.Client {
	t.Helper()
	pool, err := rootPool(rootCert)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func tlsReady(base, rootCert string) error {
	pool, err := rootPool(rootCert)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get(base + "/")
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// A private company mirror over HTTPS with a certificate from Caddy's
// internal CA (tls internal), basic_auth in front of goproxy, and the go
// command trusting that CA through SSL_CERT_FILE and authenticating with
// credentials from a netrc file (the go command sends them only over https).
func TestBasicAuthWithNetrc(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct-horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	base, rootCert := startCaddyTLS(t, fmt.Sprintf(`basic_auth {
		alice %s
	}
	goproxy %s {
		sumdb %s
		cache {
			disk %s
		}
	}`, hash, up.URL, up.VerifiedBy(t).VKey, t.TempDir()))

	env := append(testenv.GoEnv(t, base), "SSL_CERT_FILE="+rootCert)
	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/hello@v1.0.0")
	if err == nil || !strings.Contains(out, "401") {
		t.Fatalf("without credentials: err %v, output %q; want a 401", err, out)
	}
	if up.Total() != 0 {
		t.Error("an unauthenticated request reached the proxy's upstream")
	}
	netrc := filepath.Join(t.TempDir(), "netrc")
	// The go command matches a netrc machine against host:port.
	machine := strings.TrimPrefix(base, "https://")
	if err := os.WriteFile(netrc, []byte("machine "+machine+" login alice password correct-horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.RunGo(t, t.TempDir(), append(env, "NETRC="+netrc), "mod", "download", "example.com/hello@v1.0.0")
}
