package httperr

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestOneLine(t *testing.T) {
	for _, tt := range []struct {
		in   string
		max  int
		want string
	}{
		{"  not found: x \nsecond line", 100, "not found: x"},
		{"\n\nbad\x00 \x1b[31mred\x1b[0m\r\n", 100, "bad [31mred[0m"},
		{"0123456789", 4, "0123"},
		{strings.Repeat("é", 10), 5, "éé"}, // 2 bytes each: cut before a broken one
		{"a\xffb", 10, "ab"},
		{"", 10, ""},
	} {
		got := OneLine(tt.in, tt.max)
		if got != tt.want || !utf8.ValidString(got) || len(got) > tt.max {
			t.Errorf("OneLine(%q, %d) = %q; want %q", tt.in, tt.max, got, tt.want)
		}
	}
}
