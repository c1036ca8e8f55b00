package peertable

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

func newTable(tb testing.TB, cfg Config) *Table {
	tb.Helper()
	t, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func hashN(n int) InfoHash {
	var ih InfoHash
	binary.BigEndian.PutUint64(ih[:], uint64(n))
	ih[19] = 0xa5
	return ih
}

// addr4 and addr6 return distinct peers of each family for distinct n.
func addr4(n int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}), uint16(6881+n%1000))
}

func addr6(n int) netip.AddrPort {
	b := [16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(n >> 24), 13: byte(n >> 16), 14: byte(n >> 8), 15: byte(n)}
	return netip.AddrPortFrom(netip.AddrFrom16(b), uint16(6881+n%1000))
}

// decode splits compact peers.
func decode(tb testing.TB, b []byte, v6 bool) []netip.AddrPort {
	tb.Helper()
	n := PeerLenV4
	if v6 {
		n = PeerLenV6
	}
	if len(b)%n != 0 {
		tb.Fatalf("compact peers of %d bytes, not a multiple of %d", len(b), n)
	}
	var out []netip.AddrPort
	for ; len(b) > 0; b = b[n:] {
		a, _ := netip.AddrFromSlice(b[:n-2])
		out = append(out, netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[n-2:])))
	}
	return out
}

