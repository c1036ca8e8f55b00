package redis

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

var (
	lo4 = netip.MustParseAddr("127.0.0.1")
	lo6 = netip.MustParseAddr("::1")
)

func mirrorConfig(t *testing.T, addr string) conncache.Config {
	cfg := testConfig(t, []string{addr}, false)
	cfg.SyncInterval = 100 * time.Millisecond
	return cfg
}

// within is the bound: a peer announced to one process is
// returned and counted by another within a second.
const within = time.Second

func TestMirrorTwoInstances(t *testing.T) {
	addr := testenv.RedisAddr(t)
	cfg := mirrorConfig(t, addr)
	a, b := startInstance(t, "A", cfg), startInstance(t, "B", cfg)
	v6 := haveIPv6()
	ih := randomHash()

	// A leecher over IPv4 and, where there is IPv6, a seeder over it.
	if _, ok := newUDPClient(t, a.udpAddr(false)).announce(ih, 5001, 1, peertable.EventStarted); !ok {
		t.Fatal("A did not answer the IPv4 announce")
	}
	wantSeeders := uint32(0)
	if v6 {
		if _, ok := newUDPClient(t, a.udpAddr(true)).announce(ih, 5002, 0, peertable.EventStarted); !ok {
			t.Fatal("A did not answer the IPv6 announce")
		}
		wantSeeders = 1
	}

	// B counts them in its scrapes (UDP and HTTP)...
	sc := newUDPClient(t, b.udpAddr(false))
	eventually(t, within, "B's UDP scrape counts A's peers", func() bool {
		s, _, l, ok := sc.scrape(ih)
		return ok && s == wantSeeders && l == 1
	})
	if s, l := httpScrape(t, b.httpAddr(false), ih); s != int64(wantSeeders) || l != 1 {
		t.Errorf("B's HTTP scrape = %d seeders, %d leechers; want %d, 1", s, l, wantSeeders)
	}

	// ...and returns them, each only to requesters of its family.
	r, ok := newUDPClient(t, b.udpAddr(false)).announce(ih, 5003, 1, peertable.EventStarted)
	if want := []netip.AddrPort{netip.AddrPortFrom(lo4, 5001)}; !ok || !slices.Equal(r.peers, want) {
		t.Errorf("B's UDP IPv4 reply peers = %v (ok %v), want %v", r.peers, ok, want)
	}
	if r.seeders != wantSeeders || r.leechers != 2 {
		t.Errorf("B's UDP IPv4 reply counts %d seeders, %d leechers; want %d, 2", r.seeders, r.leechers, wantSeeders)
	}
	peers, peers6 := httpAnnounce(t, b.httpAddr(false), ih, 5004)
	if want := []netip.AddrPort{netip.AddrPortFrom(lo4, 5001), netip.AddrPortFrom(lo4, 5003)}; !slices.Equal(sortedAddrs(peers), want) || len(peers6) != 0 {
		t.Errorf("B's HTTP IPv4 reply: peers %v, peers6 %v; want %v and none", peers, peers6, want)
	}
	if v6 {
		r, ok := newUDPClient(t, b.udpAddr(true)).announce(ih, 5005, 1, peertable.EventStarted)
		if want := []netip.AddrPort{netip.AddrPortFrom(lo6, 5002)}; !ok || !slices.Equal(r.peers, want) {
			t.Errorf("B's UDP IPv6 reply peers = %v, want %v", r.peers, want)
		}
		peers, peers6 := httpAnnounce(t, b.httpAddr(true), ih, 5006)
		if want := []netip.AddrPort{netip.AddrPortFrom(lo6, 5002), netip.AddrPortFrom(lo6, 5005)}; len(peers) != 0 || !slices.Equal(sortedAddrs(peers6), want) {
			t.Errorf("B's HTTP IPv6 reply: peers %v, peers6 %v; want none and %v", peers, peers6, want)
		}
	}

	// B's peers reach A the same way.
	eventually(t, within, "A sees B's peers", func() bool {
		return len(peersOf(a.mirror.Remote(), ih)) == len(peersOf(b.local, ih))
	})

	// A stop on A is seen on B.
	if _, ok := newUDPClient(t, a.udpAddr(false)).announce(ih, 5001, 1, peertable.EventStopped); !ok {
		t.Fatal("A did not answer the stop")
	}
	eventually(t, within, "B forgets A's stopped peer", func() bool {
		return !slices.Contains(peersOf(b.mirror.Remote(), ih), netip.AddrPortFrom(lo4, 5001))
	})
	for _, in := range []*instance{a, b} {
		if st := in.mirror.Stats(); st.Published == 0 || st.Applied == 0 || st.Errors != 0 || !st.Healthy {
			t.Errorf("%s: Stats = %+v, want published and applied changes, no errors", in.name, st)
		}
	}
}

