package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// sentinelTimeout bounds starting the group and each WaitFailover. With
// down-after-milliseconds 1000 a failover takes a few seconds; 30 s leaves
// room for a loaded CI machine.
const sentinelTimeout = 30 * time.Second

// SentinelMaster is the master name a RedisSentinel monitors.
const SentinelMaster = "chihaya"

// A RedisSentinel is a throwaway Sentinel group on loopback ports: a
// master, one replica and one Sentinel (quorum 1), for tests of Sentinel
// discovery and failover, which the shared Redis server cannot show.
// Nothing is kept on disk.
//
// Methods must not be called concurrently with each other.
type RedisSentinel struct {
	tb       testing.TB
	sentinel *redisProc
	nodes    map[string]*redisProc // running master and replica by address
}

// StartRedisSentinel starts a master, a replica of it and a Sentinel that
// monitors the master as SentinelMaster, and waits until the replica is in
// sync and the Sentinel knows it, so that a failover has someone to
// promote. Cleanup stops all three.
func StartRedisSentinel(tb testing.TB) *RedisSentinel {
	tb.Helper()
	requireRedisServer(tb)
	// The directory first: cleanups run last-registered first, and the
	// servers must have exited before it is removed (a Sentinel rewrites
	// its config file, a replica its sync files, until they stop).
	dir := tb.TempDir()
	rs := &RedisSentinel{tb: tb, nodes: make(map[string]*redisProc)}
	tb.Cleanup(rs.stopAll)
	// A replica with diskless sync and no delay is in sync at once,
	// rather than after repl-diskless-sync-delay (5 s by default).
	sync := []string{"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}
	master, err := startOnFreePort(dir, sync)
	if err != nil {
		tb.Fatalf("testenv: Redis Sentinel: start master: %v", err)
	}
	rs.nodes[master.addr] = master
	host, port, _ := net.SplitHostPort(master.addr)
	replica, err := startOnFreePort(dir, append(sync, "--replicaof", host, port))
	if err != nil {
		tb.Fatalf("testenv: Redis Sentinel: start replica: %v", err)
	}
	rs.nodes[replica.addr] = replica
	if rs.sentinel, err = startSentinel(dir, master.addr); err != nil {
		tb.Fatalf("testenv: Redis Sentinel: start sentinel: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), sentinelTimeout)
	defer cancel()
	rc := redis.NewClient(&redis.Options{Addr: replica.addr})
	defer rc.Close()
	sc := redis.NewSentinelClient(&redis.Options{Addr: rs.sentinel.addr})
	defer sc.Close()
	for {
		info, err := rc.Info(ctx, "replication").Result()
		replicas, serr := sc.Replicas(ctx, SentinelMaster).Result()
		if err == nil && serr == nil && strings.Contains(info, "master_link_status:up") && len(replicas) == 1 {
			return rs
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("testenv: Redis Sentinel: replica not in sync or not known to the sentinel after %v (replica: %v %q; sentinel: %v %v)",
				sentinelTimeout, err, info, serr, replicas)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// startOnFreePort starts a plain redis-server on a free port, retrying if
// the port is taken before redis-server binds it (see StartRedis).
func startOnFreePort(dir string, extra []string) (*redisProc, error) {
	var err error
	for range 3 {
		var port int
		if port, err = freePort(); err != nil {
			return nil, err
		}
		var p *redisProc
		if p, err = startRedisProc(dir, port, extra); err == nil {
			return p, nil
		}
	}
	return nil, err
}

// startSentinel starts redis-server in Sentinel mode, monitoring the
// master at addr with quorum 1, declaring it down after 1 s. A Sentinel
// rewrites its configuration file, so each gets its own.
func startSentinel(dir, master string) (*redisProc, error) {
	host, port, _ := net.SplitHostPort(master)
	var err error
	for range 3 {
		var sport int
		if sport, err = freePort(); err != nil {
			return nil, err
		}
		conf := filepath.Join(dir, "sentinel-"+strconv.Itoa(sport)+".conf")
		text := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s 1\n"+
			"sentinel down-after-milliseconds %[1]s 1000\n"+
			"sentinel failover-timeout %[1]s 10000\n"+
			"sentinel parallel-syncs %[1]s 1\n", SentinelMaster, host, port)
		if err = os.WriteFile(conf, []byte(text), 0o644); err != nil {
			return nil, err
		}
		var p *redisProc
		if p, err = startRedisProcArgs(dir, sport, append([]string{conf, "--sentinel"}, baseArgs(dir, sport, "sentinel")...)); err == nil {
			return p, nil
		}
	}
	return nil, err
}

// SentinelAddr returns the Sentinel's host:port, what a client lists in
// its Sentinel addresses.
func (rs *RedisSentinel) SentinelAddr() string { return rs.sentinel.addr }

// Master returns the address the Sentinel currently names as master.
func (rs *RedisSentinel) Master() string {
	rs.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sc := redis.NewSentinelClient(&redis.Options{Addr: rs.sentinel.addr})
	defer sc.Close()
	hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
	if err != nil || len(hp) != 2 {
		rs.tb.Fatalf("testenv: Redis Sentinel: SENTINEL GET-MASTER-ADDR-BY-NAME: %v %v", err, hp)
	}
	return net.JoinHostPort(hp[0], hp[1])
}

// StopMaster shuts the current master down without saving, as if it had
// crashed, and returns its address. The Sentinel then promotes the
// replica within a few seconds; WaitFailover waits for that.
func (rs *RedisSentinel) StopMaster() string {
	rs.tb.Helper()
	addr := rs.Master()
	p := rs.nodes[addr]
	if p == nil {
		rs.tb.Fatalf("testenv: Redis Sentinel: the master %s is not one of ours", addr)
	}
	if err := p.stop(); err != nil {
		rs.tb.Errorf("testenv: Redis Sentinel: stop master %s: %v", addr, err)
	}
	delete(rs.nodes, addr)
	return addr
}

// WaitFailover waits until the Sentinel names a master other than old and
// that master answers as one. It fails the test after 30 s.
func (rs *RedisSentinel) WaitFailover(tb testing.TB, old string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sentinelTimeout)
	defer cancel()
	sc := redis.NewSentinelClient(&redis.Options{Addr: rs.sentinel.addr})
	defer sc.Close()
	var why string
	for {
		hp, err := sc.GetMasterAddrByName(ctx, SentinelMaster).Result()
		switch {
		case err != nil:
			why = err.Error()
		case len(hp) != 2 || net.JoinHostPort(hp[0], hp[1]) == old:
			why = fmt.Sprintf("the sentinel still names %v", hp)
		default:
			addr := net.JoinHostPort(hp[0], hp[1])
			c := redis.NewClient(&redis.Options{Addr: addr})
			info, err := c.Info(ctx, "replication").Result()
			c.Close()
			if err == nil && strings.Contains(info, "role:master") {
				return addr
			}
			why = fmt.Sprintf("%s is named master but says %v %q", addr, err, info)
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("testenv: Redis Sentinel: no failover from %s after %v: %s", old, sentinelTimeout, why)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (rs *RedisSentinel) stopAll() {
	if rs.sentinel != nil {
		if err := rs.sentinel.stop(); err != nil {
			rs.tb.Errorf("testenv: Redis Sentinel: stop sentinel: %v", err)
		}
	}
	for addr, p := range rs.nodes {
		if err := p.stop(); err != nil {
			rs.tb.Errorf("testenv: Redis Sentinel: stop %s: %v", addr, err)
		}
	}
}