func checkTable(tb testing.TB, t *Table) {
	tb.Helper()
	if err := t.check(); err != nil {
		tb.Fatalf("invariant: %v", err)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{PeerLifetime: 12 * time.Hour, Swarms: 1}, true},
		{Config{PeerLifetime: 12*time.Hour + time.Second}, false},
		{Config{PeerLifetime: -time.Second}, false},
		{Config{PeerLifetime: time.Millisecond}, true}, // rounded up to a second
		{Config{Swarms: -1}, false},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg)
		if (err == nil) != tt.ok {
			t.Errorf("New(%+v) error = %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
}

// TestAnnounceSemantics plays announces against one swarm and checks the
// counts and the set contents after each.
func TestAnnounceSemantics(t *testing.T) {
	type step struct {
		addr   netip.AddrPort
		event  Event
		seeder bool
		want   Counts
		// roles of the IPv4 peers after the step
		seeders, leechers []netip.AddrPort
	}
	a, b, c := addr4(1), addr4(2), addr4(3)
	aOtherPort := netip.AddrPortFrom(a.Addr(), a.Port()+1)
	tests := []struct {
		name  string
		steps []step
	}{
		{"started then stopped", []step{
			{a, EventStarted, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
			{a, EventStopped, false, Counts{0, 0, 0}, nil, nil},
		}},
		{"re-announce updates, no duplicate", []step{
			{a, EventStarted, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
			{a, EventNone, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
			{a, EventNone, true, Counts{1, 0, 0}, []netip.AddrPort{a}, nil},
			{a, EventNone, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
		}},
		{"another port is another peer", []step{
			{a, EventStarted, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
			{aOtherPort, EventStarted, true, Counts{1, 1, 0}, []netip.AddrPort{aOtherPort}, []netip.AddrPort{a}},
		}},
		{"forged stop removes nothing", []step{
			{a, EventStarted, true, Counts{1, 0, 0}, []netip.AddrPort{a}, nil},
			{b, EventStopped, false, Counts{1, 0, 0}, []netip.AddrPort{a}, nil},
			{aOtherPort, EventStopped, true, Counts{1, 0, 0}, []netip.AddrPort{a}, nil},
		}},
		{"completed counts once per peer", []step{
			{a, EventStarted, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
			{a, EventCompleted, true, Counts{1, 0, 1}, []netip.AddrPort{a}, nil},
			{a, EventCompleted, true, Counts{1, 0, 1}, []netip.AddrPort{a}, nil},
			{b, EventCompleted, true, Counts{2, 0, 2}, []netip.AddrPort{a, b}, nil},
			{a, EventStopped, true, Counts{1, 0, 2}, []netip.AddrPort{b}, nil},
			{a, EventCompleted, true, Counts{2, 0, 3}, []netip.AddrPort{b, a}, nil},
		}},
		{"stopped for an unknown peer creates nothing", []step{
			{a, EventStarted, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
			{c, EventStopped, true, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
		}},
		{"swap-remove keeps the others", []step{
			{a, EventStarted, false, Counts{0, 1, 0}, nil, []netip.AddrPort{a}},
			{b, EventStarted, false, Counts{0, 2, 0}, nil, []netip.AddrPort{a, b}},
			{c, EventStarted, false, Counts{0, 3, 0}, nil, []netip.AddrPort{a, b, c}},
			{a, EventStopped, false, Counts{0, 2, 0}, nil, []netip.AddrPort{c, b}},
			{c, EventNone, true, Counts{1, 1, 0}, []netip.AddrPort{c}, []netip.AddrPort{b}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := newTable(t, Config{})
			ih := hashN(1)
			for i, st := range tt.steps {
				_, res := tb.Announce(&Announce{InfoHash: ih, Addr: st.addr, Event: st.event, Seeder: st.seeder}, nil)
				if res.Counts != st.want {
					t.Errorf("step %d: Announce(%v, event %d) counts = %+v, want %+v", i, st.addr, st.event, res.Counts, st.want)
				}
				if got := tb.Scrape(ih); got != st.want {
					t.Errorf("step %d: Scrape = %+v, want %+v", i, got, st.want)
				}
				s, l := tb.contents(ih, false)
				if !slices.Equal(s, st.seeders) || !slices.Equal(l, st.leechers) {
					t.Errorf("step %d: seeders %v leechers %v, want %v and %v", i, s, l, st.seeders, st.leechers)
				}
				checkTable(t, tb)
			}
		})
	}
}

func TestStoppedUnknownSwarmCreatesNothing(t *testing.T) {
	tb := newTable(t, Config{})
	for _, addr := range []netip.AddrPort{addr4(1), addr6(1)} {
		dst, res := tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr, Event: EventStopped, NumWant: 50}, nil)
		if len(dst) != 0 || res != (Result{}) {
			t.Errorf("stopped %v on unknown swarm = %d bytes, %+v; want nothing", addr, len(dst), res)
		}
	}
	if st := tb.Stats(); st != (Stats{}) {
		t.Errorf("Stats after stops = %+v, want zero", st)
	}
	// An IPv4 swarm gets no IPv6 set from a stop either.
	tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr4(1)}, nil)
	tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr6(1), Event: EventStopped}, nil)
	if st := tb.Stats(); st != (Stats{Swarms: 1, PeersV4: 1}) {
		t.Errorf("Stats = %+v, want one swarm, one IPv4 peer", st)
	}
}

func TestFamiliesAreSeparate(t *testing.T) {
	tb := newTable(t, Config{})
	ih := hashN(7)
	for i := range 20 {
		tb.Announce(&Announce{InfoHash: ih, Addr: addr4(i), Seeder: i%2 == 0}, nil)
		tb.Announce(&Announce{InfoHash: ih, Addr: addr6(i), Seeder: i%3 == 0}, nil)
	}
	if got, want := tb.Scrape(ih), (Counts{Seeders: 10 + 7, Leechers: 10 + 13}); got != want {
		t.Errorf("Scrape = %+v, want totals over both families %+v", got, want)
	}
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			self := addr4(100)
			if v6 {
				self = addr6(100)
			}
			dst, _ := tb.Announce(&Announce{InfoHash: ih, Addr: self, NumWant: 100}, nil)
			peers := decode(t, dst, v6)
			if len(peers) != 20 {
				t.Errorf("got %d peers, want the 20 of the family", len(peers))
			}
			for _, p := range peers {
				if p.Addr().Is4() == v6 {
					t.Errorf("requester of IPv6=%v got %v", v6, p)
				}
			}
		})
	}
	checkTable(t, tb)
}

func TestPeerSelection(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{3, 40, 1000} { // 40 and 1000 use the key index
			t.Run(fmt.Sprintf("v6=%v/peers=%d", v6, n), func(t *testing.T) {
				addr := addr4
				if v6 {
					addr = addr6
				}
				tb := newTable(t, Config{})
				ih := hashN(1)
				seeder := func(i int) bool { return i%4 == 0 }
				for i := range n {
					tb.Announce(&Announce{InfoHash: ih, Addr: addr(i), Seeder: seeder(i)}, nil)
				}
				checkTable(t, tb)
				isSeeder := map[netip.AddrPort]bool{}
				for i := range n {
					isSeeder[addr(i)] = seeder(i)
				}
				for _, want := range []int{0, -1, 1, 5, 50, n - 1, n, n + 10} {
					for _, req := range []int{0, 1, 2} { // a seeder, then leechers
						self := addr(req)
						dst, _ := tb.Announce(&Announce{InfoHash: ih, Addr: self, Seeder: seeder(req), NumWant: want}, nil)
						got := decode(t, dst, v6)
						limit := max(0, want)
						avail := n - 1 // everyone but self
						if seeder(req) {
							avail = n - (n+3)/4 // the leechers
						}
						if len(got) != min(limit, avail) {
							t.Errorf("NumWant %d from %v: got %d peers, want %d", want, self, len(got), min(limit, avail))
						}
						dup := map[netip.AddrPort]bool{}
						for _, p := range got {
							if p == self {
								t.Errorf("NumWant %d: %v was given itself", want, self)
							}
							if seeder(req) && isSeeder[p] {
								t.Errorf("seeder %v was given seeder %v", self, p)
							}
							if _, ok := isSeeder[p]; !ok {
								t.Errorf("got unknown peer %v", p)
							}
							if dup[p] {
								t.Errorf("peer %v given twice", p)
							}
							dup[p] = true
						}
					}
				}
			})
		}
	}
}