func TestMirrorCompleted(t *testing.T) {
	cfg := mirrorConfig(t, testenv.RedisAddr(t))
	a, b := startInstance(t, "A", cfg), startInstance(t, "B", cfg)
	ih := randomHash()
	c := newUDPClient(t, a.udpAddr(false))
	c.announce(ih, 5001, 1, peertable.EventStarted)
	c.announce(ih, 5001, 0, peertable.EventCompleted)
	sc := newUDPClient(t, b.udpAddr(false))
	eventually(t, within, "B counts A's completed download", func() bool {
		s, done, _, ok := sc.scrape(ih)
		return ok && s == 1 && done == 1
	})
	// A process that starts later learns the count by loading it.
	late := startInstance(t, "late", cfg)
	lc := newUDPClient(t, late.udpAddr(false))
	eventually(t, 5*time.Second, "a later process loads the count", func() bool {
		s, done, _, ok := lc.scrape(ih)
		return ok && s == 1 && done == 1
	})
}

func TestMirrorKilledProcessExpires(t *testing.T) {
	addr := testenv.RedisAddr(t)
	cfg := mirrorConfig(t, addr)
	cfg.PeerLifetime = 3 * time.Second
	cfg.Grace = time.Second
	a, b := startInstance(t, "A", cfg), startInstance(t, "B", cfg)
	ih := randomHash()
	if _, ok := newUDPClient(t, a.udpAddr(false)).announce(ih, 5001, 1, peertable.EventStarted); !ok {
		t.Fatal("A did not answer")
	}
	eventually(t, within, "B sees A's peer", func() bool { return len(peersOf(b.mirror.Remote(), ih)) == 1 })
	key := a.pool.Key(ih, a.pool.Origin())
	if n, err := b.pool.Client().Exists(context.Background(), key).Result(); err != nil || n != 1 {
		t.Fatalf("EXISTS %s = %d, %v; want 1", key, n, err)
	}
	a.kill(t)

	// The copies outlive the owner's lifetime by RefreshEvery + Grace,
	// then go, in B and in Redis.
	life := cfg.RemoteLifetime()
	eventually(t, life+5*time.Second, "A's peer expires in B", func() bool { return len(peersOf(b.mirror.Remote(), ih)) == 0 })
	eventually(t, 5*time.Second, "A's key expires in Redis", func() bool {
		n, err := b.pool.Client().Exists(context.Background(), key).Result()
		return err == nil && n == 0
	})
	if s, _, l, ok := newUDPClient(t, b.udpAddr(false)).scrape(ih); !ok || s != 0 || l != 0 {
		t.Errorf("B's scrape after A's peers expired = %d seeders, %d leechers (ok %v); want 0, 0", s, l, ok)
	}
}

func TestMirrorOutage(t *testing.T) {
	addr := testenv.RedisAddr(t)
	cfg := mirrorConfig(t, addr)
	pa, pb := testenv.NewProxy(t, addr), testenv.NewProxy(t, addr)
	ca, cb := cfg, cfg
	ca.Addrs, cb.Addrs = []string{pa.Addr()}, []string{pb.Addr()}
	a, b := startInstance(t, "A", ca), startInstance(t, "B", cb)
	ih := randomHash()
	ua, ub := newUDPClient(t, a.udpAddr(false)), newUDPClient(t, b.udpAddr(false))
	ua.announce(ih, 6001, 1, peertable.EventStarted)
	ub.announce(ih, 6002, 1, peertable.EventStarted)
	eventually(t, within, "both see both peers", func() bool {
		return len(peersOf(a.mirror.Remote(), ih)) == 1 && len(peersOf(b.mirror.Remote(), ih)) == 1
	})

	pa.Cut()
	pb.Cut()
	// Announces are answered from local state while Redis is away.
	for _, c := range []struct {
		u    *udpClient
		port uint16
		ev   peertable.Event
	}{
		{ua, 6003, peertable.EventStarted},
		{ua, 6001, peertable.EventStopped},
		{ub, 6004, peertable.EventStarted},
		{ub, 6005, peertable.EventStarted},
	} {
		if _, ok := c.u.announce(ih, c.port, 1, c.ev); !ok {
			t.Errorf("announce of port %d during the outage got no reply", c.port)
		}
	}
	eventually(t, 10*time.Second, "both notice the outage", func() bool {
		return !a.mirror.Stats().Healthy && !b.mirror.Stats().Healthy
	})

	pa.Restore()
	pb.Restore()
	converged := func() bool {
		return slices.Equal(peersOf(a.mirror.Remote(), ih), peersOf(b.local, ih)) &&
			slices.Equal(peersOf(b.mirror.Remote(), ih), peersOf(a.local, ih))
	}
	eventually(t, 10*time.Second, "A and B converge after the outage", converged)
	if got, want := peersOf(b.mirror.Remote(), ih), []netip.AddrPort{netip.AddrPortFrom(lo4, 6003)}; !slices.Equal(got, want) {
		t.Errorf("B's copy of A's peers = %v, want %v", got, want)
	}
	for _, in := range []*instance{a, b} {
		eventually(t, 10*time.Second, in.name+" republishes, reloads and is healthy again", func() bool {
			st := in.mirror.Stats()
			return st.Republishes >= 2 && st.Reloads >= 2 && st.Healthy
		})
		if st := in.mirror.Stats(); st.Errors == 0 {
			t.Errorf("%s: Stats = %+v, want errors counted", in.name, st)
		}
	}
}

