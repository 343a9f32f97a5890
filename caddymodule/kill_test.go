package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/piraeus-go/piraeus/goproxy"
	"github.com/piraeus-go/piraeus/internal/testenv"
)

// runCaddyChild runs Caddy's own main (what bin/caddy runs) with the
// arguments this test binary was started with, when a test started it as
// a child Caddy (PIRAEUS_TEST_CADDY=1).
func runCaddyChild() {
	os.Args = append([]string{"caddy"}, os.Args[1:]...)
	caddycmd.Main()
	os.Exit(0)
}

// childCaddy is a Caddy process: this test binary running Caddy's main on
// a Caddyfile, as bin/caddy would.
type childCaddy struct {
	cmd  *exec.Cmd
	base string
	done chan struct{}
}

func startChildCaddy(t *testing.T, caddyfile, base string) *childCaddy {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "PIRAEUS_TEST_CADDY=1")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childCaddy{cmd: cmd, base: base, done: make(chan struct{})}
	go func() { cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-c.done })
	for range 300 { // up to 30 s: a race-instrumented Caddy starts slowly
		select {
		case <-c.done:
			t.Fatalf("caddy exited at start: %v\n%s", cmd.ProcessState, logs.String())
		default:
		}
		if status, _, err := testenv.Get(base + "/healthz"); err == nil && status == 200 {
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("caddy did not answer /healthz:\n%s", logs.String())
	return nil
}

func (c *childCaddy) kill() {
	c.cmd.Process.Kill()
	<-c.done
}

// stop asks Caddy to shut down gracefully (SIGINT) and waits for it.
func (c *childCaddy) stop(t *testing.T) {
	t.Helper()
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		t.Fatal("caddy did not stop within a minute of SIGINT")
	}
}

