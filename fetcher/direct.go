package fetcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/piraeus-go/piraeus/artifact"
	"github.com/piraeus-go/piraeus/httperr"
	"github.com/piraeus-go/piraeus/internal/fslock"
)

// DirectConfig configures a DirectFetcher.
type DirectConfig struct {
	Name    string        // "public" or "private": which pool, for sandbox names
	Workers int           // concurrent go commands; default 4
	PerHost int           // concurrent go commands for one host; default 2
	Timeout time.Duration // bound on one go command; default 10m
	// StallTimeout ends a git transfer that moves less than 1 KiB/s for
	// this long (git's http.lowSpeedTime) and bounds an SSH connect;
	// default 30s.
	StallTimeout time.Duration
	GoBinary     string   // default: "go" on PATH
	Env          []string // extra KEY=VALUE for the go command and git
	// Netrc is the contents of a netrc file: credentials. Give it only to
	// the fetcher of private modules.
	Netrc     string
	GitConfig string // path of a git config file (e.g. url.insteadOf rules)
	// SandboxDir holds the fetches' sandboxes (each a GOPATH, module cache
	// and HOME, with the netrc); default: piraeus-direct in the system's
	// temp directory. Sandboxes left by a dead process are removed when a
	// DirectFetcher opens it.
	SandboxDir string
}

// DirectFetcher fetches from version control by running the go command
// with GOPROXY=direct in a throw-away sandbox per fetch, as the go command
// itself would. A sandbox is locked by its owner while in use and always
// removed; a go command that times out is killed with every process it
// started. Fetches wait for one of Workers slots and for one of PerHost
// slots of their module's host, so a host that never answers holds at
// most PerHost workers.
type DirectFetcher struct {
	cfg   DirectConfig
	slots chan struct{}

	mu    sync.Mutex
	hosts map[string]chan struct{}
}

// NewDirectFetcher returns a DirectFetcher, removing sandboxes that a dead
// process left in cfg.SandboxDir.
func NewDirectFetcher(cfg DirectConfig) (*DirectFetcher, error) {
	if cfg.Name == "" {
		cfg.Name = "public"
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.PerHost <= 0 {
		cfg.PerHost = 2
	}
	cfg.PerHost = min(cfg.PerHost, cfg.Workers)
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 30 * time.Second
	}
	if cfg.GoBinary == "" {
		cfg.GoBinary = "go"
	}
	if cfg.SandboxDir == "" {
		cfg.SandboxDir = filepath.Join(os.TempDir(), "piraeus-direct")
	}
	for _, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("direct: env %q is not KEY=VALUE", kv)
		}
	}
	if err := os.MkdirAll(cfg.SandboxDir, 0o700); err != nil {
		return nil, fmt.Errorf("direct: sandbox directory: %w", err)
	}
	sweepSandboxes(cfg.SandboxDir)
	return &DirectFetcher{cfg: cfg, slots: make(chan struct{}, cfg.Workers), hosts: map[string]chan struct{}{}}, nil
}

// sandboxLock is the file in a sandbox that its owner holds locked.
const sandboxLock = ".owner"

// sweepSandboxes removes the sandboxes in dir that no live process holds.
// A sandbox without its lock file was being made when its owner died.
func sweepSandboxes(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !e.IsDir() || !strings.HasPrefix(e.Name(), "sandbox-") {
			continue
		}
		lock := filepath.Join(p, sandboxLock)
		if _, err := os.Stat(lock); err == nil && !fslock.Orphaned(lock) {
			continue
		} else if err != nil {
			if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < time.Minute {
				continue // just made, its lock is coming
			}
		}
		removeSandbox(p, nil)
	}
}

// sandbox is one fetch's private directory, locked by this process.
type sandbox struct {
	dir  string
	lock *os.File
}

func (d *DirectFetcher) newSandbox() (*sandbox, error) {
	dir, err := os.MkdirTemp(d.cfg.SandboxDir, "sandbox-"+d.cfg.Name+"-")
	if err != nil && errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(d.cfg.SandboxDir, 0o700); err == nil {
			dir, err = os.MkdirTemp(d.cfg.SandboxDir, "sandbox-"+d.cfg.Name+"-")
		}
	}
	if err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(dir, sandboxLock), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		if err = fslock.TryLock(lock); err != nil {
			lock.Close()
		}
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &sandbox{dir: dir, lock: lock}, nil
}

