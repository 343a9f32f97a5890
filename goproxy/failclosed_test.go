package goproxy

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/piraeus-go/piraeus/internal/testenv"
)

// tampered serves modA's zip and modA11's go.mod altered, as an attacker
// between the mirror and its upstream would; the checksum database knows
// the genuine ones.
func tampered(t *testing.T, up *testenv.Upstream) (zipPath, modPath string) {
	evil := testenv.Module{Path: modA.Path, Version: modA.Version, Files: map[string]string{"a.go": "package a\n\nfunc init() { panic(\"pwned\") }\n"}}
	evilZip := evil.Zip(t)
	zipPath, modPath = path(modA, "zip"), path(modA11, "mod")
	up.Override(zipPath, func(w http.ResponseWriter, r *http.Request) { w.Write(evilZip) })
	up.Override(modPath, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("module example.com/a\n\nrequire example.com/evil v1.0.0\n"))
	})
	return zipPath, modPath
}

// assertRefused checks that the tampered artifacts get a 502 and that no
// tier holds them; mismatch says the database must have been consulted.
func assertRefused(t *testing.T, e *env, mismatch bool, paths ...string) {
	t.Helper()
	for _, p := range paths {
		resp, body := e.do("GET", p)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("tampered %s: %d %q; want 502", p, resp.StatusCode, body)
		}
		if mismatch && !strings.Contains(string(body), "checksum mismatch") {
			t.Errorf("tampered %s: %q; want a checksum mismatch", p, body)
		}
		assertNotCached(t, e, p)
	}
}

// The upstream's /sumdb/<name>/supported failing, stalling or being probed
// by a client that hangs up never turns verification off: tampered
// modules are refused (502) and never stored, before and after.
func TestVerificationFailsClosed(t *testing.T) {
	t.Parallel()
	t.Run("supported fails once", func(t *testing.T) {
		db := testenv.NewSumDB(t, sumdbName)
		up := testenv.NewUpstream(t, modA, modA11)
		var calls atomic.Int32
		up.Override("sumdb/"+sumdbName+"/supported", func(w http.ResponseWriter, r *http.Request) {
			if calls.Add(1) == 1 {
				http.Error(w, "overloaded", http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusOK)
		})
		zipPath, modPath := tampered(t, up)
		e := newEnv(t, up, options{memory: true, sumdb: db, sumdbProbe: true})
		assertRefused(t, e, false, zipPath) // the probe failed: nothing can be verified
		assertRefused(t, e, true, modPath)  // probed again, through the upstream
		assertRefused(t, e, true, zipPath)
		e.get(path(modA, "mod"), 200)
		e.get(path(modA11, "zip"), 200)
		if got := e.db.Route(); got != "upstream" {
			t.Errorf("route %q; want upstream", got)
		}
	})
	t.Run("supported stalls", func(t *testing.T) {
		db := testenv.NewSumDB(t, sumdbName)
		up := testenv.NewUpstream(t, modA, modA11)
		release := make(chan struct{})
		up.Override("sumdb/"+sumdbName+"/supported", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			w.WriteHeader(http.StatusOK)
		})
		zipPath, modPath := tampered(t, up)
		e := newEnv(t, up, options{memory: true, sumdb: db, sumdbProbe: true, sumdbTimeout: 200 * time.Millisecond})
		assertRefused(t, e, false, zipPath, modPath)
		close(release)
		assertRefused(t, e, true, zipPath, modPath)
		e.get(path(modA, "mod"), 200)
	})
	t.Run("client hangs up during the probe", func(t *testing.T) {
		db := testenv.NewSumDB(t, sumdbName)
		up := testenv.NewUpstream(t, modA, modA11)
		arrived, release := make(chan struct{}), make(chan struct{})
		var once atomic.Bool
		up.Override("sumdb/"+sumdbName+"/supported", func(w http.ResponseWriter, r *http.Request) {
			if once.CompareAndSwap(false, true) {
				close(arrived)
				<-release
			}
			w.WriteHeader(http.StatusOK)
		})
		zipPath, modPath := tampered(t, up)
		e := newEnv(t, up, options{memory: true, sumdb: db, sumdbProbe: true})
		for _, p := range []string{"sumdb/" + sumdbName + "/lookup/example.com/a@v1.0.0", zipPath} {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/"+p, nil)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			if p == zipPath {
				cancel()
				<-done
				break
			}
			<-arrived // the probe runs; its client goes away
			cancel()
			<-done
		}
		close(release)
		assertRefused(t, e, true, zipPath, modPath)
		e.get(path(modA, "mod"), 200)
		if got := e.db.Route(); got != "upstream" {
			t.Errorf("route %q after a client hung up; want upstream", got)
		}
	})
	t.Run("upstream does not proxy the database", func(t *testing.T) {
		db := testenv.NewSumDB(t, sumdbName)
		up := testenv.NewUpstream(t, modA, modA11)
		up.Override("sumdb/"+sumdbName+"/supported", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "not found", http.StatusNotFound)
		})
		zipPath, modPath := tampered(t, up)
		e := newEnv(t, up, options{memory: true, sumdb: db, sumdbProbe: true})
		assertRefused(t, e, true, zipPath, modPath)
		e.get(path(modA, "mod"), 200)
		if got := e.db.Route(); got != "direct" {
			t.Errorf("route %q; want direct (the database itself)", got)
		}
		for _, p := range up.Paths() {
			if strings.HasPrefix(p, "sumdb/") && !strings.HasSuffix(p, "/supported") {
				t.Errorf("the upstream that does not proxy the database was asked for %s", p)
			}
		}
	})
}

// A healthy start logs nothing at error level but what is stored
// unverified: the first contact with the checksum database is at info
// level (an operator alerting on errors is not paged at every start),
// and every module stored unverified is an error.
func TestVerificationLoggedAtErrorLevel(t *testing.T) {
	t.Parallel()
	core, logs := observer.New(zapcore.DebugLevel)
	db := testenv.NewSumDB(t, sumdbName)
	up := testenv.NewUpstream(t, modA, modA11)
	private := testenv.Module{Path: "corp.example/internal/x", Version: "v1.0.0"}
	up.Add(private)
	e := newEnv(t, up, options{sumdb: db, sumdbProbe: true, noVerify: "corp.example", logger: zap.New(core)})
	e.get(path(modA, "zip"), 200)
	e.get(path(private, "mod"), 200)
	var state, unverified bool
	for _, entry := range logs.All() {
		f := entry.ContextMap()
		switch {
		case strings.Contains(entry.Message, "verification state") && f["sumdb"] == sumdbName:
			state = entry.Level == zapcore.InfoLevel
		case strings.Contains(entry.Message, "without checksum verification") && f["module"] == private.Path && f["reason"] == "verify_off":
			unverified = entry.Level == zapcore.ErrorLevel
		case entry.Level >= zapcore.ErrorLevel:
			t.Errorf("a healthy start logged at error level: %s %v", entry.Message, f)
		}
	}
	if !state || !unverified {
		t.Errorf("first contact at info level %v, unverified module at error level %v; want both\n%v", state, unverified, logs.All())
	}
}
