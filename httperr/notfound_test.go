package httperr

import (
	"fmt"
	"net/http"
	"sync"
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

// A reload closes a proxy's cache while its detached fetches still write
// to it: writes racing Close, and after it, are forgotten, never a panic
// (ristretto's own Close makes a later write a send on a closed channel).
func TestNotFoundCacheClosedWhileWritten(t *testing.T) {
	t.Parallel()
	nf := &Error{Status: 404, Msg: "not found"}
	for round := range 300 {
		c, err := NewNotFoundCache(64, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 20 {
					key := fmt.Sprintf("k%d-%d-%d", round, w, i)
					c.Put(key, nf)
					c.Get(key)
					c.Del(key)
				}
			}()
		}
		c.Close()
		wg.Wait()
		c.Put("after", nf)
		if _, ok := c.Get("after"); ok {
			t.Fatal("a closed cache remembered a write")
		}
		c.Close()
	}
}
