package caddymodule

import (
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// pebble runs Let's Encrypt's ACME test server in process on loopback,
// validating every challenge (PEBBLE_VA_ALWAYS_VALID), and returns its
// directory URL, the file of the certificate its own HTTPS uses, and the
// file of the root that signs what it issues.
func pebble(t *testing.T) (dirURL, serverCert, issuedRoot string) {
	t.Helper()
	t.Setenv("PEBBLE_VA_ALWAYS_VALID", "1")
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, 0, 0, false, "", store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 1, 1)

	acme := httptest.NewTLSServer(front.Handler())
	t.Cleanup(acme.Close)
	mgmt := httptest.NewTLSServer(front.ManagementHandler())
	t.Cleanup(mgmt.Close)
	dir := t.TempDir()
	serverCert = filepath.Join(dir, "acme-server.pem")
	if err := os.WriteFile(serverCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: acme.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := mgmt.Client().Get(mgmt.URL + wfe.RootCertPath + "0")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	issuedRoot = filepath.Join(dir, "pebble-root.pem")
	if err := os.WriteFile(issuedRoot, root, 0o644); err != nil {
		t.Fatal(err)
	}
	return acme.URL + wfe.DirectoryPath, serverCert, issuedRoot
}

// The mirror with a certificate obtained over ACME from a real ACME server
// (Pebble) on loopback, and the go command downloading through it.
func TestACMEMirror(t *testing.T) {
	dirURL, serverCert, issuedRoot := pebble(t)
	up := testenv.NewUpstream(t, hello)
	port := testenv.FreePort(t)
	config := testcaddy.Global("auto_https disable_redirects", "storage file_system "+t.TempDir(), "email ops@piraeus.test") + fmt.Sprintf(`https://127.0.0.1:%d {
	bind 127.0.0.1
	tls {
		issuer acme {
			dir %s
			trusted_roots %s
		}
	}
	goproxy %s {
		sumdb %s
		cache {
			disk %s
		}
	}
}
`, port, dirURL, serverCert, up.URL, up.VerifiedBy(t).VKey, t.TempDir())
	testcaddy.Load(t, config)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	var err error
	for range 300 { // the certificate is obtained in the background: up to 30 s
		if err = tlsReady(base, issuedRoot); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no certificate from the ACME server: %v", err)
	}
	env := append(testenv.GoEnv(t, base), "SSL_CERT_FILE="+issuedRoot)
	out := testenv.RunGo(t, t.TempDir(), env, "mod", "download", "-json", "example.com/hello@v1.0.0")
	if strings.Contains(out, `"Error"`) {
		t.Fatalf("go mod download over ACME https: %s", out)
	}
}
