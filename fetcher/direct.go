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
	"time"

	"github.com/piraeus-go/piraeus/artifact"
)

// DirectConfig configures a DirectFetcher.
type DirectConfig struct {
	Workers   int           // concurrent go commands; default 4
	Timeout   time.Duration // bound on one go command; default 10m
	GoBinary  string        // default: "go" on PATH
	Env       []string      // extra KEY=VALUE for the go command and git
	Netrc     string        // contents of a netrc file (credentials)
	GitConfig string        // path of a git config file (e.g. url.insteadOf rules)
	TempDir   string        // where sandboxes are made; default os.TempDir()
}

// DirectFetcher fetches from version control by running the go command
// with GOPROXY=direct in a throw-away GOPATH per fetch, as the go command
// itself would. Its temp directories are always removed, and a go command
// that times out is killed with its whole process group.
type DirectFetcher struct {
	cfg   DirectConfig
	slots chan struct{}
}

// NewDirectFetcher returns a DirectFetcher.
func NewDirectFetcher(cfg DirectConfig) (*DirectFetcher, error) {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if cfg.GoBinary == "" {
		cfg.GoBinary = "go"
	}
	for _, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("direct: env %q is not KEY=VALUE", kv)
		}
	}
	return &DirectFetcher{cfg: cfg, slots: make(chan struct{}, cfg.Workers)}, nil
}

// Fetch runs the go command for a. A zip is streamed from the temp module
// cache, which is removed when the body is closed.
func (d *DirectFetcher) Fetch(ctx context.Context, a artifact.Artifact) (*Response, error) {
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, TransportError(ctx, "direct", ctx.Err())
	}
	release := func() { <-d.slots }
	tmp, err := os.MkdirTemp(d.cfg.TempDir, "piraeus-direct-")
	if err != nil {
		release()
		return nil, &Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
	}
	keep := false
	defer func() {
		release()
		if !keep {
			removeSandbox(tmp)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()

	var out goOutput
	switch a.Kind {
	case artifact.List:
		err = d.run(ctx, tmp, &out, "list", "-m", "-e", "-json", "-versions", a.Module)
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
		err = d.run(ctx, tmp, &out, "list", "-m", "-e", "-json", a.Module+"@"+query)
		if err == nil {
			info, _ := json.Marshal(struct {
				Version string
				Time    *time.Time `json:",omitempty"`
			}{out.Version, out.Time})
			return bytesResponse(info), nil
		}
	case artifact.Mod:
		err = d.run(ctx, tmp, &out, "list", "-m", "-e", "-json", a.Module+"@"+a.Version)
		if err == nil {
			if out.Version != a.Version || out.GoMod == "" {
				return nil, &Error{Status: http.StatusNotFound, Msg: fmt.Sprintf("%s@%s resolves to %s", a.Module, a.Version, out.Version), Source: "direct"}
			}
			data, rerr := os.ReadFile(out.GoMod)
			if rerr != nil {
				return nil, &Error{Status: http.StatusBadGateway, Msg: "direct fetch produced no go.mod", Source: "direct", Err: rerr}
			}
			return bytesResponse(data), nil
		}
	case artifact.Zip:
		err = d.run(ctx, tmp, &out, "mod", "download", "-json", a.Module+"@"+a.Version)
		if err == nil {
			f, oerr := os.Open(out.Zip)
			if oerr != nil {
				return nil, &Error{Status: http.StatusBadGateway, Msg: "direct fetch produced no zip", Source: "direct", Err: oerr}
			}
			fi, _ := f.Stat()
			keep = true // removed when the body is closed
			return &Response{Body: &cleanupFile{File: f, dir: tmp}, Size: fi.Size(), Source: "direct"}, nil
		}
	default:
		err = &Error{Status: http.StatusNotFound, Msg: "unknown artifact", Source: "direct"}
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

// run runs the go command in a sandbox under tmp and decodes its JSON.
func (d *DirectFetcher) run(ctx context.Context, tmp string, out *goOutput, args ...string) error {
	home := filepath.Join(tmp, "home")
	// Telemetry off, as `go telemetry off` would set it: otherwise the go
	// command counts into HOME from a sidecar process that can outlive it.
	telemetry := filepath.Join(home, ".config", "go", "telemetry")
	if err := os.MkdirAll(telemetry, 0o700); err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
	}
	if err := os.WriteFile(filepath.Join(telemetry, "mode"), []byte("off\n"), 0o600); err != nil {
		return &Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
	}
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
		"GIT_SSH_COMMAND=ssh -o BatchMode=yes",
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
			return &Error{Status: http.StatusServiceUnavailable, Msg: "direct fetch could not start", Source: "direct", Err: err}
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
		return &Error{Status: http.StatusGatewayTimeout, Msg: "fetching from version control timed out", Source: "direct", Err: runErr}
	}
	if derr := json.Unmarshal(stdout.Bytes(), out); derr == nil {
		if msg := out.errText(); msg != "" {
			return vcsError(msg)
		}
	}
	if runErr != nil {
		if errors.Is(runErr, exec.ErrNotFound) || errors.Is(runErr, fs.ErrNotExist) {
			return &Error{Status: http.StatusServiceUnavailable, Msg: "direct fetching is unavailable: go command not found", Source: "direct", Err: runErr}
		}
		if strings.TrimSpace(stderr.String()) == "" {
			return &Error{Status: http.StatusBadGateway, Msg: "go command failed", Source: "direct", Err: runErr}
		}
		return vcsError(stderr.String())
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
	timeoutText = regexp.MustCompile(`(?i)(timed out|deadline exceeded)`)
)

// vcsError turns the go command's message into a client-safe answer: 404
// for an unknown module or revision and for an authentication failure (as
// proxy.golang.org does, without saying more about the repository), 504 for
// a timeout. Credentials in URLs are cut out.
func vcsError(msg string) *Error {
	msg = urlCredentials.ReplaceAllString(strings.TrimSpace(msg), "://")
	line := lastLine(msg)
	switch {
	case authFailure.MatchString(msg):
		return &Error{Status: http.StatusNotFound, Msg: "not found: repository requires authentication or does not exist", Source: "direct", Err: errors.New(msg)}
	case noProtocol.MatchString(msg):
		return &Error{Status: http.StatusNotFound, Msg: "not found: repository does not exist, requires authentication, or cannot be reached", Source: "direct", Err: errors.New(msg)}
	case timeoutText.MatchString(msg):
		return &Error{Status: http.StatusGatewayTimeout, Msg: "fetching from version control timed out", Source: "direct", Err: errors.New(msg)}
	}
	return &Error{Status: http.StatusNotFound, Msg: "not found: " + line, Source: "direct", Err: errors.New(msg)}
}

// lastLine is the most specific line of a go command error, bounded.
func lastLine(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	line := strings.TrimSpace(lines[len(lines)-1])
	line = strings.TrimPrefix(line, "go: ")
	if len(line) > 300 {
		line = line[:300]
	}
	return line
}

func bytesResponse(b []byte) *Response {
	return &Response{Body: io.NopCloser(bytes.NewReader(b)), Size: int64(len(b)), Source: "direct"}
}

// cleanupFile removes its fetch's temp directory when closed.
type cleanupFile struct {
	*os.File
	dir string
}

func (c *cleanupFile) Close() error {
	err := c.File.Close()
	removeSandbox(c.dir)
	return err
}

// removeSandbox removes a fetch's temp directory. Processes of a killed
// process group die asynchronously and may still write into it for a
// moment, so removal is retried for a bounded time.
func removeSandbox(dir string) {
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
