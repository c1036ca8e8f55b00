package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestStartRedis(t *testing.T) {
	RedisAddr(t) // Redis tests are wanted; same skip rules as the others
	s := StartRedis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET on %s: %v", s.Addr(), err)
	}

	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Errorf("PING after Stop = nil, want an error")
	}

	s.Start()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != redis.Nil {
		t.Errorf("GET k after restart = %q, %v; want redis.Nil (restart loses data)", got, err)
	}
}