// TestLeecherGetsBothRoles checks the proportional split: from a swarm of
// 1/4 seeders, 40 peers hold about 10 seeders.
func TestLeecherGetsBothRoles(t *testing.T) {
	tb := newTable(t, Config{})
	ih := hashN(1)
	for i := range 400 {
		tb.Announce(&Announce{InfoHash: ih, Addr: addr4(i), Seeder: i < 100}, nil)
	}
	dst, _ := tb.Announce(&Announce{InfoHash: ih, Addr: addr4(1000), NumWant: 40}, nil)
	seeders := 0
	for _, p := range decode(t, dst, false) {
		if p.Addr().As4()[3] < 100 && p.Addr().As4()[2] == 0 {
			seeders++
		}
	}
	if seeders != 10 {
		t.Errorf("leecher got %d seeders of 40 peers, want 10 (a quarter)", seeders)
	}
}

func TestRequestersSeeDifferentSubsets(t *testing.T) {
	tb := newTable(t, Config{})
	ih := hashN(1)
	for i := range 1000 {
		tb.Announce(&Announce{InfoHash: ih, Addr: addr4(i)}, nil)
	}
	seen := map[string]bool{}
	union := map[netip.AddrPort]bool{}
	for r := range 20 {
		dst, _ := tb.Announce(&Announce{InfoHash: ih, Addr: addr4(2000 + r), NumWant: 50}, nil)
		seen[string(dst)] = true
		for _, p := range decode(t, dst, false) {
			union[p] = true
		}
	}
	// Random starts collide now and then, so the bounds are loose: failing
	// them takes a broken random start, not bad luck.
	if len(seen) < 10 {
		t.Errorf("20 requesters saw %d distinct subsets, want nearly all distinct", len(seen))
	}
	if len(union) < 400 { // about 640 expected
		t.Errorf("20 requesters of 50 saw %d distinct peers of 1000, want them spread over the swarm", len(union))
	}
}

