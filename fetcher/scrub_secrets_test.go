package fetcher

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
)

func TestSecretsScrubbed(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"bad credentials token=ghp_0123456789abcdefABCDEF": "bad credentials token=<redacted>",
		"use ghp_0123456789abcdefABCDEF here":              "use <redacted> here",
		"glpat-AbCdEf0123456789xyz expired":                "<redacted> expired",
		"key AKIAIOSFODNN7EXAMPLE denied":                  "key <redacted> denied",
		"Authorization: Bearer abc.def-ghi_jkl0123":        "Authorization: <redacted> <redacted>",
		"sent Bearer abc.def-ghi_jkl0123":                  "sent Bearer <redacted>",
		"password=hunter2&user=bob":                        "password=<redacted>&user=bob",
		`api_key: "abc 123"`:                               "api_key: <redacted>",
		"X-Amz-Signature=0123abcd":                         "X-Amz-Signature=<redacted>",
		// what is not a secret stays
		"example.com/a@v1.2.3: unknown revision v1.2.3": "example.com/a@v1.2.3: unknown revision v1.2.3",
		"reading go.mod: module declares its path as x": "reading go.mod: module declares its path as x",
	} {
		if got := Secrets(in); got != want {
			t.Errorf("Secrets(%q) = %q; want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"https://alice:pw@proxy.example.com/go":       "https://redacted@proxy.example.com/go",
		"https://proxy.example.com/go?token=abc#frag": "https://proxy.example.com/go?redacted",
		"https://proxy.example.com":                   "https://proxy.example.com",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q; want %q", in, got, want)
		}
	}
	if got := RedactList("https://a:b@x.example,direct|off"); got != "https://redacted@x.example,direct|off" {
		t.Errorf("RedactList = %q", got)
	}
}

// A private source's error reaches the client as its status and a fixed
// reason: its words may name internal users, groups and tokens.
func TestPrivateErrorsRelayFixedReasons(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := map[bool]int{true: 403, false: 404}[strings.Contains(r.URL.Path, "secret")]
		http.Error(w, "user alice is not in group payments-admins (token=ghp_0123456789abcdefABCDEF)", status)
	}))
	defer srv.Close()
	priv, err := NewProxyFetcher(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	pats, _ := artifact.ParsePatterns("git.corp.example/*")
	r := &Router{Patterns: pats, Private: priv, Public: Off{}}
	for mod, want := range map[string]string{
		"git.corp.example/secret": "forbidden by the private source: git.corp.example/secret@v1.0.0 info",
		"git.corp.example/other":  "not found: git.corp.example/other@v1.0.0 info",
	} {
		a, err := artifact.Parse(mod + "/@v/v1.0.0.info")
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Fetch(context.Background(), a)
		var fe *httperr.Error
		if !errors.As(err, &fe) || fe.Msg != want {
			t.Fatalf("%s: %v; want the fixed reason %q", mod, err, want)
		}
		if strings.Contains(fe.Err.Error(), "ghp_") {
			t.Errorf("%s: the log detail keeps a token: %v", mod, fe.Err)
		}
	}
}
