package testenv

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/piraeus-go/piraeus/internal/redisconn"
)

// RedisCluster is a real Redis Cluster on loopback: three masters with a
// replica each (redis-server --cluster-enabled yes, joined by redis-cli
// --cluster create), which a test can reshard and fail over.
type RedisCluster struct {
	Nodes []*Redis

	t   testing.TB
	cli string
}

// clusterNodeTimeout is the cluster-node-timeout of tests' clusters: how
// long a master may be silent before its replica is promoted.
const clusterNodeTimeout = 1000 * time.Millisecond

// StartRedisCluster starts six nodes and joins them, failing the test
// with how to install Redis when it is missing.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal("redis-cli is needed by this test: install it with `apt-get install redis-server` (Debian) — .ci/run does this")
	}
	c := &RedisCluster{t: t, cli: cli}
	addrs := []string{}
	for range 6 {
		// The cluster bus on a port of its own: by default it is the
		// client port plus 10000, which may be taken or past 65535.
		n := newRedis(t, "redis-server", "redis-server", "--cluster-enabled", "yes",
			"--cluster-port", strconv.Itoa(FreePort(t)),
			"--cluster-config-file", "nodes.conf", "--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout.Milliseconds())),
			// a replica of a dead master takes over at once, however
			// long ago it last heard from it
			"--cluster-replica-validity-factor", "0")
		n.Start()
		c.Nodes = append(c.Nodes, n)
		addrs = append(addrs, n.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := c.redisCLI(append(args, "--cluster-replicas", "1", "--cluster-yes")...); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy()
	return c
}

// Config is how a mirror reaches the cluster: every node as a seed.
func (c *RedisCluster) Config() redisconn.Config {
	cfg := redisconn.Config{Cluster: true}
	for _, n := range c.Nodes {
		cfg.Addrs = append(cfg.Addrs, n.Addr)
	}
	return cfg
}

func (c *RedisCluster) redisCLI(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, c.cli, args...).CombinedOutput()
	return string(out), err
}

// nodeClient asks one node.
func nodeClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
}

// clusterView is what one running node says of the cluster: its state
// and the master of each slot range.
type clusterView struct {
	ok      bool
	masters map[string]bool // addresses serving slots
}

func (c *RedisCluster) view(n *Redis) (clusterView, error) {
	cl := nodeClient(n.Addr)
	defer cl.Close()
	ctx := context.Background()
	info, err := cl.ClusterInfo(ctx).Result()
	if err != nil {
		return clusterView{}, err
	}
	v := clusterView{ok: strings.Contains(info, "cluster_state:ok"), masters: map[string]bool{}}
	shards, err := cl.ClusterShards(ctx).Result()
	if err != nil {
		return clusterView{}, err
	}
	for _, s := range shards {
		if a := shardMaster(s); a != "" && len(s.Slots) > 0 {
			v.masters[a] = true
		}
	}
	return v, nil
}

// shardMaster is the address of a shard's master, if it has one.
func shardMaster(s redis.ClusterShard) string {
	for _, n := range s.Nodes {
		if n.Role == "master" && n.Health != "fail" {
			return n.IP + ":" + strconv.FormatInt(n.Port, 10)
		}
	}
	return ""
}

