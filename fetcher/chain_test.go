package fetcher

import "testing"

func TestParseList(t *testing.T) {
	t.Parallel()
	good := map[string]int{
		"https://proxy.golang.org":                   1,
		"https://a.example,https://b.example|direct": 3,
		"https://a.example/sub/,off,https://ignored": 2,
		" off ":  1,
		"direct": 1,
	}
	for list, n := range good {
		c, err := ParseList(list, nil, Off{})
		if err != nil || c.Len() != n {
			t.Errorf("ParseList(%q) = %v entries, %v; want %d", list, c, err, n)
		}
	}
	for _, list := range []string{"", ",", "https://a,,https://b", "ftp://a", "https://", "noproxy", "https://a?x=1", "example.com"} {
		if err := CheckList(list); err == nil {
			t.Errorf("CheckList(%q) accepted", list)
		}
	}
	if _, err := ParseList("https://a.example,direct", nil, nil); err == nil {
		t.Error("ParseList accepted direct with no fetcher for it")
	}
}