func TestSweep(t *testing.T) {
	const life = 10 * time.Minute
	for _, n := range []int{1, 100, 5000} { // 5000 crosses sweep batches
		t.Run(fmt.Sprintf("peers=%d", n), func(t *testing.T) {
			tb := newTable(t, Config{PeerLifetime: life})
			t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			tb.Tick(t0)
			for i := range n {
				tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr4(i), Seeder: i%2 == 0}, nil)
				tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr6(i), Seeder: i%3 == 0}, nil)
				tb.Announce(&Announce{InfoHash: hashN(2), Addr: addr4(i)}, nil)
			}
			tb.Tick(t0.Add(life / 2))
			for i := range n / 2 { // half of swarm 1 announces again
				tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr4(i), Seeder: i%2 == 0}, nil)
				tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr6(i), Seeder: i%3 == 0}, nil)
			}
			tb.Tick(t0.Add(life))
			if got := tb.Sweep(); got != 0 {
				t.Errorf("Sweep at exactly the lifetime removed %d peers, want 0", got)
			}
			tb.Tick(t0.Add(life + time.Second))
			if got, want := tb.Sweep(), 3*n-2*(n/2); got != want {
				t.Errorf("Sweep after the lifetime removed %d peers, want %d", got, want)
			}
			checkTable(t, tb)
			want := Stats{Swarms: 1, PeersV4: n / 2, PeersV6: n / 2}
			if n/2 == 0 {
				want = Stats{}
			}
			if got := tb.Stats(); got != want {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
			if got := tb.Scrape(hashN(2)); got != (Counts{}) {
				t.Errorf("Scrape of the emptied swarm = %+v, want zeros", got)
			}
			// A stale peer is not handed out even before a sweep.
			tb.Tick(t0.Add(life + life/2 + time.Second))
			dst, _ := tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr4(n + 1), NumWant: 50}, nil)
			if len(dst) != 0 {
				t.Errorf("got %d bytes of stale peers, want none", len(dst))
			}
			tb.Tick(t0.Add(3 * life))
			tb.Sweep()
			if got := tb.Stats(); got != (Stats{}) {
				t.Errorf("Stats after everyone expired = %+v, want zero", got)
			}
			checkTable(t, tb)
			// A swarm removed by the sweep comes back on the next announce.
			_, res := tb.Announce(&Announce{InfoHash: hashN(2), Addr: addr4(1)}, nil)
			if res.Counts != (Counts{Leechers: 1}) {
				t.Errorf("announce after removal: counts %+v, want one leecher", res.Counts)
			}
		})
	}
}

// TestStaleSwarmPick announces into a swarm of 5,000 peers that have all
// gone stale before the sweep came, plus a few fresh ones: the pick may
// give fewer than all the fresh peers (it visits a bounded number of
// slots), but never a stale one, never itself, and the same pick in a
// live swarm of the same size still gives all it asked for.
func TestStaleSwarmPick(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			addr := addr4
			if v6 {
				addr = addr6
			}
			tb := newTable(t, Config{PeerLifetime: time.Minute})
			t0 := time.Unix(1_700_000_000, 0)
			tb.Tick(t0)
			ih := hashN(10)
			const n, fresh = 5000, 20
			for i := range n {
				tb.Announce(&Announce{InfoHash: ih, Addr: addr(i)}, nil)
			}
			a := &Announce{InfoHash: ih, Addr: addr(n + fresh), NumWant: 50}
			got, _ := tb.Announce(a, nil)
			if len(decode(t, got, v6)) != 50 {
				t.Fatalf("live swarm: %d peers, want 50", len(decode(t, got, v6)))
			}

			tb.Tick(t0.Add(2 * time.Minute)) // all n are stale, none swept
			isFresh := make(map[netip.AddrPort]bool)
			for i := n; i < n+fresh; i++ {
				tb.Announce(&Announce{InfoHash: ih, Addr: addr(i)}, nil)
				isFresh[addr(i)] = true
			}
			for range 100 {
				got, _ := tb.Announce(a, nil)
				peers := decode(t, got, v6)
				if len(peers) > fresh {
					t.Fatalf("stale swarm: %d peers, more than the %d fresh ones", len(peers), fresh)
				}
				for _, p := range peers {
					if !isFresh[p] {
						t.Fatalf("stale swarm: got %v, which is stale or the requester", p)
					}
				}
			}
		})
	}
}