// remove deletes the sandbox, then lets go of its lock.
func (s *sandbox) remove() { removeSandbox(s.dir, s.lock) }

// acquire waits for a worker slot and a slot of the module's host.
func (d *DirectFetcher) acquire(ctx context.Context, mod string) (release func(), err error) {
	host, _, _ := strings.Cut(strings.ToLower(mod), "/")
	d.mu.Lock()
	hs := d.hosts[host]
	if hs == nil {
		hs = make(chan struct{}, d.cfg.PerHost)
		d.hosts[host] = hs
	}
	d.mu.Unlock()
	select {
	case hs <- struct{}{}:
	case <-ctx.Done():
		return nil, TransportError(ctx, "direct", ctx.Err())
	}
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		<-hs
		return nil, TransportError(ctx, "direct", ctx.Err())
	}
	return func() {
		<-d.slots
		d.mu.Lock()
		<-hs
		if len(hs) == 0 && d.hosts[host] == hs {
			delete(d.hosts, host) // the map holds only busy hosts
		}
		d.mu.Unlock()
	}, nil
}

// Fetch runs the go command for a. A zip is streamed from the sandbox's
// module cache, and the sandbox is removed when the body is closed.
func (d *DirectFetcher) Fetch(ctx context.Context, a artifact.Artifact) (*Response, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	release, err := d.acquire(ctx, a.Module)
	if err != nil {
		return nil, err
	}
	defer release()
	sb, err := d.newSandbox()
	if err != nil {
		return nil, &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
	}
	keep := false
	defer func() {
		if !keep {
			sb.remove()
		}
	}()

	var out goOutput
	run := func(args ...string) error { return d.run(ctx, sb.dir, a.Module, &out, args...) }
	switch a.Kind {
	case artifact.List:
		err = run("list", "-m", "-e", "-json", "-versions", a.Module)
		if err == nil {
			var b bytes.Buffer
			for _, v := range out.Versions {
				b.WriteString(v + "\n")
			}
			return bytesResponse(b.Bytes()), nil
		}
	case artifact.Latest, artifact.Info:
		query := "latest"
		if a.Kind == artifact.Info {
			query = a.Version
		}
		err = run("list", "-m", "-e", "-json", a.Module+"@"+query)
		if err == nil {
			info, _ := json.Marshal(struct {
				Version string
				Time    *time.Time `json:",omitempty"`
			}{out.Version, out.Time})
			return bytesResponse(info), nil
		}
	case artifact.Mod:
		err = run("list", "-m", "-e", "-json", a.Module+"@"+a.Version)
		if err == nil {
			if out.Version != a.Version || out.GoMod == "" {
				return nil, &httperr.Error{Status: http.StatusNotFound, Msg: fmt.Sprintf("%s@%s resolves to %s", a.Module, a.Version, out.Version), Source: "direct"}
			}
			data, rerr := os.ReadFile(out.GoMod)
			if rerr != nil {
				return nil, &httperr.Error{Status: http.StatusBadGateway, Msg: "direct fetch produced no go.mod", Source: "direct", Err: rerr}
			}
			return bytesResponse(data), nil
		}
	case artifact.Zip:
		err = run("mod", "download", "-json", a.Module+"@"+a.Version)
		if err == nil {
			f, oerr := os.Open(out.Zip)
			if oerr != nil {
				return nil, &httperr.Error{Status: http.StatusBadGateway, Msg: "direct fetch produced no zip", Source: "direct", Err: oerr}
			}
			fi, _ := f.Stat()
			keep = true // removed when the body is closed
			return &Response{Body: &cleanupFile{File: f, sb: sb}, Size: fi.Size(), Source: "direct"}, nil
		}
	default:
		err = &httperr.Error{Status: http.StatusNotFound, Msg: "unknown artifact", Source: "direct"}
	}
	return nil, err
}

