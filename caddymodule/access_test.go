package caddymodule

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/piraeus-go/piraeus/internal/testcaddy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

var secret = testenv.Module{Path: "example.com/secret", Version: "v1.0.0", Files: map[string]string{
	"secret.go": "package secret\n\nconst Formula = 42\n",
}}

// recorder is a GOPROXY server that answers 404 to everything and records
// what it was asked: the public proxy after the mirror in a client's list.
type recorder struct {
	URL   string
	mu    sync.Mutex
	paths []string
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.paths = append(rec.paths, r.URL.Path)
		rec.mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL
	return rec
}

func (r *recorder) asked(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.ContainsFunc(r.paths, func(p string) bool { return strings.Contains(p, s) })
}

// auditLogFile is a file for the audit trail, and the global option that
// sends the audit logger there.
func auditLogFile(t *testing.T) (file, option string) {
	file = filepath.Join(t.TempDir(), "audit.log")
	return file, fmt.Sprintf("log audit {\n\t\toutput file %s\n\t\tinclude http.handlers.goproxy.audit\n\t\tformat json\n\t}", file)
}

// auditLines reads the audit log Caddy wrote: one JSON object a line.
func auditLines(t *testing.T, file string) []map[string]any {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("audit log: %v", err)
	}
	defer f.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

func findAudit(lines []map[string]any, want map[string]any) bool {
	return slices.ContainsFunc(lines, func(l map[string]any) bool {
		for k, v := range want {
			if fmt.Sprint(l[k]) != fmt.Sprint(v) {
				return false
			}
		}
		return true
	})
}

