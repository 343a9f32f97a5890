package goproxy

import (
	"strings"
	"testing"
	"time"
)

// Each rule on a value lives in Options.Check: the Caddy module and the
// constructors behind New rely on it, so it must refuse what they no
// longer check.
func TestOptionsCheckLimits(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{ListTTL: -time.Second}, "durations must not be negative"},
		{Options{SumDBTimeout: -1}, "durations must not be negative"},
		{Options{RedirectTTL: 8 * 24 * time.Hour}, "at most 7 days"},
		{Options{SpoolMax: -1}, "must not be negative"},
		{Options{RedirectLarge: -1}, "must not be negative"},
		{Options{Prefetch: PrefetchOptions{Mode: "all"}}, `prefetch mode "all"`},
		{Options{Prefetch: PrefetchOptions{Mode: "mod", FanOut: -1}}, "prefetch limits must not be negative"},
		{Options{SumDBOff: true, SumDBs: []SumDBOptions{{Name: DefaultSumDB}}}, "sumdb off and a sumdb given"},
	} {
		err := c.o.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Check(%+v) = %v; want an error with %q", c.o, err, c.want)
		}
	}
	if err := (Options{Prefetch: PrefetchOptions{Mode: "zip"}, RedirectTTL: time.Hour}).Check(); err != nil {
		t.Errorf("good options refused: %v", err)
	}
}
