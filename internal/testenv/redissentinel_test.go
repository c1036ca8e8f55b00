package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisSentinel checks the harness: a client through the Sentinel
// writes to the master, and after StopMaster the Sentinel names the
// former replica, which holds what was written.
func TestRedisSentinel(t *testing.T) {
	RedisAddr(t) // Redis tests are wanted; same skip rules as the others
	rs := StartRedisSentinel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: SentinelMaster, SentinelAddrs: []string{rs.SentinelAddr()}})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through the sentinel: %v", err)
	}
	// The replica must have it before the master goes, or the test
	// would depend on replication lag.
	if err := c.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatalf("WAIT for the replica: %v", err)
	}
	old := rs.StopMaster()
	now := rs.WaitFailover(t, old)
	if now == old {
		t.Fatalf("WaitFailover returned the stopped master %s", old)
	}
	if rs.Master() != now {
		t.Errorf("Master() = %s after the failover, want %s", rs.Master(), now)
	}
	var got string
	var err error
	for range 50 { // the client may first try the old master
		if got, err = c.Get(ctx, "k").Result(); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || got != "v" {
		t.Errorf("GET k through the sentinel after the failover = %q, %v; want \"v\"", got, err)
	}
}
