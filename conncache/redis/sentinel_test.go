package redis

import (
	"testing"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/internal/testenv"
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

// TestSentinelFailover runs the failover scenario with instances that
// find Redis through a Sentinel, which promotes the replica once the
// master is stopped.
func TestSentinelFailover(t *testing.T) {
	testenv.RedisAddr(t) // Redis tests are wanted; same skip rules as the others
	rs := testenv.StartRedisSentinel(t)
	var old string
	testFailover(t, sentinelConfig(rs), 8, func() { old = rs.StopMaster() }, func() { rs.WaitFailover(t, old) })
}
