package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterTimeout bounds creating the cluster and each WaitHealthy. With
// --cluster-node-timeout 1000 a failover takes a few seconds; 20 s leaves
// room for a loaded CI machine.
const clusterTimeout = 20 * time.Second

// clusterSlots is the number of hash slots a Redis Cluster divides keys into.
const clusterSlots = 16384

// A RedisCluster is a throwaway six-node Redis Cluster (three masters, each
// with one replica) on loopback ports, for tests of cluster behaviour such
// as MOVED redirects and failover, which the single shared Redis server
// cannot show. Nodes keep nothing on disk.
//
// Methods must not be called concurrently with each other.
type RedisCluster struct {
	tb    testing.TB
	addrs []string
	procs map[string]*redisProc // running nodes by address
}

// StartRedisCluster starts six redis-server processes in cluster mode, joins
// them with redis-cli --cluster create, and waits until every node reports
// cluster_state:ok. Cleanup stops every node.
func StartRedisCluster(tb testing.TB) *RedisCluster {
	tb.Helper()
	requireRedisServer(tb)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		Required(tb, "redis-cli", "apt-get install redis-tools")
	}
	base := tb.TempDir() // before stopAll's cleanup, so removed after it (see StartRedisSentinel)
	rc := &RedisCluster{tb: tb, procs: make(map[string]*redisProc)}
	tb.Cleanup(rc.stopAll)
	for i := range 6 {
		proc, err := startClusterNode(filepath.Join(base, "node"+strconv.Itoa(i)))
		if err != nil {
			tb.Fatalf("testenv: start Redis Cluster node %d: %v", i, err)
		}
		rc.addrs = append(rc.addrs, proc.addr)
		rc.procs[proc.addr] = proc
	}

	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, rc.addrs...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("testenv: redis-cli --cluster create: %v; output:\n%s", err, out)
	}
	rc.WaitHealthy(tb)
	return rc
}

// startClusterNode starts one cluster-mode node with its files in dir. The
// cluster bus port is chosen freely too (--cluster-port) rather than left at
// port+10000, which can exceed 65535 for ports from the ephemeral range.
func startClusterNode(dir string) (*redisProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	for range 3 { // see StartRedis: a probed port can be taken before use
		var port, bus int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		if bus, err = freePort(); err != nil {
			return nil, err
		}
		if bus == port {
			continue
		}
		var p *redisProc
		p, err = startRedisProc(dir, port, []string{
			"--cluster-enabled", "yes",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-config-file", filepath.Join(dir, "nodes-"+strconv.Itoa(port)+".conf"),
			"--cluster-node-timeout", "1000",
			"--cluster-require-full-coverage", "no",
		})
		if err == nil {
			return p, nil
		}
	}
	return nil, err
}

// Addrs returns the addresses of all six nodes, stopped ones included, in a
// form go-redis's ClusterOptions.Addrs accepts.
func (rc *RedisCluster) Addrs() []string { return slices.Clone(rc.addrs) }

// Masters returns the sorted addresses of the nodes that a running node
// currently lists as masters not marked failed, per CLUSTER NODES.
func (rc *RedisCluster) Masters() []string {
	rc.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var lastErr error
	for _, addr := range rc.addrs {
		if rc.procs[addr] == nil {
			continue
		}
		nodes, err := clusterNodes(ctx, addr)
		if err != nil {
			lastErr = err
			continue
		}
		var masters []string
		for _, n := range nodes {
			if n.master && !n.failed {
				masters = append(masters, n.addr)
			}
		}
		slices.Sort(masters)
		return masters
	}
	rc.tb.Fatalf("testenv: Redis Cluster: no running node answers CLUSTER NODES: %v", lastErr)
	return nil
}

// StopNode shuts down the node at addr (SHUTDOWN NOSAVE) and waits for it to
// exit, as if it had crashed; its data is gone. If it was a master, its
// replica takes over within a few seconds; call WaitHealthy to wait for that.
func (rc *RedisCluster) StopNode(addr string) {
	rc.tb.Helper()
	p := rc.procs[addr]
	if p == nil {
		rc.tb.Fatalf("testenv: Redis Cluster: StopNode(%q): no running node has that address; use one from Addrs", addr)
	}
	if err := p.stop(); err != nil {
		rc.tb.Errorf("testenv: Redis Cluster: stop node %s: %v", addr, err)
	}
	delete(rc.procs, addr)
}

