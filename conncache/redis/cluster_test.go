package redis

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/conncache/conncachetest"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

// startCluster starts a Redis Cluster and waits until every replica has
// finished its initial sync with its master. Until then a failover has
// nothing to promote, and a master waits out its SHUTDOWN (the replica is
// in wait_bgsave, for repl-diskless-sync-delay, 5 s by default), which
// testenv reports as a failure at cleanup.
// TODO(lead): StartRedisCluster could wait for this itself, or start the
// nodes with --repl-diskless-sync-delay 0.
func startCluster(t *testing.T) *testenv.RedisCluster {
	rc := testenv.StartRedisCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, addr := range rc.Addrs() {
		c := goredis.NewClient(&goredis.Options{Addr: addr})
		for {
			info, err := c.Info(ctx, "replication").Result()
			if err == nil && (strings.Contains(info, "role:master") || strings.Contains(info, "master_link_status:up")) {
				break
			}
			select {
			case <-ctx.Done():
				c.Close()
				t.Fatalf("replica %s not in sync after 30s: %v %s", addr, err, info)
			case <-time.After(100 * time.Millisecond):
			}
		}
		c.Close()
	}
	return rc
}

func TestClusterConformance(t *testing.T) {
	rc := startCluster(t)
	cfgs := make(map[*testing.T]conncache.Config)
	conncachetest.Run(t, func(t *testing.T) conncache.Pool {
		cfg, ok := cfgs[t]
		if !ok {
			cfg = testConfig(t, rc.Addrs(), true)
			cfgs[t] = cfg
		}
		return open(t, cfg)
	})
}

// TestClusterFailover runs the failover scenario on a Redis Cluster, with
// swarms spread over every master, and stops one of the masters.
func TestClusterFailover(t *testing.T) {
	rc := startCluster(t)
	cfg := testConfig(t, rc.Addrs(), true)
	cfg.SyncInterval = 100 * time.Millisecond
	testFailover(t, cfg, 32, func() {
		masters := rc.Masters()
		if len(masters) != 3 {
			t.Fatalf("Masters() = %v, want 3", masters)
		}
		rc.StopNode(masters[0])
	}, func() { rc.WaitHealthy(t) })
}

// testFailover runs two instances on cfg's Redis with swarms of their
// peers, calls stop, which must stop a master, announces while Redis
// fails over, and calls recovered, which must wait until a replica has
// taken over. Announces must be answered throughout, and after the
// failover mirroring must resume in both directions.
func testFailover(t *testing.T, cfg conncache.Config, swarms int, stop, recovered func()) {
	t.Helper()
	a, b := startInstance(t, "A", cfg), startInstance(t, "B", cfg)
	ihs := make([]peertable.InfoHash, swarms)
	for i := range ihs {
		ihs[i] = randomHash()
	}
	ua, ub := newUDPClient(t, a.udpAddr(false)), newUDPClient(t, b.udpAddr(false))
	announceAll := func(u *udpClient, port uint16) {
		t.Helper()
		for _, ih := range ihs {
			if _, ok := u.announce(ih, port, 1, peertable.EventStarted); !ok {
				t.Errorf("announce of port %d got no reply", port)
			}
		}
	}
	seesAll := func(in *instance, port uint16) func() bool {
		return func() bool {
			for _, ih := range ihs {
				if !slices.Contains(peersOf(in.mirror.Remote(), ih), netip.AddrPortFrom(lo4, port)) {
					return false
				}
			}
			return true
		}
	}
	announceAll(ua, 7001)
	eventually(t, within, "B sees A's peers in every swarm", seesAll(b, 7001))

	stop()
	// Answered while Redis fails over.
	announceAll(ua, 7002)
	announceAll(ub, 7003)
	recovered()

	eventually(t, 20*time.Second, "B sees A's peers announced during the failover", seesAll(b, 7002))
	eventually(t, 20*time.Second, "A sees B's peers announced during the failover", seesAll(a, 7003))
	announceAll(ua, 7004)
	eventually(t, 5*time.Second, "B sees A's peers announced after the failover", seesAll(b, 7004))
	for _, in := range []*instance{a, b} {
		eventually(t, 10*time.Second, fmt.Sprintf("%s healthy after the failover", in.name), func() bool {
			return in.mirror.Stats().Healthy
		})
		t.Logf("%s: %+v", in.name, in.mirror.Stats())
	}
}
