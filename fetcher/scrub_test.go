package fetcher

import (
	"strings"
	"testing"
)

func TestClientText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		secrets  []string
	}{
		{
			in:      "not found: module github.com/acme/x: git ls-remote -q origin in /tmp/x: exit status 128:\n\tfatal: unable to access 'https://bot:t0ken@git.corp.internal/acme/x.git/': Could not resolve host: git.corp.internal",
			want:    "not found: module github.com/acme/x: git ls-remote -q origin in /tmp/x: exit status 128:",
			secrets: []string{"t0ken", "git.corp.internal"},
		},
		{
			in:      "unrecognized import path \"github.com/acme/x\": https fetch: Get \"https://github.com/acme/x?go-get=1\": dial tcp: lookup github.com on 10.0.0.2:53: read udp 10.0.0.7:4711->10.0.0.2:53: i/o timeout",
			want:    "unrecognized import path \"github.com/acme/x\": https fetch: Get \"<url>\": dial tcp: lookup github.com on <address>: read udp <address>-><address>: i/o timeout",
			secrets: []string{"10.0.0.2", "10.0.0.7"},
		},
		{
			in:      "fetch from upstream mirror.internal.corp:8443 failed; resolver [fd00::53]:53 and fd00::1 unreachable",
			want:    "fetch from upstream <host> failed; resolver <address> and <address> unreachable",
			secrets: []string{"mirror.internal", "fd00"},
		},
		{
			in:      "git@git.corp.internal:acme/x.git: Permission denied (publickey)",
			secrets: []string{"git.corp.internal"},
		},
		{
			in:   "not found: github.com/acme/x@v1.2.3: invalid version: unknown revision v1.2.3",
			want: "not found: github.com/acme/x@v1.2.3: invalid version: unknown revision v1.2.3",
		},
		{
			in:   "go.mod has non-... module path \"example.com/a\" at revision v0.1.0; see sum.golang.org",
			want: "go.mod has non-... module path \"example.com/a\" at revision v0.1.0; see sum.golang.org",
		},
		{in: strings.Repeat("x", 1000), want: strings.Repeat("x", maxClientText)},
		{in: "bad\x1b[31m color\x00", want: "bad[31m color"},
	}
	for _, tt := range tests {
		got := ClientText(tt.in, "github.com/acme/x", "sum.golang.org")
		if tt.want != "" && got != tt.want {
			t.Errorf("ClientText(%q)\n got %q\nwant %q", tt.in, got, tt.want)
		}
		for _, s := range tt.secrets {
			if strings.Contains(got, s) {
				t.Errorf("ClientText(%q) = %q keeps %q", tt.in, got, s)
			}
		}
	}
}
