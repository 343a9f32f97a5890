package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FleetKey is the fleet key of tests' fleets (fleet_key in their
// Caddyfiles).
const FleetKey = "piraeus-test-fleet-key-not-a-secret-0123456789"

// Redis is a real redis-server on a random loopback port, which a test can
// kill and start again on the same port.
type Redis struct {
	Addr string

	t    testing.TB
	bin  string
	port int

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis starts redis-server without persistence, failing the test
// with how to install it when it is missing.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server is needed by this test: install it with `apt-get install redis-server` (Debian) — .ci/run does this")
	}
	port := FreePort(t)
	r := &Redis{t: t, bin: bin, port: port, Addr: "127.0.0.1:" + strconv.Itoa(port)}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// URL is the redis:// URL of database 0.
func (r *Redis) URL() string { return "redis://" + r.Addr + "/0" }

// Start starts the server (again) and waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.cmd = cmd
	for range 250 { // up to 5 s
		if r.ping() == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("redis-server on %s did not answer PING: %v", r.Addr, r.ping())
}

// Stop kills the server (SIGKILL, as a crash would) and waits for it.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.cmd = nil
}

// Do sends one inline command and returns the first reply line.
func (r *Redis) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func (r *Redis) ping() error {
	reply, err := r.Do("PING")
	if err != nil {
		return err
	}
	if reply != "+PONG" {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// Pause stops the server process (SIGSTOP) without closing its sockets:
// it accepts connections and never answers, as a hung server does.
func (r *Redis) Pause() { r.signal(pauseProcess) }

// Resume lets a paused server go on (SIGCONT).
func (r *Redis) Resume() { r.signal(resumeProcess) }

func (r *Redis) signal(send func(*os.Process) error) {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		r.t.Fatal("redis-server is not running")
	}
	if err := send(r.cmd.Process); err != nil {
		r.t.Fatalf("signalling redis-server: %v", err)
	}
}
