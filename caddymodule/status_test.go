package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/piraeus-go/piraeus/goproxy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// chromium finds Debian's headless Chromium, failing with how to install it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("Chromium is needed by this test: install it with `apt-get install chromium` (Debian) — .ci/run does this")
	return ""
}

// The status page after a known sequence of requests, loaded in headless
// Chromium: no console error, the figures of the sequence, a screenshot.
func TestStatusPage(t *testing.T) {
	browser := chromium(t)
	up := testenv.NewUpstream(t, hello, thing)
	db := up.VerifiedBy(t)
	up.Override("example.com/broken/@v/v1.0.0.info", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "overloaded", http.StatusInternalServerError)
	})
	base := startCaddy(t, fmt.Sprintf("goproxy %s {\n\t\tsumdb %s\n\t\tstatus\n\t\tcache {\n\t\t\tdisk %s\n\t\t}\n\t}", up.URL, db.VKey, t.TempDir()))
	get := func(p string, want int) {
		t.Helper()
		if status, body, err := testenv.Get(base + "/" + p); err != nil || status != want {
			t.Fatalf("GET %s: %d %q %v", p, status, body, err)
		}
	}
	info := testenv.EscapedPath(hello.Path, hello.Version, "info")
	zip := testenv.EscapedPath(hello.Path, hello.Version, "zip")
	get(info, 200)                                                  // miss
	get(info, 200)                                                  // hit
	get(zip, 200)                                                   // miss
	get(zip, 200)                                                   // hit
	get(zip, 200)                                                   // hit
	get(testenv.EscapedPath(thing.Path, thing.Version, "mod"), 200) // miss
	get("example.com/hello/@v/v1.9.9.info", 404)                    // miss, not counted as an answer
	get("example.com/broken/@v/v1.0.0.info", 502)                   // miss, an error row with its reason
	// The checksum database's traffic is counted apart.
	get("sumdb/"+db.Name+"/lookup/example.com/hello@v1.0.0", 200)
	get("sumdb/"+db.Name+"/lookup/example.com/hello@v1.0.0", 200)

	// The JSON says it all.
	var st goproxy.Status
	if err := json.Unmarshal(testenv.MustGet(t, base+"/-/status?format=json"), &st); err != nil {
		t.Fatal(err)
	}
	hits := st.Hits["memory"] + st.Hits["disk"]
	var reason string
	for _, f := range st.RecentFetches {
		if f.Module == "example.com/broken" {
			reason = f.Reason
		}
	}
	if reason != "upstream answered 500" {
		t.Errorf("the failed fetch's reason: %q", reason)
	}
	if st.SumDB.Hits+st.SumDB.Misses != 2 || st.SumDB.Hits == 0 {
		t.Errorf("checksum database traffic: %+v; want 2 requests, the second at least from the cache", st.SumDB)
	}
	if st.Requests != 8 || hits != 3 || st.Misses != 5 || len(st.RecentFetches) < 4 ||
		len(st.TopModules) == 0 || st.TopModules[0].Module != hello.Path || st.TopModules[0].Requests != 5 ||
		st.Verification.Route != "upstream" {
		t.Errorf("status: %+v", st)
	}

	ctx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(browser), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1000, 1400))
	defer cancel()
	ctx, cancel = chromedp.NewContext(ctx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var mu sync.Mutex
	var consoleErrors []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				consoleErrors = append(consoleErrors, fmt.Sprint(ev.Args))
			}
		case *runtime.EventExceptionThrown:
			consoleErrors = append(consoleErrors, ev.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				consoleErrors = append(consoleErrors, ev.Entry.Text+" "+ev.Entry.URL)
			}
		}
	}); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/-/status"), chromedp.WaitVisible("#hits-chart")); err != nil {
		t.Fatalf("loading the status page in Chromium: %v", err)
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("reading %s: %v", sel, err)
		}
		return s
	}
	requests, ratio, misses, failures := text("#requests"), text("#hit-ratio"), text("#misses"), text("#verify-failures")
	peak, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#rate-peak").textContent`))
	if err != nil {
		t.Fatal(err)
	}
	if peak != fmt.Sprint(slices.Max(st.PerMinute)) || !strings.Contains(text("#sumdb-traffic"), fmt.Sprintf("%d from the cache, %d fetched", st.SumDB.Hits, st.SumDB.Misses)) {
		t.Errorf("rate chart's scale %q (the busiest minute had %d); sumdb traffic %q", peak, slices.Max(st.PerMinute), text("#sumdb-traffic"))
	}
	top, fetches := text("#top-modules"), text("#fetches")
	bars, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#hits-chart rect").length`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(consoleErrors) > 0 {
		t.Errorf("console errors: %v", consoleErrors)
	}
	if !strings.HasPrefix(requests, "8") || !strings.HasPrefix(ratio, "37.5%") || strings.TrimSpace(misses) != "5" || strings.TrimSpace(failures) != "0" {
		t.Errorf("page figures: requests %q, hit ratio %q, misses %q, failures %q; want 8, 37.5%%, 5, 0", requests, ratio, misses, failures)
	}
	if !strings.Contains(top, hello.Path) || !strings.Contains(fetches, "v1.9.9") || !strings.Contains(fetches, "error: upstream answered 500") ||
		!strings.Contains(fetches, "when (UTC)") || bars != 3 {
		t.Errorf("page: top modules %q, fetches %q, %d bars", top, fetches, bars)
	}
	shotFile := filepath.Join(os.TempDir(), "piraeus-status.png")
	if dir := os.Getenv("PIRAEUS_SCREENSHOT_DIR"); dir != "" {
		shotFile = filepath.Join(dir, "piraeus-status.png")
	}
	if err := os.WriteFile(shotFile, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot of the status page: %s (%d bytes)", shotFile, len(shot))
}