// killGraph is a generated graph of modules in three levels: roots
// required by the main module, each requiring a few of the next level,
// with zips from a few KiB to 2 MiB; verified by a checksum database.
// bigs of the leaves have zips of 24 MiB (multipart uploads to a bucket).
func killGraph(t *testing.T, rng *rand.Rand, bigs int) (*testenv.Upstream, *testenv.SumDB, string) {
	up := testenv.NewUpstream(t)
	zips := t.TempDir()
	levels := []int{12, 40, 100}
	var paths [][]string
	for l, n := range levels {
		paths = append(paths, nil)
		for i := range n {
			paths[l] = append(paths[l], fmt.Sprintf("example.com/kill/l%d/m%02d", l, i))
		}
	}
	for l := len(levels) - 1; l >= 0; l-- {
		for _, p := range paths[l] {
			gomod := "module " + p + "\n\ngo 1.21\n"
			if l+1 < len(levels) {
				reqs := map[string]bool{}
				for range 1 + rng.IntN(3) {
					reqs["\t"+paths[l+1][rng.IntN(len(paths[l+1]))]+" v1.0.0"] = true
				}
				gomod += "\nrequire (\n" + strings.Join(slices.Sorted(maps.Keys(reqs)), "\n") + "\n)\n"
			}
			m := testenv.Module{Path: p, Version: "v1.0.0", GoMod: gomod}
			size := int64(4<<10 + rng.IntN(60<<10))
			if rng.IntN(8) == 0 {
				size = int64(512<<10 + rng.IntN(3<<19))
			}
			if l == 0 && bigs > 0 { // a root: surely in the graph
				size, bigs = 24<<20, bigs-1
			}
			up.AddBigZip(m, testenv.WriteBigZip(t, zips, m, size))
		}
	}
	db := up.VerifiedBy(t)
	main := t.TempDir()
	gomod := "module example.com/killed\n\ngo 1.21\n\nrequire (\n"
	for _, p := range paths[0] {
		gomod += "\t" + p + " v1.0.0\n"
	}
	if err := os.WriteFile(filepath.Join(main, "go.mod"), []byte(gomod+")\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return up, db, main
}

// corrupt are what the go command says when it was served wrong bytes or
// a wrong "not found", as opposed to a connection that ended or a 5xx.
var corrupt = []string{"SECURITY ERROR", "checksum mismatch", "not a valid zip", "malformed", "invalid character",
	"unexpected end of JSON", "404 Not Found", "410 Gone"}

// Caddy killed with SIGKILL at random moments of a cold go mod download
// all, restarted on the same disk and Redis each time, never serves a
// wrong byte; at the end the whole graph downloads and verifies, no temp
// file of a killed process is left, and the disk tier's count agrees with
// the files on disk. PIRAEUS_KILL_SEED replays a run.
func TestKilledAtRandom(t *testing.T) {
	testenv.Slow(t)
	killedAtRandom(t, nil)
}

// The same with a bucket as the tier of record, and the S3 server itself
// killed and restarted during half of the runs, while multipart uploads of
// 24 MiB zips are under way.
func TestKilledAtRandomBucket(t *testing.T) {
	testenv.Slow(t)
	killedAtRandom(t, testenv.StartS3(t))
}

func killedAtRandom(t *testing.T, s3 *testenv.S3) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PIRAEUS_KILL_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (PIRAEUS_KILL_SEED=%[1]d replays this run)", seed)
	rng := rand.New(rand.NewPCG(seed, 27))
	bigs := 0
	if s3 != nil {
		bigs = 2
	}
	up, db, main := killGraph(t, rng, bigs)
	up.SetDelay(60 * time.Millisecond) // fetches are in flight when it dies
	r := testenv.StartRedis(t)
	disk, spool := t.TempDir(), t.TempDir()
	store := "disk " + disk
	if s3 != nil {
		store = fmt.Sprintf("s3 {\n\t\t\t\tendpoint %s\n\t\t\t\tbucket piraeus\n\t\t\t\taccess_key %s\n\t\t\t\tsecret_key %s\n\t\t\t\tspool_dir %s\n\t\t\t\tabandoned_uploads 1s\n\t\t\t}",
			s3.Endpoint, s3.AccessKey, s3.SecretKey, spool)
	}
	port := testenv.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	caddyfile := filepath.Join(t.TempDir(), "Caddyfile")
	config := fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %s
}
%s {
	bind 127.0.0.1
	goproxy %s {
		sumdb %s
		fleet_key %s
		health
		status
		cache {
			memory 16MiB
			redis %s {
				lock_ttl 1s
			}
			%s
		}
	}
}
`, t.TempDir(), base, up.URL, db.VKey, testenv.FleetKey, r.URL(), store)
	if err := os.WriteFile(caddyfile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	goEnv := func() []string {
		return append(testenv.GoEnv(t, base), "GOSUMDB="+db.VKey, "GONOSUMDB=", "GOFLAGS=-mod=mod -modcacherw")
	}
	const kills = 30
	midFetch, s3Kills := 0, 0
	for k := range kills {
		c := startChildCaddy(t, caddyfile, base)
		before := up.Total()
		ctx, cancel := context.WithCancel(context.Background())
		gocmd := exec.CommandContext(ctx, "go", "mod", "download", "all")
		gocmd.Dir, gocmd.Env = main, goEnv()
		var out strings.Builder
		gocmd.Stdout, gocmd.Stderr = &out, &out
		if err := gocmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- gocmd.Wait() }()
		after := time.Duration(30+rng.IntN(700)) * time.Millisecond
		s3Killed := make(chan bool, 1)
		switch {
		case s3 != nil && k < bigs:
			// The first runs end when a multipart upload is under way
			// (the big zips are still missing from the bucket): the S3
			// server is killed in it, and Caddy at once.
			after = 2 * time.Minute
			go func() {
				killed := killDuringUpload(ctx, s3, after)
				if killed {
					c.kill()
				}
				s3Killed <- killed
			}()
		case s3 != nil && rng.IntN(2) == 0:
			// Killed once a multipart upload is under way, or at the end.
			go func() { s3Killed <- killDuringUpload(ctx, s3, after) }()
		default:
			s3Killed <- false
		}
		var err error
		select {
		case <-time.After(after):
			if up.Total() > before && up.InFlight() > 0 {
				midFetch++
			}
			c.kill()
			err = <-exited
		case err = <-exited:
			c.kill()
		}
		cancel()
		if <-s3Killed {
			s3Kills++
		}
		if s3 != nil {
			s3.Stop() // if it was not killed, it stops as a crash would
			s3.Start()
		}
		if err != nil {
			for _, line := range strings.Split(out.String(), "\n") {
				for _, bad := range corrupt {
					if strings.Contains(line, bad) {
						t.Fatalf("kill %d (%v in): the go command was served bad bytes: %s\n%s", k, after, line, out.String())
					}
				}
			}
		}
	}
	t.Logf("%d kills, %d of them while upstream fetches were in flight, %d of the S3 server during a multipart upload; %d upstream requests", kills, midFetch, s3Kills, up.Total())

	if s3 != nil && s3Kills == 0 {
		t.Error("the S3 server was never killed during a multipart upload")
	}
	// Restarted once more: the whole graph, from a fresh module cache.
	c := startChildCaddy(t, caddyfile, base)
	env := goEnv()
	if out, err := testenv.TryGo(t, main, env, "mod", "download", "all"); err != nil {
		t.Fatalf("go mod download all after %d kills: %v\n%s", kills, err, out)
	}
	if out, err := testenv.TryGo(t, main, env, "mod", "verify"); err != nil || !strings.Contains(out, "all modules verified") {
		t.Fatalf("go mod verify after %d kills: %v\n%s", kills, err, out)
	}
	if s3 == nil {
		checkDiskCount(t, base, disk, kills)
	} else {
		// What the killed edges left in the bucket is aborted by the next
		// one (abandoned_uploads 1s), within a few seconds.
		ups := incompleteUploads(t.Context(), s3)
		for range 100 {
			if len(ups) == 0 {
				break
			}
			c.kill()
			c = startChildCaddy(t, caddyfile, base)
			ups = incompleteUploads(t.Context(), s3)
		}
		if len(ups) > 0 {
			t.Errorf("%d incomplete multipart uploads left in the bucket after 100 restarts", len(ups))
		}
	}
	// Temp files of the killed processes were swept; the last one's own
	// go with it.
	c.stop(t)
	tmp := filepath.Join(disk, "tmp")
	if s3 != nil {
		tmp = spool
	}
	left, _ := os.ReadDir(tmp)
	var names []string
	for _, e := range left {
		names = append(names, e.Name())
	}
	if len(names) > 0 {
		t.Errorf("temp files left after %d kills and a graceful stop: %v", kills, names)
	}
}

// incompleteUploads are the multipart uploads begun and not completed
// in the bucket.
func incompleteUploads(ctx context.Context, s3 *testenv.S3) []minio.ObjectMultipartInfo {
	cl, err := minio.New(strings.TrimPrefix(s3.Endpoint, "http://"), &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, "")})
	if err != nil {
		return nil
	}
	var ups []minio.ObjectMultipartInfo
	for u := range cl.ListIncompleteUploads(ctx, "piraeus", "", true) {
		if u.Err == nil {
			ups = append(ups, u)
		}
	}
	return ups
}

// killDuringUpload kills the S3 server as soon as a multipart upload is
// under way (true: versitygw keeps its parts under the bucket's
// .sgwtmp/multipart), or after within at the latest (false).
func killDuringUpload(ctx context.Context, s3 *testenv.S3, within time.Duration) bool {
	defer s3.Stop()
	dir := filepath.Join(s3.Root, "piraeus", ".sgwtmp", "multipart")
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if ups, _ := os.ReadDir(dir); len(ups) > 0 {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// checkDiskCount checks that the disk tier's count is what is on disk.
func checkDiskCount(t *testing.T, base, disk string, kills int) {
	t.Helper()
	// The small store writes behind: its last batch may still be in
	// flight when the client is done, and neither the tier's count nor
	// the database shows it until it is written (a few milliseconds,
	// longer on a loaded disk). So the check is made again, a bounded
	// number of times, until the two agree.
	var says, on [2]int64
	for try := 0; try < 200; try++ {
		for _, tier := range status(t, base).Tiers {
			if tier.Name == "disk" {
				says = [2]int64{tier.Objects, tier.Bytes}
			}
		}
		if on[0], on[1] = testenv.DiskTierFiles(t, disk); says == on {
			t.Logf("disk tier after %d kills: %d objects, %d bytes, as on disk", kills, says[0], says[1])
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("disk tier says %d objects, %d bytes; on disk: %d objects, %d bytes", says[0], says[1], on[0], on[1])
}

func status(t *testing.T, base string) goproxy.Status {
	t.Helper()
	resp, err := http.Get(base + "/-/status?format=json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st goproxy.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("status JSON: %v", err)
	}
	return st
}
