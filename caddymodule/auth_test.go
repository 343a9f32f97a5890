package caddymodule

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// A private mirror: basic_auth in front of goproxy, and the go command
// authenticating with credentials from a netrc file.
func TestBasicAuthWithNetrc(t *testing.T) {
	up := testenv.NewUpstream(t, hello)
	hash, err := bcrypt.GenerateFromPassword([]byte("correct-horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	base := startCaddy(t, fmt.Sprintf(`basic_auth {
		alice %s
	}
	goproxy %s {
		cache {
			disk %s
		}
	}`, hash, up.URL, t.TempDir()))

	env := testenv.GoEnv(t, base)
	out, err := testenv.TryGo(t, t.TempDir(), env, "mod", "download", "example.com/hello@v1.0.0")
	if err == nil || !strings.Contains(out, "401") {
		t.Fatalf("without credentials: err %v, output %q; want a 401", err, out)
	}
	if up.Total() != 0 {
		t.Error("an unauthenticated request reached the proxy's upstream")
	}
	netrc := filepath.Join(t.TempDir(), "netrc")
	if err := os.WriteFile(netrc, []byte("machine 127.0.0.1 login alice password correct-horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testenv.RunGo(t, t.TempDir(), append(env, "NETRC="+netrc), "mod", "download", "example.com/hello@v1.0.0")
}