// WaitHealthy waits until every running node says the cluster is ok and
// all agree on which nodes are masters.
func (c *RedisCluster) WaitHealthy() {
	c.t.Helper()
	var last string
	for range 300 { // up to 30 s
		agreed, want := true, ""
		for _, n := range c.running() {
			v, err := c.view(n)
			if err != nil || !v.ok {
				agreed, last = false, fmt.Sprintf("%s: ok=%v %v", n.Addr, v.ok, err)
				break
			}
			ms := strings.Join(sortedKeys(v.masters), ",")
			if want == "" {
				want = ms
			} else if ms != want {
				agreed, last = false, fmt.Sprintf("%s sees masters %s, another %s", n.Addr, ms, want)
				break
			}
		}
		if agreed {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("the redis cluster did not become healthy: %s", last)
}

func (c *RedisCluster) running() []*Redis {
	var rs []*Redis
	for _, n := range c.Nodes {
		n.mu.Lock()
		if n.cmd != nil {
			rs = append(rs, n)
		}
		n.mu.Unlock()
	}
	return rs
}

func (c *RedisCluster) node(addr string) *Redis {
	for _, n := range c.Nodes {
		if n.Addr == addr {
			return n
		}
	}
	c.t.Fatalf("%s is not a node of the cluster", addr)
	return nil
}

// nodeID is a node's cluster id.
func (c *RedisCluster) nodeID(n *Redis) string {
	c.t.Helper()
	cl := nodeClient(n.Addr)
	defer cl.Close()
	id, err := cl.Do(context.Background(), "CLUSTER", "MYID").Text()
	if err != nil {
		c.t.Fatalf("CLUSTER MYID of %s: %v", n.Addr, err)
	}
	return id
}

// Masters are the nodes serving slots now.
func (c *RedisCluster) Masters() []*Redis {
	c.t.Helper()
	for _, n := range c.running() {
		if v, err := c.view(n); err == nil {
			var ms []*Redis
			for _, a := range sortedKeys(v.masters) {
				ms = append(ms, c.node(a))
			}
			return ms
		}
	}
	c.t.Fatal("no node of the cluster answers")
	return nil
}

// Reshard moves slots slots from master from to master to with redis-cli
// --cluster reshard, keys and all, while clients go on: a client asking
// for a key being moved gets ASK, and MOVED once its slot has moved.
func (c *RedisCluster) Reshard(from, to *Redis, slots int) error {
	out, err := c.redisCLI("--cluster", "reshard", from.Addr, "--cluster-from", c.nodeID(from),
		"--cluster-to", c.nodeID(to), "--cluster-slots", strconv.Itoa(slots), "--cluster-yes",
		"--cluster-pipeline", "10")
	if err != nil {
		return fmt.Errorf("redis-cli --cluster reshard: %v\n%s", err, out)
	}
	return nil
}

// KillAndFailover kills master (SIGKILL) and waits until its replica
// serves its slots, then starts it again, as a replica now; it returns how
// long the slots had no master.
func (c *RedisCluster) KillAndFailover(master *Redis) time.Duration {
	c.t.Helper()
	start := time.Now()
	master.Stop()
	for range 300 { // up to 30 s
		if v, err := c.view(c.running()[0]); err == nil && v.ok && !v.masters[master.Addr] && len(v.masters) == 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(start)
	master.Start()
	c.WaitHealthy()
	return took
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// RedisSentinel is a master, a replica and three sentinels (Debian's
// redis-sentinel) on loopback, which a test can fail over.
type RedisSentinel struct {
	Name      string // the master's name
	Servers   []*Redis
	Sentinels []*Redis
	t         testing.TB
}

// StartRedisSentinel starts the group and waits until the sentinels know
// the master and its replica.
func StartRedisSentinel(t testing.TB) *RedisSentinel {
	t.Helper()
	s := &RedisSentinel{Name: "piraeus", t: t}
	master := newRedis(t, "redis-server", "redis-server")
	master.Start()
	replica := newRedis(t, "redis-server", "redis-server", "--replicaof", "127.0.0.1", strconv.Itoa(master.port))
	replica.Start()
	s.Servers = []*Redis{master, replica}
	for range 3 {
		n := newRedis(t, "redis-sentinel", "redis-sentinel", "sentinel.conf")
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nloglevel warning\n"+
			"sentinel monitor %s 127.0.0.1 %d 2\n"+
			"sentinel down-after-milliseconds %[3]s 1000\nsentinel failover-timeout %[3]s 5000\nsentinel parallel-syncs %[3]s 1\n",
			n.port, n.dir, s.Name, master.port)
		if err := os.WriteFile(filepath.Join(n.dir, "sentinel.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		n.Start()
		s.Sentinels = append(s.Sentinels, n)
	}
	s.waitMaster(master, true)
	return s
}

// Config is how a mirror reaches the group: through its sentinels.
func (s *RedisSentinel) Config() redisconn.Config {
	cfg := redisconn.Config{MasterName: s.Name}
	for _, n := range s.Sentinels {
		cfg.Addrs = append(cfg.Addrs, n.Addr)
	}
	return cfg
}

// Master is the server every sentinel names as the master.
func (s *RedisSentinel) Master() *Redis {
	s.t.Helper()
	addr, err := s.masterAddr(s.Sentinels[0])
	if err != nil {
		s.t.Fatal(err)
	}
	for _, n := range s.Servers {
		if n.Addr == addr {
			return n
		}
	}
	s.t.Fatalf("the sentinels name %s, no server of the group", addr)
	return nil
}

func (s *RedisSentinel) masterAddr(sentinel *Redis) (string, error) {
	cl := redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr, DisableIdentity: true, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer cl.Close()
	a, err := cl.GetMasterAddrByName(context.Background(), s.Name).Result()
	if err != nil {
		return "", err
	}
	return a[0] + ":" + a[1], nil
}

// waitMaster waits until every sentinel names master and, with replica,
// knows a replica of it that is in sync.
func (s *RedisSentinel) waitMaster(master *Redis, replica bool) {
	s.t.Helper()
	var last string
	for range 600 { // up to 60 s
		ok := true
		for _, sn := range s.Sentinels {
			a, err := s.masterAddr(sn)
			if err != nil || a != master.Addr {
				ok, last = false, fmt.Sprintf("sentinel %s names %q (%v)", sn.Addr, a, err)
				break
			}
			if replica {
				cl := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, DisableIdentity: true})
				reps, err := cl.Replicas(context.Background(), s.Name).Result()
				cl.Close()
				if err != nil || !slices.ContainsFunc(reps, func(r map[string]string) bool {
					return r["master-link-status"] == "ok" && r["flags"] == "slave"
				}) {
					ok, last = false, fmt.Sprintf("sentinel %s: replicas %v (%v)", sn.Addr, reps, err)
					break
				}
			}
		}
		if ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("the sentinels did not settle on %s: %s", master.Addr, last)
}

// KillAndFailover kills the master (SIGKILL), waits until the sentinels
// have promoted the replica, and starts the old master again, which they
// then make a replica of the new one; it returns how long the group had
// no master.
func (s *RedisSentinel) KillAndFailover() time.Duration {
	s.t.Helper()
	old := s.Master()
	start := time.Now()
	old.Stop()
	var next *Redis
	for _, n := range s.Servers {
		if n != old {
			next = n
		}
	}
	s.waitMaster(next, false)
	took := time.Since(start)
	old.Start() // the sentinels make it a replica of the new master
	return took
}