// TestMemoryPerPeer stores swarms of 1, 2 and 100 peers and logs what
// Redis spends on them (MEMORY USAGE, all samples).
func TestMemoryPerPeer(t *testing.T) {
	addr := testenv.RedisAddr(t)
	p := open(t, testConfig(t, []string{addr}, false))
	defer p.Close()
	ctx := context.Background()
	for _, fam := range []string{"v4", "v6"} {
		for _, n := range []int{1, 2, 100, 1000} {
			ih := randomHash()
			tx := p.Begin()
			var peers []peertable.Peer
			for i := range n {
				a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
				if fam == "v6" {
					a = netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 14: byte(i >> 8), 15: byte(i)})
				}
				peers = append(peers, peertable.Peer{Addr: netip.AddrPortFrom(a, 6881), Seeder: i%2 == 0})
			}
			tx.Replace(ih, peers, 1)
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			used, err := p.Client().MemoryUsage(ctx, p.Key(ih, p.Origin()), 0).Result()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("family=%s peers=%d: %d bytes, %.1f bytes/peer", fam, n, used, float64(used)/float64(n))
		}
	}
}

// TestCommandsPerAnnounce counts the commands the Mirror sends for one
// batch of announces: one script call per swarm touched and one PUBLISH
// per 64 KiB of notification.
func TestCommandsPerAnnounce(t *testing.T) {
	addr := testenv.RedisAddr(t)
	for _, tc := range []struct{ swarms, peers int }{{1000, 1}, {10, 100}, {1, 1000}} {
		cfg := mirrorConfig(t, addr)
		p := open(t, cfg)
		defer p.Close()
		var cmds atomic.Int64
		p.Client().AddHook(countHook{&cmds})
		// A batch as the Mirror sends it: one Put per announce.
		tx := p.Begin()
		for s := range tc.swarms {
			ih := randomHash()
			for i := range tc.peers {
				tx.Put(ih, peertable.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1000+s))})
			}
		}
		n := tx.Len()
		before := cmds.Load()
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		sent := cmds.Load() - before
		t.Logf("swarms=%d peers/swarm=%d: %d commands for %d announces, %.3f commands/announce", tc.swarms, tc.peers, sent, n, float64(sent)/float64(n))
	}
}

type countHook struct{ n *atomic.Int64 }

func (h countHook) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h countHook) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h countHook) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestMirrorRedisRestart restarts Redis empty (no persistence): both
// processes republish their state into it and keep mirroring.
func TestMirrorRedisRestart(t *testing.T) {
	srv := testenv.StartRedis(t)
	cfg := mirrorConfig(t, srv.Addr())
	a, b := startInstance(t, "A", cfg), startInstance(t, "B", cfg)
	ih := randomHash()
	ua := newUDPClient(t, a.udpAddr(false))
	ua.announce(ih, 8001, 1, peertable.EventStarted)
	eventually(t, within, "B sees A's peer", func() bool { return len(peersOf(b.mirror.Remote(), ih)) == 1 })

	srv.Stop()
	if _, ok := ua.announce(ih, 8002, 1, peertable.EventStarted); !ok {
		t.Error("A did not answer while Redis was down")
	}
	srv.Start()

	key := a.pool.Key(ih, a.pool.Origin())
	eventually(t, 10*time.Second, "A republishes into the restarted Redis", func() bool {
		n, err := b.pool.Client().HLen(context.Background(), key).Result()
		return err == nil && n == 2
	})
	want := []netip.AddrPort{netip.AddrPortFrom(lo4, 8001), netip.AddrPortFrom(lo4, 8002)}
	eventually(t, 10*time.Second, "B has both of A's peers", func() bool {
		return slices.Equal(peersOf(b.mirror.Remote(), ih), want)
	})
	// A process started now loads them from Redis.
	late := startInstance(t, "late", cfg)
	eventually(t, 5*time.Second, "a new process loads A's peers", func() bool {
		return slices.Equal(peersOf(late.mirror.Remote(), ih), want)
	})
}