// WaitHealthy waits until every running node reports cluster_state:ok and
// sees all 16384 slots served by masters that are running and not marked
// failed, which after StopNode means a replica has been promoted and every
// node knows it. It fails the test after 20 s, saying what was still wrong.
func (rc *RedisCluster) WaitHealthy(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	var why error
	for {
		if why = rc.unhealthy(ctx); why == nil {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("testenv: Redis Cluster not healthy after %v: %v", clusterTimeout, why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// unhealthy returns why the cluster is not yet healthy, or nil.
func (rc *RedisCluster) unhealthy(ctx context.Context) error {
	for _, addr := range rc.addrs {
		if rc.procs[addr] == nil {
			continue
		}
		info, err := clusterCmd(ctx, addr, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("node %s: cluster_state is not ok", addr)
		}
		nodes, err := clusterNodes(ctx, addr)
		if err != nil {
			return err
		}
		served, known := 0, 0
		for _, n := range nodes {
			if rc.procs[n.addr] == nil {
				continue
			}
			known++
			if !n.master || n.failed {
				continue
			}
			if n.slots == 0 {
				// Right after create, a node may not have heard yet
				// that another one became a replica.
				return fmt.Errorf("node %s: sees %s as a master without slots", addr, n.addr)
			}
			served += n.slots
		}
		if served != clusterSlots {
			return fmt.Errorf("node %s: running masters serve %d of %d slots", addr, served, clusterSlots)
		}
		if running := len(rc.procs); known != running {
			return fmt.Errorf("node %s: knows %d of the %d running nodes", addr, known, running)
		}
		// A replica still in its first sync makes its master's SHUTDOWN
		// and a failover wait; count the cluster healthy once it is done.
		repl, err := clusterCmd(ctx, addr, "INFO", "replication")
		if err != nil {
			return err
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("node %s: replica not in sync with its master yet", addr)
		}
	}
	return nil
}

func (rc *RedisCluster) stopAll() {
	for _, addr := range rc.addrs {
		if p := rc.procs[addr]; p != nil {
			if err := p.stop(); err != nil {
				rc.tb.Errorf("testenv: Redis Cluster: stop node %s: %v", addr, err)
			}
			delete(rc.procs, addr)
		}
	}
}

// clusterNode is one line of CLUSTER NODES.
type clusterNode struct {
	addr   string // host:port, without the @bus-port suffix
	master bool
	failed bool // flagged fail or fail?
	slots  int
}

// clusterNodes asks the node at addr for its view of the cluster.
//
// Each CLUSTER NODES line reads
//
//	<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot> <slot> ...
//
// where a slot is N, N-M, or [N->-id] / [N-<-id] for one being migrated.
func clusterNodes(ctx context.Context, addr string) ([]clusterNode, error) {
	out, err := clusterCmd(ctx, addr, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var nodes []clusterNode
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		a, _, _ := strings.Cut(f[1], "@")
		n := clusterNode{addr: a}
		for flag := range strings.SplitSeq(f[2], ",") {
			switch flag {
			case "master":
				n.master = true
			case "fail", "fail?":
				n.failed = true
			}
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue
			}
			lo, hi, isRange := strings.Cut(s, "-")
			if !isRange {
				hi = lo
			}
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil || h < l {
				return nil, fmt.Errorf("node %s: CLUSTER NODES: bad slot range %q", addr, s)
			}
			n.slots += h - l + 1
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// clusterCmd runs one command on the node at addr and returns its text reply.
func clusterCmd(ctx context.Context, addr string, args ...any) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer c.Close()
	s, err := c.Do(ctx, args...).Text()
	if err != nil {
		return "", fmt.Errorf("node %s: %v: %w", addr, args, err)
	}
	return s, nil
}
