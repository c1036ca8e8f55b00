package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/conncache/conncachetest"
	"github.com/chihaya/chihaya/internal/testenv"
)

// testPrefix returns a fresh key prefix and deletes its keys at cleanup.
func testPrefix(t testing.TB, addrs []string, cluster bool) string {
	t.Helper()
	var b [6]byte
	rand.Read(b[:])
	prefix := "chihaya-test-" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		c := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: addrs, IsClusterMode: cluster})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		del := func(ctx context.Context, c *goredis.Client) error {
			iter := c.Scan(ctx, 0, globEscape(prefix)+"*", 1000).Iterator()
			for iter.Next(ctx) {
				c.Del(ctx, iter.Val())
			}
			return iter.Err()
		}
		var err error
		if cc, ok := c.(*goredis.ClusterClient); ok {
			err = cc.ForEachMaster(ctx, del)
		} else {
			err = del(ctx, c.(*goredis.Client))
		}
		if err != nil {
			t.Errorf("delete test keys %s*: %v", prefix, err)
		}
	})
	return prefix
}

func testConfig(t testing.TB, addrs []string, cluster bool) conncache.Config {
	return conncache.Config{
		Addrs:        addrs,
		Cluster:      cluster,
		KeyPrefix:    testPrefix(t, addrs, cluster),
		PeerLifetime: time.Minute,
		Timeout:      2 * time.Second,
	}
}

func open(t testing.TB, cfg conncache.Config) *Pool {
	t.Helper()
	p, err := conncache.Open("redis", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p.(*Pool)
}

// proxied is a Pool whose connections go through a testenv.Proxy.
type proxied struct {
	*Pool
	proxy *testenv.Proxy
}

func (p proxied) Cut()     { p.proxy.Cut() }
func (p proxied) Restore() { p.proxy.Restore() }

func TestConformance(t *testing.T) {
	addr := testenv.RedisAddr(t)
	// Pools opened by one subtest share its namespace.
	cfgs := make(map[*testing.T]conncache.Config)
	conncachetest.Run(t, func(t *testing.T) conncache.Pool {
		cfg, ok := cfgs[t]
		if !ok {
			cfg = testConfig(t, []string{addr}, false)
			cfgs[t] = cfg
		}
		// Each pool gets its own proxy, so Cut breaks only that pool.
		px := testenv.NewProxy(t, addr)
		cfg.Addrs = []string{px.Addr()}
		return proxied{open(t, cfg), px}
	})
}

func TestOpenErrors(t *testing.T) {
	for _, cfg := range []conncache.Config{
		{},
		{Addrs: []string{"a:1", "b:2"}, DB: 1},
		{Addrs: []string{"a:1"}, Cluster: true, MasterName: "m"},
	} {
		if p, err := conncache.Open("redis", cfg); err == nil {
			p.Close()
			t.Errorf("Open(%+v) = nil error, want one", cfg)
		}
	}
	// Open does not connect: a process starts while Redis is away.
	p, err := conncache.Open("redis", conncache.Config{Addrs: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatalf("Open with an unreachable address: %v", err)
	}
	p.Close()
}
