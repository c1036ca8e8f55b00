package conncache_test

import (
	"context"
	"log"
	"time"

	"github.com/chihaya/chihaya/conncache"
	_ "github.com/chihaya/chihaya/conncache/redis"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// The daemon's wiring: the local table's OnExpire must reach the Mirror,
// which is created after the table.
func Example() {
	cfg := conncache.Config{Addrs: []string{"127.0.0.1:6379"}, PeerLifetime: 31 * time.Minute}
	pool, err := conncache.Open("redis", cfg) // nil, nil for "" or "none"
	if err != nil {
		log.Fatal(err)
	}
	var mirror *conncache.Mirror
	tcfg := peertable.Config{PeerLifetime: cfg.PeerLifetime, RefreshEvery: cfg.RefreshEvery}
	if pool != nil {
		tcfg.OnExpire = func(ih peertable.InfoHash, p peertable.Peer) { mirror.Expired(ih, p) }
	}
	local, err := peertable.New(tcfg)
	if err != nil {
		log.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{}, local)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if pool != nil {
		defer pool.Close()
		mirror = conncache.NewMirror(pool, local, cfg)
		tr.SetHooks(tracker.Hooks{Remote: mirror.Remote(), Mirror: mirror})
		go mirror.Run(ctx) // the daemon waits for it on shutdown
	}
	// ... serve UDP and HTTP over tr; export mirror.Stats() as metrics.
}
