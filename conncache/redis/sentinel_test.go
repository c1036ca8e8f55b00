package redis

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

// sentinelConfig is a Config that finds the master through rs's Sentinel.
// Its keys die with rs's servers, so it needs no cleanup of its own.
func sentinelConfig(rs *testenv.RedisSentinel) conncache.Config {
	return conncache.Config{
		Addrs:        []string{rs.SentinelAddr()},
		MasterName:   testenv.SentinelMaster,
		KeyPrefix:    "chihaya-test-sentinel:",
		PeerLifetime: time.Minute,
		Timeout:      2 * time.Second,
		SyncInterval: 100 * time.Millisecond,
	}
}

// TestSentinelFailover runs two instances that find Redis through a
// Sentinel, then stops the master: announces are answered throughout, and
// once the Sentinel has promoted the replica, which starts with whatever
// had replicated, mirroring resumes in both directions.
func TestSentinelFailover(t *testing.T) {
	testenv.RedisAddr(t) // Redis tests are wanted; same skip rules as the others
	rs := testenv.StartRedisSentinel(t)
	cfg := sentinelConfig(rs)
	a, b := startInstance(t, "A", cfg), startInstance(t, "B", cfg)

	ihs := make([]peertable.InfoHash, 8)
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
	eventually(t, within, "B sees A's peers through the Sentinel's master", seesAll(b, 7001))

	old := rs.StopMaster()
	// Answered while the Sentinel fails over.
	announceAll(ua, 7002)
	announceAll(ub, 7003)
	if now := rs.WaitFailover(t, old); now == old {
		t.Fatalf("the master is still %s", old)
	}

	eventually(t, 20*time.Second, "B sees A's peers announced during the failover", seesAll(b, 7002))
	eventually(t, 20*time.Second, "A sees B's peers announced during the failover", seesAll(a, 7003))
	announceAll(ua, 7004)
	eventually(t, 5*time.Second, "B sees A's peers announced after the failover", seesAll(b, 7004))
	for _, in := range []*instance{a, b} {
		eventually(t, 10*time.Second, fmt.Sprintf("%s healthy after the failover", in.name), func() bool {
			return in.mirror.Stats().Healthy
		})
	}
}