// goOutput is what `go list -m -json` and `go mod download -json` print.
type goOutput struct {
	Version  string
	Versions []string
	Time     *time.Time
	GoMod    string
	Zip      string
	Error    json.RawMessage // a string (mod download) or {"Err": ...} (list -e)
}

func (o goOutput) errText() string {
	if len(o.Error) == 0 || string(o.Error) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(o.Error, &s) == nil {
		return s
	}
	var e struct{ Err string }
	json.Unmarshal(o.Error, &e)
	return e.Err
}

// run runs the go command in the sandbox tmp and decodes its JSON; mod is
// the module asked for, which its error messages may name.
func (d *DirectFetcher) run(ctx context.Context, tmp, mod string, out *goOutput, args ...string) error {
	home := filepath.Join(tmp, "home")
	// Telemetry off, as `go telemetry off` would set it: otherwise the go
	// command counts into HOME from a sidecar process that can outlive it.
	telemetry := filepath.Join(home, ".config", "go", "telemetry")
	if err := os.MkdirAll(telemetry, 0o700); err != nil {
		return &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
	}
	if err := os.WriteFile(filepath.Join(telemetry, "mode"), []byte("off\n"), 0o600); err != nil {
		return &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
	}
	stall := max(int(d.cfg.StallTimeout/time.Second), 1)
	env := append(platformEnv(home),
		"PATH="+os.Getenv("PATH"),
		"GOPATH="+filepath.Join(tmp, "gopath"),
		"GOMODCACHE="+filepath.Join(tmp, "modcache"),
		"GOCACHE="+filepath.Join(tmp, "gocache"),
		"GOPROXY=direct",
		"GOSUMDB=off",
		"GOFLAGS=-modcacherw",
		"GO111MODULE=on",
		"GOTOOLCHAIN=local",
		"GOWORK=off",
		"GOENV=off",
		"GIT_TERMINAL_PROMPT=0",
		"GCM_INTERACTIVE=never",
		"GIT_CONFIG_NOSYSTEM=1",
		fmt.Sprintf("GIT_SSH_COMMAND=ssh -o BatchMode=yes -o ConnectTimeout=%d -o ServerAliveInterval=%d -o ServerAliveCountMax=1", stall, stall),
		// A transfer slower than 1 KiB/s for the stall timeout is ended,
		// so a host that never answers holds a worker for that long only.
		"GIT_HTTP_LOW_SPEED_LIMIT=1024",
		fmt.Sprintf("GIT_HTTP_LOW_SPEED_TIME=%d", stall),
		// No background gc or maintenance: a detached git would outlive
		// the fetch and write into a sandbox being removed.
		"GIT_CONFIG_COUNT=3",
		"GIT_CONFIG_KEY_0=gc.auto", "GIT_CONFIG_VALUE_0=0",
		"GIT_CONFIG_KEY_1=maintenance.auto", "GIT_CONFIG_VALUE_1=false",
		"GIT_CONFIG_KEY_2=gc.autoDetach", "GIT_CONFIG_VALUE_2=false",
	)
	if d.cfg.GitConfig != "" {
		env = append(env, "GIT_CONFIG_GLOBAL="+d.cfg.GitConfig)
	} else {
		env = append(env, "GIT_CONFIG_GLOBAL="+os.DevNull)
	}
	if d.cfg.Netrc != "" {
		netrc := filepath.Join(home, ".netrc")
		if err := os.WriteFile(netrc, []byte(d.cfg.Netrc), 0o600); err != nil {
			return &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
		}
		env = append(env, "NETRC="+netrc)
	}
	env = append(env, d.cfg.Env...)

	cmd := exec.CommandContext(ctx, d.cfg.GoBinary, args...)
	cmd.Dir = tmp
	cmd.Env = env
	// The go command starts git, and git starts helpers: kill them all.
	group := newProcGroup(cmd)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &limitedBuffer{b: &stdout, n: 8 << 20}
	cmd.Stderr = &limitedBuffer{b: &stderr, n: 64 << 10}
	runErr := cmd.Start()
	if runErr == nil {
		group.started()
		runErr = cmd.Wait()
		group.release()
	}
	if ctx.Err() == context.DeadlineExceeded {
		return &httperr.Error{Status: http.StatusGatewayTimeout, Msg: "fetching from version control timed out", Source: "direct", Err: runErr}
	}
	if derr := json.Unmarshal(stdout.Bytes(), out); derr == nil {
		if msg := out.errText(); msg != "" {
			return vcsError(msg, mod)
		}
	}
	if runErr != nil {
		if errors.Is(runErr, exec.ErrNotFound) || errors.Is(runErr, fs.ErrNotExist) {
			return &httperr.Error{Status: http.StatusServiceUnavailable, Msg: "direct fetching is unavailable: go command not found", Source: "direct", Err: runErr}
		}
		if strings.TrimSpace(stderr.String()) == "" {
			return &httperr.Error{Status: http.StatusBadGateway, Msg: "go command failed", Source: "direct", Err: runErr}
		}
		return vcsError(stderr.String(), mod)
	}
	return nil
}