func writeNetrc(t *testing.T, base, login, password string) string {
	t.Helper()
	netrc := filepath.Join(t.TempDir(), "netrc")
	machine := strings.TrimPrefix(base, "https://") // host:port, as the go command matches it
	if err := os.WriteFile(netrc, []byte("machine "+machine+" login "+login+" password "+password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return netrc
}

func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// A company mirror over https with basic_auth for those who send
// credentials and anonymous access to public modules: the real go command
// gets a 401 without credentials and a 403 with the reason when its user
// may not read the module, from the cache as from upstream; a client whose
// GOPROXY list names a public proxy after the mirror never asks it for
// the denied module; every answer of the protected module and every
// denial is a line of the audit log, which Caddy's log config sends to a
// file of its own.
func TestAccessBasicAuth(t *testing.T) {
	up := testenv.NewUpstream(t, hello, secret)
	db := up.VerifiedBy(t)
	audit, logAudit := auditLogFile(t)
	base, rootCert := startCaddyTLSWith(t, []string{logAudit}, "tls internal", fmt.Sprintf(`@creds header Authorization *
	basic_auth @creds {
		alice %s
		bob %s
	}
	goproxy %s {
		sumdb %s
		status
		cache {
			disk %s
		}
		access {
			allow example.com/secret user:alice
			allow * anyone
			operator user:alice
		}
	}`, bcryptHash(t, "alice-pw"), bcryptHash(t, "bob-pw"), up.URL, db.VKey, t.TempDir()))

	env := append(testenv.GoEnv(t, base), "SSL_CERT_FILE="+rootCert, "GOSUMDB="+db.VKey, "GOAUTH=netrc", "NETRC="+filepath.Join(t.TempDir(), "none"))
	alice := append(slices.Clone(env), "NETRC="+writeNetrc(t, base, "alice", "alice-pw"))
	bob := append(slices.Clone(env), "NETRC="+writeNetrc(t, base, "bob", "bob-pw"))
	fresh := func(env []string) []string { return append(slices.Clone(env), "GOMODCACHE="+t.TempDir()) }

	// Public modules, and the checksum database, to anyone.
	testenv.RunGo(t, t.TempDir(), env, "mod", "download", "example.com/hello@v1.0.0")

	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/secret@v1.0.0")
	if err == nil || !strings.Contains(out, "401 Unauthorized") {
		t.Fatalf("anonymous: err %v, output %q; want a 401", err, out)
	}
	if n := up.Requests(testenv.EscapedPath(secret.Path, secret.Version, "info")); n != 0 {
		t.Errorf("a denied request reached the upstream (%d times)", n)
	}
	out, err = testenv.TryGo(t, t.TempDir(), bob, "mod", "download", "example.com/secret@v1.0.0")
	if err == nil || !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, `user "bob" may not read example.com/secret`) {
		t.Fatalf("bob: err %v, output %q; want a 403 with the reason", err, out)
	}
	t.Logf("bob: go mod download example.com/secret@v1.0.0: %v\n%s", err, out)
	out = testenv.RunGo(t, t.TempDir(), alice, "mod", "download", "-json", "example.com/secret@v1.0.0")
	t.Logf("alice: go mod download -json example.com/secret@v1.0.0:\n%s", out)

	// Now cached: bob is held to the same rule.
	out, err = testenv.TryGo(t, t.TempDir(), fresh(bob), "mod", "download", "example.com/secret@v1.0.0")
	if err == nil || !strings.Contains(out, "403 Forbidden") {
		t.Fatalf("bob, cached module: err %v, output %q; want a 403", err, out)
	}
	// A GOPROXY list with a public proxy after the mirror: a 403 is not a
	// 404, so the go command does not go on to the public proxy.
	public := newRecorder(t)
	listed := append(fresh(bob), "GOPROXY="+base+","+public.URL)
	if out, err := testenv.TryGo(t, t.TempDir(), listed, "mod", "download", "example.com/secret@v1.0.0"); err == nil {
		t.Fatalf("bob through a GOPROXY list: no error\n%s", out)
	}
	if public.asked("secret") {
		t.Errorf("the public proxy after the mirror was asked for the denied module: %v", public.paths)
	}

	// The challenge the go command's GOAUTH helpers answer.
	client := tlsClient(t, rootCert)
	get := func(path, user, password string) *http.Response {
		req, _ := http.NewRequest("GET", base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get("/example.com/secret/@v/list", "", ""); resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm=") {
		t.Errorf("anonymous list: %d, WWW-Authenticate %q; want 401 with a Basic challenge", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	for _, p := range []string{"/cached-only/example.com/secret/@v/v1.0.0.zip", "/example.com/secret/@latest", "/example.com/secret/v2/@v/list"} {
		if resp := get(p, "bob", "bob-pw"); resp.StatusCode != 403 {
			t.Errorf("bob: %s: %d, want 403", p, resp.StatusCode)
		}
	}
	lookup := "/sumdb/" + db.Name + "/lookup/example.com/secret@v1.0.0"
	if resp := get(lookup, "bob", "bob-pw"); resp.StatusCode != 403 {
		t.Errorf("bob's checksum database lookup of the module: %d, want 403", resp.StatusCode)
	}
	if resp := get(lookup, "alice", "alice-pw"); resp.StatusCode != 200 {
		t.Errorf("alice's checksum database lookup of the module: %d, want 200", resp.StatusCode)
	}
	// The status page is the operator's.
	for _, c := range []struct {
		user, password string
		want           int
	}{{"", "", 401}, {"bob", "bob-pw", 403}, {"alice", "alice-pw", 200}} {
		if resp := get("/-/status", c.user, c.password); resp.StatusCode != c.want {
			t.Errorf("status page for %q: %d, want %d", c.user, resp.StatusCode, c.want)
		}
	}

	data, _ := os.ReadFile(audit)
	t.Logf("the audit log:\n%s", data)
	lines := auditLines(t, audit)
	for _, want := range []map[string]any{
		{"logger": "http.handlers.goproxy.audit", "msg": "denied", "user": "bob", "module": "example.com/secret", "kind": "info", "status": 403},
		{"msg": "denied", "user": "", "module": "example.com/secret", "status": 401},
		{"msg": "served", "user": "alice", "module": "example.com/secret", "version": "v1.0.0", "kind": "zip", "status": 200},
		{"msg": "denied", "user": "bob", "module": "example.com/secret", "kind": "lookup", "status": 403},
		{"msg": "operator page", "user": "alice", "path": "/-/status"},
		{"msg": "denied", "user": "bob", "path": "/-/status", "status": 403},
	} {
		if !findAudit(lines, want) {
			t.Errorf("no audit line %v in:\n%v", want, lines)
		}
	}
	if findAudit(lines, map[string]any{"module": "example.com/hello"}) {
		t.Error("a public module's answers were audited")
	}
	for _, l := range lines {
		if l["client"] == "" || l["client"] == nil {
			t.Errorf("audit line without the client's address: %v", l)
		}
	}
}

// identityService is a loopback identity provider for forward_auth: it
// answers a known bearer token with 200 and the user's name and groups
// in headers, anything else with 401.
type identityService struct {
	mu     sync.Mutex
	tokens map[string][2]string // token -> user, comma-separated groups
	srv    *httptest.Server
}

func newIdentityService(t *testing.T) *identityService {
	s := &identityService{tokens: map[string][2]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s.mu.Lock()
		id, ok := s.tokens[token]
		s.mu.Unlock()
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sso"`)
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Remote-User", id[0])
		if id[1] != "" {
			w.Header().Set("Remote-Groups", id[1])
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *identityService) set(token, user, groups string) {
	s.mu.Lock()
	s.tokens[token] = [2]string{user, groups}
	s.mu.Unlock()
}

// SSO in front of the mirror: forward_auth asks a loopback identity
// service, which names the user and their groups; the go command sends
// its bearer token through a GOAUTH command. A user whose group changes
// is refused a module the mirror holds and they could read before; groups
// a client claims in a header of its own count for nothing.
func TestAccessForwardAuthGroups(t *testing.T) {
	up := testenv.NewUpstream(t, hello, secret)
	db := up.VerifiedBy(t)
	ids := newIdentityService(t)
	ids.set("carol-token", "carol", "engineering,payments")
	ids.set("dave-token", "dave", "")
	// The README's company mirror: SSO for people, access tokens for CI.
	base, rootCert := startCaddyTLSWith(t, nil, "tls internal", fmt.Sprintf(`@tokens {
		header Authorization "Basic *"
		header Authorization "Bearer pir_*"
	}
	goproxy_token @tokens
	@sso {
		not {
			header Authorization "Basic *"
			header Authorization "Bearer pir_*"
		}
	}
	forward_auth @sso %s {
		uri /verify
		copy_headers Remote-User Remote-Groups
	}
	goproxy %s {
		sumdb %s
		cache {
			disk %s
		}
		access {
			identity {http.auth.user.id} {http.auth.user.groups}
			identity {http.request.header.Remote-User} {http.request.header.Remote-Groups}
			allow example.com/secret group:payments
			allow * authenticated
		}
	}`, strings.TrimPrefix(ids.srv.URL, "http://"), up.URL, db.VKey, t.TempDir()))

	// The GOAUTH command protocol: the URL prefixes, a blank line, the
	// headers, a blank line.
	script := filepath.Join(t.TempDir(), "goauth")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nprintf '%s\\n\\nAuthorization: Bearer carol-token\\n\\n'\n", base)), 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(testenv.GoEnv(t, base), "SSL_CERT_FILE="+rootCert, "GOSUMDB="+db.VKey)
	carol := append(slices.Clone(env), "GOAUTH="+script)

	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/hello@v1.0.0")
	if err == nil || !strings.Contains(out, "401") {
		t.Fatalf("without a token: err %v, output %q; want a 401 from the identity service", err, out)
	}
	testenv.RunGo(t, t.TempDir(), carol, "mod", "download", "example.com/secret@v1.0.0", "example.com/hello@v1.0.0")

	ids.set("carol-token", "carol", "engineering")
	out, err = testenv.TryGo(t, t.TempDir(), append(slices.Clone(carol), "GOMODCACHE="+t.TempDir()), "mod", "download", "example.com/secret@v1.0.0")
	if err == nil || !strings.Contains(out, "403 Forbidden") || !strings.Contains(out, `user "carol" may not read example.com/secret`) {
		t.Fatalf("carol out of payments, module cached: err %v, output %q; want a 403 with the reason", err, out)
	}
	testenv.RunGo(t, t.TempDir(), append(slices.Clone(carol), "GOMODCACHE="+t.TempDir()), "mod", "download", "example.com/hello@v1.0.0")

	// dave claims the group in headers of his own: forward_auth replaces
	// the headers it copies, so the claim does not count; nor does it for
	// a CI token, whose groups are the token's.
	client := tlsClient(t, rootCert)
	var created strings.Builder
	if err := CreateTokenViaAdmin(fmt.Sprintf("localhost:%d", testcaddy.AdminPort()), "ci-bot", "ci", "1h", &created); err != nil {
		t.Fatal(err)
	}
	ciToken, _, _ := strings.Cut(created.String(), "\n")
	for _, c := range []struct {
		token string
		want  int
	}{{"dave-token", 403}, {"", 401}, {ciToken, 403}} {
		req, _ := http.NewRequest("GET", base+"/example.com/secret/@v/v1.0.0.info", nil)
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		req.Header.Set("Remote-User", "carol")
		req.Header.Set("Remote-Groups", "payments")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("spoofed identity headers, token %q: %d, want %d", c.token, resp.StatusCode, c.want)
		}
	}
}

// A client certificate as the identity: the site verifies certificates
// when clients send one, and the user is the certificate's e-mail address.
// (The go command sends no client certificates; a build system or a
// sidecar in front of it does.)
func TestAccessClientCertificate(t *testing.T) {
	up := testenv.NewUpstream(t, hello, secret)
	ca, caKey := newCA(t)
	caFile := filepath.Join(t.TempDir(), "clients-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	base, rootCert := startCaddyTLSWith(t, nil, fmt.Sprintf(`tls internal {
		client_auth {
			mode verify_if_given
			trust_pool file %s
		}
	}`, caFile), fmt.Sprintf(`goproxy %s {
		sumdb off
		cache {
			disk %s
		}
		access {
			identity {http.request.tls.client.san.emails.0}
			allow example.com/secret user:alice@acme.test
			allow * authenticated
		}
	}`, up.URL, t.TempDir()))
	pool, err := rootPool(rootCert)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		email string
		path  string
		want  int
	}{
		{"alice@acme.test", "/example.com/secret/@v/v1.0.0.info", 200},
		{"bob@acme.test", "/example.com/secret/@v/v1.0.0.info", 403},
		{"bob@acme.test", "/example.com/hello/@v/v1.0.0.info", 200},
		{"", "/example.com/hello/@v/v1.0.0.info", 401},
	} {
		cfg := &tls.Config{RootCAs: pool}
		if c.email != "" {
			cfg.Certificates = []tls.Certificate{clientCert(t, ca, caKey, c.email)}
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		resp, err := client.Get(base + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s with a certificate for %q: %d %s, want %d", c.path, c.email, resp.StatusCode, body, c.want)
		}
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Acme clients CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

func clientCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, email string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: email},
		EmailAddresses: []string{email}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// Tokens the go command sends by itself: issued with `caddy goproxy token
// create` (through the admin API), accepted by goproxy_token as a netrc
// password and as a GOAUTH command's bearer token, listed, and refused
// once revoked; token operations are audited.
func TestAccessTokens(t *testing.T) {
	up := testenv.NewUpstream(t, hello, secret)
	db := up.VerifiedBy(t)
	audit, logAudit := auditLogFile(t)
	base, rootCert := startCaddyTLSWith(t, []string{logAudit}, "tls internal", fmt.Sprintf(`@creds header Authorization *
	goproxy_token @creds
	goproxy %s {
		sumdb %s
		cache {
			disk %s
		}
		access {
			allow example.com/secret group:payments
			allow * authenticated
		}
	}`, up.URL, db.VKey, t.TempDir()))
	admin := fmt.Sprintf("localhost:%d", testcaddy.AdminPort())

	var out strings.Builder
	if err := CreateTokenViaAdmin(admin, "ci-bot", "payments,ci", "1h", &out); err != nil {
		t.Fatal(err)
	}
	token, _, _ := strings.Cut(out.String(), "\n")
	if !strings.HasPrefix(token, "pir_") {
		t.Fatalf("token create printed %q", out.String())
	}
	out.Reset()
	if err := CreateTokenViaAdmin(admin, "intern", "", "1h", &out); err != nil {
		t.Fatal(err)
	}
	internToken, _, _ := strings.Cut(out.String(), "\n")

	env := append(testenv.GoEnv(t, base), "SSL_CERT_FILE="+rootCert, "GOSUMDB="+db.VKey)
	fresh := func(env []string) []string { return append(slices.Clone(env), "GOMODCACHE="+t.TempDir()) }
	netrc := append(slices.Clone(env), "GOAUTH=netrc", "NETRC="+writeNetrc(t, base, "anything", token))
	testenv.RunGo(t, t.TempDir(), netrc, "mod", "download", "example.com/secret@v1.0.0")

	script := filepath.Join(t.TempDir(), "goauth")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\nprintf '%s\\n\\nAuthorization: Bearer %s\\n\\n'\n", base, token)), 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.RunGo(t, t.TempDir(), fresh(append(slices.Clone(env), "GOAUTH="+script)), "mod", "download", "example.com/secret@v1.0.0")

	intern := append(slices.Clone(env), "GOAUTH=netrc", "NETRC="+writeNetrc(t, base, "intern", internToken))
	testenv.RunGo(t, t.TempDir(), intern, "mod", "download", "example.com/hello@v1.0.0")
	if out, err := testenv.TryGo(t, t.TempDir(), fresh(intern), "mod", "download", "example.com/secret@v1.0.0"); err == nil || !strings.Contains(out, `user "intern" may not read example.com/secret`) {
		t.Fatalf("intern, not in payments: err %v\n%s", err, out)
	}
	bogus := append(slices.Clone(env), "GOAUTH=netrc", "NETRC="+writeNetrc(t, base, "ci-bot", token[:len(token)-2]+"xx"))
	if out, err := testenv.TryGo(t, t.TempDir(), fresh(bogus), "mod", "download", "example.com/hello@v1.0.0"); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("a wrong token: err %v\n%s", err, out)
	}

	out.Reset()
	if err := ListTokensViaAdmin(admin, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ci-bot") || !strings.Contains(out.String(), "intern") || strings.Contains(out.String(), token) {
		t.Fatalf("token list:\n%s", out.String())
	}
	id := strings.Fields(out.String())[0]
	if !strings.Contains(token, id) {
		id = strings.Fields(strings.Split(out.String(), "\n")[1])[0]
	}
	if err := RevokeTokenViaAdmin(admin, id, io.Discard); err != nil {
		t.Fatal(err)
	}
	if out, err := testenv.TryGo(t, t.TempDir(), fresh(netrc), "mod", "download", "example.com/secret@v1.0.0"); err == nil || !strings.Contains(out, "401") {
		t.Fatalf("a revoked token: err %v\n%s", err, out)
	}
	if err := RevokeTokenViaAdmin(admin, id, io.Discard); err == nil {
		t.Error("revoking a token twice: no error")
	}

	lines := auditLines(t, audit)
	for _, want := range []map[string]any{
		{"msg": "admin token create", "user": "ci-bot"},
		{"msg": "admin token revoke", "token": id},
		{"msg": "served", "user": "ci-bot", "module": "example.com/secret", "kind": "zip"},
		{"msg": "denied", "user": "intern", "module": "example.com/secret"},
	} {
		if !findAudit(lines, want) {
			t.Errorf("no audit line %v in:\n%v", want, lines)
		}
	}
}

// The user and their groups come from one identity source: a token's user
// never gets the groups a header of the client's own claims.
func TestIdentityPairsUserAndGroups(t *testing.T) {
	ids := []IdentityConfig{
		{User: "{http.auth.user.id}", Groups: "{http.auth.user.groups}"},
		{User: "{http.request.header.Remote-User}", Groups: "{http.request.header.Remote-Groups}"},
	}
	req := func(authUser, authGroups string, header map[string]string) *http.Request {
		r := httptest.NewRequest("GET", "/example.com/x/@v/list", nil)
		for k, v := range header {
			r.Header.Set(k, v)
		}
		repl := caddy.NewReplacer()
		repl.Map(func(key string) (any, bool) {
			if v, ok := strings.CutPrefix(key, "http.request.header."); ok {
				return r.Header.Get(v), true
			}
			return nil, false
		})
		if authUser != "" {
			repl.Set("http.auth.user.id", authUser)
			repl.Set("http.auth.user.groups", authGroups)
		}
		return r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	}
	for _, c := range []struct {
		r          *http.Request
		user, grps string
	}{
		{req("ci-bot", "ci", map[string]string{"Remote-Groups": "payments"}), "ci-bot", "ci"},
		{req("", "", map[string]string{"Remote-User": "carol", "Remote-Groups": "a, b"}), "carol", "a,b"},
		{req("", "", map[string]string{"Remote-Groups": "payments"}), "", ""},
		{req("", "", nil), "", ""},
	} {
		s := identify(c.r, ids)
		if s.User != c.user || strings.Join(s.Groups, ",") != c.grps {
			t.Errorf("identity %q %q, want %q %q", s.User, s.Groups, c.user, c.grps)
		}
	}
}