// TestLargeSwarmChurn drives one swarm's sets through growth, the key
// index, role changes, removals, shrinking and back below the index.
func TestLargeSwarmChurn(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("v6=%v", v6), func(t *testing.T) {
			addr := addr4
			if v6 {
				addr = addr6
			}
			tb := newTable(t, Config{PeerLifetime: time.Minute})
			t0 := time.Unix(1_700_000_000, 0)
			tb.Tick(t0)
			ih := hashN(9)
			for i := range 3000 {
				tb.Announce(&Announce{InfoHash: ih, Addr: addr(i), Seeder: i%5 == 0}, nil)
			}
			checkTable(t, tb)
			for i := range 3000 {
				if i%7 == 0 {
					tb.Announce(&Announce{InfoHash: ih, Addr: addr(i), Event: EventStopped}, nil)
				} else {
					tb.Announce(&Announce{InfoHash: ih, Addr: addr(i), Seeder: i%3 == 0}, nil)
				}
			}
			checkTable(t, tb)
			tb.Tick(t0.Add(2 * time.Minute))
			for i := range 20 {
				tb.Announce(&Announce{InfoHash: ih, Addr: addr(i), Seeder: i%2 == 0}, nil)
			}
			tb.Sweep()
			checkTable(t, tb)
			// Peers 0-19 announced after the jump (0, 7 and 14 coming back
			// from a stop); everyone else is stale.
			if c := tb.Scrape(ih); c.Seeders != 10 || c.Leechers != 10 {
				t.Errorf("after sweep: %+v, want the 20 fresh peers, 10 seeding", c)
			}
		})
	}
}

func TestAnnounceDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{10, 1000} {
			t.Run(fmt.Sprintf("v6=%v/peers=%d", v6, n), func(t *testing.T) {
				tb, a := newSwarm(t, Config{}, v6, n)
				dst := make([]byte, 0, 50*PeerLenV6)
				allocs := testing.AllocsPerRun(100, func() {
					a.Seeder = !a.Seeder // a role change each time
					dst, _ = tb.Announce(a, dst[:0])
				})
				if allocs != 0 {
					t.Errorf("Announce allocated %v times per call, want 0", allocs)
				}
				if allocs := testing.AllocsPerRun(100, func() { tb.Scrape(a.InfoHash) }); allocs != 0 {
					t.Errorf("Scrape allocated %v times per call, want 0", allocs)
				}
			})
		}
	}
}

// newSwarm returns a table with one swarm of n peers (a quarter seeders)
// and a leecher's announce for an existing peer of it.
func newSwarm(tb testing.TB, cfg Config, v6 bool, n int) (*Table, *Announce) {
	tb.Helper()
	t := newTable(tb, cfg)
	addr := addr4
	if v6 {
		addr = addr6
	}
	ih := hashN(42)
	for i := range n {
		t.Announce(&Announce{InfoHash: ih, Addr: addr(i), Seeder: i%4 == 0}, nil)
	}
	return t, &Announce{InfoHash: ih, Addr: addr(1), NumWant: 50}
}

func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		tb := newTable(t, Config{PeerLifetime: time.Minute})
		tb.Announce(&Announce{InfoHash: hashN(1), Addr: addr4(1)}, nil)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- tb.Run(ctx) }()

		time.Sleep(30 * time.Second) // fake time: the bubble's clock
		synctest.Wait()
		if got := tb.Stats().PeersV4; got != 1 {
			t.Errorf("after 30s: %d peers, want 1", got)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := tb.Stats(); got != (Stats{}) {
			t.Errorf("after 90s: Stats = %+v, want the peer and swarm swept", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}
