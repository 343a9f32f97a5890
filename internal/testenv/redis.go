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

	"github.com/piraeus-go/piraeus/internal/redisconn"
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

	args []string // extra arguments: a cluster node's, a replica's
	dir  string   // working directory (a cluster node's nodes.conf)

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Config is how a mirror reaches this server.
func (r *Redis) Config() redisconn.Config { return redisconn.Config{URL: r.URL()} }

// RedisTarget is a Redis deployment that tests' fleets share: one server
// (Redis), a Cluster (RedisCluster) or a Sentinel group (RedisSentinel).
type RedisTarget interface {
	Config() redisconn.Config // without Timeout and Logger
}

// StartRedis starts redis-server without persistence, failing the test
// with how to install it when it is missing.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := newRedis(t, "redis-server", "redis-server")
	r.Start()
	return r
}

// newRedis is a server of binary bin (from Debian's package pkg) on a
// free loopback port, stopped when the test ends; not started yet.
func newRedis(t testing.TB, bin, pkg string, args ...string) *Redis {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("%s is needed by this test: install it with `apt-get install %s` (Debian) — .ci/run does this", bin, pkg)
	}
	port := FreePort(t)
	r := &Redis{t: t, bin: path, port: port, Addr: "127.0.0.1:" + strconv.Itoa(port), args: args, dir: t.TempDir()}
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
	var args []string
	if strings.HasSuffix(r.bin, "redis-sentinel") {
		args = r.args // its config file says the rest
	} else {
		args = append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"}, r.args...)
	}
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = r.dir
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
