package artifact

import (
	"strings"
	"testing"
)

func TestCheckContent(t *testing.T) {
	t.Parallel()
	a := func(p string) Artifact {
		t.Helper()
		x, err := Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	for _, c := range []struct {
		path, data, err string
	}{
		{"example.com/m/@v/v1.0.0.info", `{"Version":"v1.0.0","Time":"2024-01-01T00:00:00Z"}`, ""},
		{"example.com/m/@v/v1.0.0.info", `{"Version":"v1.0.1"}`, "answer is for version"},
		{"example.com/m/@v/v1.0.0.info", `{"Version":"1.0"}`, "not canonical"},
		{"example.com/m/@v/v1.0.0.info", `<html>`, "not a JSON version info"},
		{"example.com/m/@latest", `{"Version":"v2.0.0"}`, "invalid version"},
		{"example.com/m/@v/list", "v1.0.0\n\xff\n", "not text"},
		{"example.com/m/@v/v1.0.0.mod", "module example.com/m\n", ""},
		{"example.com/m/@v/v1.0.0.mod", "module example.com/m\nrequire (\n", "does not parse"},
		{"example.com/m/@v/v1.0.0.zip", "PK", "checked from its file"},
	} {
		err := CheckContent(a(c.path), []byte(c.data))
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s %q: %v", c.path, c.data, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s %q: %v; want an error with %q", c.path, c.data, err, c.err)
		}
	}
	if err := RequireModuleLine([]byte("go 1.21\n")); err == nil {
		t.Error("a go.mod without a module line passed")
	}
}

func TestFilterList(t *testing.T) {
	t.Parallel()
	got := string(FilterList("example.com/m/v2", []byte("v2.0.0\nv1.0.0\nv2.0.0\nnot-a-version\n v2.1.0 2024-01-01T00:00:00Z\n\nv2.2\n")))
	if want := "v2.0.0\nv2.1.0\n"; got != want {
		t.Errorf("FilterList = %q; want %q", got, want)
	}
}
