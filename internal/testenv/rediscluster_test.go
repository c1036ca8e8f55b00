package testenv

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestRedisClusterFailover(t *testing.T) {
	RedisAddr(t) // Redis tests are wanted; same skip rules as the others
	rc := StartRedisCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs()})
	defer c.Close()
	const n = 100
	for i := range n {
		if err := c.Set(ctx, fmt.Sprint("k", i), i, 0).Err(); err != nil {
			t.Fatalf("SET k%d: %v", i, err)
		}
	}
	masters := rc.Masters()
	if len(masters) != 3 {
		t.Fatalf("Masters() = %v, want 3", masters)
	}
	// Replication is asynchronous; without this the failover could lose
	// the keys the test reads back.
	for _, m := range masters {
		waitReplicated(t, ctx, m)
	}

	victim := masters[0]
	rc.StopNode(victim)
	rc.WaitHealthy(t)
	after := rc.Masters()
	if len(after) != 3 || slices.Contains(after, victim) {
		t.Errorf("Masters() after stopping %s = %v, want 3 others (a replica promoted)", victim, after)
	}

	// go-redis reloads the slot layout on MOVED, but a dead master gives
	// "connection refused" instead, and its periodic reload
	// (ClusterStateReloadInterval) defaults to 60 s in go-redis v9.23;
	// clients of a failed-over cluster must ask for a reload themselves.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.ReloadState(ctx)
		if c.Get(ctx, "k0").Err() == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for i := range n {
		k := fmt.Sprint("k", i)
		if got, err := c.Get(ctx, k).Int(); err != nil || got != i {
			t.Errorf("GET %s after failover = %d, %v; want %d, nil", k, got, err, i)
		}
		if err := c.Set(ctx, k, i+n, 0).Err(); err != nil {
			t.Errorf("SET %s after failover: %v", k, err)
		}
	}
}

var replOffset = regexp.MustCompile(`master_repl_offset:(\d+)`)
var slaveOffset = regexp.MustCompile(`slave0:.*offset=(\d+)`)

// waitReplicated waits until the replica of the master at addr has
// acknowledged everything the master has written.
func waitReplicated(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := c.Info(ctx, "replication").Result()
		if err != nil {
			t.Fatalf("INFO replication on %s: %v", addr, err)
		}
		m, s := replOffset.FindStringSubmatch(info), slaveOffset.FindStringSubmatch(info)
		if m != nil && s != nil && m[1] == s[1] {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica of %s did not catch up within 10s:\n%s", addr, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
