package httperr

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestNotFoundCache(t *testing.T) {
	const entries = 100
	n, err := NewNotFoundCache(entries, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	n.Put("a", &Error{Status: http.StatusNotFound, Msg: "not found"})
	n.Put("b", &Error{Status: http.StatusBadGateway, Msg: "upstream failed"})
	if e, ok := n.Get("a"); !ok || e.Status != http.StatusNotFound {
		t.Errorf("a: %v, %v; want the 404 just put", e, ok)
	}
	if _, ok := n.Get("b"); ok {
		t.Error("a 502 was remembered as not found")
	}
	n.Del("a")
	if _, ok := n.Get("a"); ok {
		t.Error("a deleted answer is still remembered")
	}
	// A flood of distinct missing paths keeps at most entries of them.
	const flood = 20 * entries
	for i := range flood {
		n.Put(fmt.Sprint("flood/", i), &Error{Status: http.StatusGone, Msg: "gone"})
	}
	kept := 0
	for i := range flood {
		if _, ok := n.Get(fmt.Sprint("flood/", i)); ok {
			kept++
		}
	}
	if kept == 0 || kept > entries {
		t.Errorf("%d of %d flooded answers kept; want between 1 and %d", kept, flood, entries)
	}
}
