package breaker

import (
	"errors"
	"testing"
	"time"
)

// A stall opens the breaker at once, other failures after three in a
// row; asking whether it is available (a status page) never takes the
// half-open probe, which the next request still gets.
func TestBreaker(t *testing.T) {
	b := New("store", nil)
	for range breakerThreshold - 1 {
		b.Failure(errors.New("refused"))
	}
	if !b.Allow() {
		t.Fatal("open after fewer failures than the threshold")
	}
	b.Failure(ErrStalled)
	if b.Allow() || b.Available() {
		t.Fatal("a stall did not open the breaker")
	}
	<-time.After(time.Until(b.ProbeAt()))
	for range 3 {
		if !b.Available() {
			t.Fatal("not available once the cooldown passed")
		}
	}
	if !b.Allow() {
		t.Fatal("the probe was taken by asking whether the breaker is available")
	}
	if b.Allow() {
		t.Error("a second request went through while the probe is out")
	}
	b.Success()
	if !b.Allow() || !b.Available() {
		t.Error("not closed after a success")
	}
}