var (
	urlCredentials = regexp.MustCompile(`://[^/@\s]+@`)
	authFailure    = regexp.MustCompile(`(?i)(authentication failed|terminal prompts disabled|could not read (username|password)|permission denied|401|403 forbidden|repository not found|access denied)`)
	// The go command says only this when every protocol it tried for a
	// repository failed, which is how a missing credential shows up for
	// paths with a .git qualifier.
	noProtocol  = regexp.MustCompile(`no secure protocol found for repository`)
	timeoutText = regexp.MustCompile(`(?i)(timed out|deadline exceeded|operation too slow)`)
)

// vcsError turns the go command's message into a client-safe answer: 404
// for an unknown module or revision and for an authentication failure (as
// proxy.golang.org does, without saying more about the repository), 504 for
// a timeout. The client sees one line with no URL, address or host other
// than the module's; credentials are cut out of the log's copy too.
func vcsError(msg, mod string) *httperr.Error {
	msg = urlCredentials.ReplaceAllString(strings.TrimSpace(msg), "://")
	line := ClientText(lastLine(msg), mod)
	switch {
	case authFailure.MatchString(msg):
		return &httperr.Error{Status: http.StatusNotFound, Msg: "not found: repository requires authentication or does not exist", Source: "direct", Err: errors.New(msg)}
	case noProtocol.MatchString(msg):
		return &httperr.Error{Status: http.StatusNotFound, Msg: "not found: repository does not exist, requires authentication, or cannot be reached", Source: "direct", Err: errors.New(msg)}
	case timeoutText.MatchString(msg):
		return &httperr.Error{Status: http.StatusGatewayTimeout, Msg: "fetching from version control timed out", Source: "direct", Err: errors.New(msg)}
	}
	return &httperr.Error{Status: http.StatusNotFound, Msg: "not found: " + line, Source: "direct", Err: errors.New(msg)}
}

// lastLine is the most specific line of a go command error.
func lastLine(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	return strings.TrimPrefix(strings.TrimSpace(lines[len(lines)-1]), "go: ")
}

func bytesResponse(b []byte) *Response {
	return &Response{Body: io.NopCloser(bytes.NewReader(b)), Size: int64(len(b)), Source: "direct"}
}

// cleanupFile removes its fetch's sandbox when closed.
type cleanupFile struct {
	*os.File
	sb   *sandbox
	once sync.Once
}

func (c *cleanupFile) Close() error {
	err := c.File.Close()
	c.once.Do(c.sb.remove)
	return err
}

// removeSandbox lets go of a fetch's sandbox (lock is nil for one swept
// at start) and removes it: its go command has ended, and a sweep that
// sees it unlocked removes it too. Processes of a killed process group die
// asynchronously and may still write into it for a moment, so removal is
// retried for a bounded time.
func removeSandbox(dir string, lock *os.File) {
	if lock != nil {
		lock.Close() // first: Windows removes no open file
	}
	for i := 0; i < 50; i++ { // up to 5 s
		if err := os.RemoveAll(dir); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// limitedBuffer keeps at most n bytes of a command's output.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
