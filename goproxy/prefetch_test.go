package goproxy

import (
	"net/http"
	"strings"
	"testing"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// chain returns modules example.com/chain/m0 .. m<n-1>, each requiring the
// next, and extra requirements of m0.
func chain(n int, extra ...string) []testenv.Module {
	var mods []testenv.Module
	for i := range n {
		m := testenv.Module{Path: "example.com/chain/m" + string(rune('0'+i)), Version: "v1.0.0"}
		m.GoMod = "module " + m.Path + "\n\ngo 1.16\n"
		var req []string
		if i+1 < n {
			req = append(req, "example.com/chain/m"+string(rune('0'+i+1))+" v1.0.0")
		}
		if i == 0 {
			req = append(req, extra...)
		}
		if len(req) > 0 {
			m.GoMod += "\nrequire (\n\t" + strings.Join(req, "\n\t") + "\n)\n"
		}
		mods = append(mods, m)
	}
	return mods
}

// A fetched .mod starts the prefetch of its requirements' .mod files,
// level by level down to the depth limit, in the background: the request
// that triggered it is answered while a prefetch is still blocked; each
// artifact is fetched once, and a client asking later finds it cached and
// counts as a prefetch hit. Private modules (in any letter case) are not
// prefetched.
func TestPrefetchMod(t *testing.T) {
	t.Parallel()
	mods := chain(5, "github.com/Acme/Secret v1.0.0", "example.com/gone v1.0.0")
	up := testenv.NewUpstream(t, mods...)
	up.Add(testenv.Module{Path: "github.com/Acme/Secret", Version: "v1.0.0"})
	release := make(chan struct{})
	m1mod := path(mods[1], "mod")
	up.Override(m1mod, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Write(mods[1].Mod())
	})
	e := newEnv(t, up, options{private: "github.com/acme/*", prefetch: PrefetchOptions{Mode: "mod", Depth: 3}})

	// m0's answer does not wait for the prefetch of m1, which is blocked.
	e.get(path(mods[0], "mod"), 200)
	up.WaitTotal(t, 2) // m0.mod, and m1.mod arrived
	close(release)
	e.proxy.prefetch.quiesce()

	for i, m := range mods {
		want := 0
		if i <= 3 { // m0 asked for; m1..m3 within depth 3
			want = 1
		}
		if n := up.Requests(path(m, "mod")); n != want {
			t.Errorf("%s.mod: %d upstream requests; want %d", m.Path, n, want)
		}
		if n := up.Requests(path(m, "zip")) + up.Requests(path(m, "info")); n != 0 {
			t.Errorf("%s: .info or .zip prefetched in mod mode", m.Path)
		}
	}
	for _, p := range up.Paths() {
		if strings.Contains(strings.ToLower(p), "acme") {
			t.Errorf("a private module reached the public upstream: %s", p)
		}
	}
	st := e.proxy.PrefetchStats()
	if st.Fetched != 3 || st.Used != 0 {
		t.Errorf("prefetch stats %+v; want 3 fetched, none used yet", st)
	}

	// The go command walking the graph finds what was prefetched.
	before := up.Total()
	for _, m := range mods[1:4] {
		e.get(path(m, "mod"), 200)
	}
	if n := up.Total() - before; n != 0 {
		t.Errorf("%d upstream requests for prefetched .mod files", n)
	}
	if st := e.proxy.PrefetchStats(); st.Used != 3 {
		t.Errorf("prefetch stats %+v; want 3 used", st)
	}
	// m3, asked for, was prefetched at depth 3: asking for it starts no
	// new prefetch (it was fetched before), so m4 is still not fetched.
	if n := up.Requests(path(mods[4], "mod")); n != 0 {
		t.Errorf("m4.mod fetched beyond the depth limit")
	}
	// A missing requirement was tried once and is remembered as missing.
	if n := up.Requests(testenv.EscapedPath("example.com/gone", "v1.0.0", "mod")); n != 1 {
		t.Errorf("missing requirement: %d upstream requests; want 1", n)
	}
}

// In zip mode the requirements' .info and .zip come too, verified like any
// fetch, within the budget of bytes no client asked for.
func TestPrefetchZipAndBudget(t *testing.T) {
	t.Parallel()
	mods := chain(3)
	up := testenv.NewUpstream(t, mods...)
	db := up.VerifiedBy(t)
	e := newEnv(t, up, options{sumdb: db, prefetch: PrefetchOptions{Mode: "zip"}})
	e.get(path(mods[0], "mod"), 200)
	e.proxy.prefetch.quiesce()
	for _, m := range mods[1:] {
		for _, kind := range []string{"mod", "info", "zip"} {
			if n := up.Requests(path(m, kind)); n != 1 {
				t.Errorf("%s.%s: %d upstream requests; want 1", m.Path, kind, n)
			}
		}
	}
	if n := up.Requests(path(mods[0], "zip")); n != 0 {
		t.Errorf("the requested module's own zip was prefetched")
	}
	before := up.Total()
	e.get(path(mods[2], "zip"), 200)
	if up.Total() != before {
		t.Error("a prefetched zip was fetched again")
	}

	// A budget of one byte stops prefetching after the first artifact
	// that no client asked for.
	up2 := testenv.NewUpstream(t, chain(4)...)
	e2 := newEnv(t, up2, options{prefetch: PrefetchOptions{Mode: "zip", Workers: 1, MaxBytes: 1}})
	e2.get(path(chain(4)[0], "mod"), 200)
	e2.proxy.prefetch.quiesce()
	if st := e2.proxy.PrefetchStats(); st.Fetched != 1 || st.Skipped == 0 {
		t.Errorf("prefetch stats with a 1-byte budget: %+v; want 1 fetched, the rest skipped", st)
	}
}

// A fetch that starts just after another one for the same artifact ended
// (the requester looked in the cache before that one stored its result)
// finds the result and asks the upstream nothing: no artifact is fetched
// twice, and no missing one asked for twice.
func TestFetchAfterFetchEndedFindsItsResult(t *testing.T) {
	t.Parallel()
	up := testenv.NewUpstream(t, modA)
	e := newEnv(t, up, options{})
	e.get(path(modA, "zip"), 200)
	e.get(testenv.EscapedPath("example.com/missing", "v1.0.0", "mod"), 404)
	before := up.Total()
	a := mustArtifact(t, path(modA, "zip"))
	obj, err := e.proxy.collapse(t.Context(), a) // as a requester that missed would
	if err != nil {
		t.Fatal(err)
	}
	obj.Close()
	if _, err := e.proxy.collapse(t.Context(), mustArtifact(t, testenv.EscapedPath("example.com/missing", "v1.0.0", "mod"))); err == nil {
		t.Error("a remembered missing module was found")
	}
	if n := up.Total() - before; n != 0 {
		t.Errorf("%d upstream requests for what a fetch that had ended already answered", n)
	}
}

func mustArtifact(t *testing.T, p string) artifact.Artifact {
	t.Helper()
	a, err := artifact.Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
