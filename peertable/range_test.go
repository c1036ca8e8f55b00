package peertable

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ranged collects what one Range call visits, failing on an info hash
// visited twice.
func ranged(tb testing.TB, t *Table) map[InfoHash]Counts {
	tb.Helper()
	got := map[InfoHash]Counts{}
	t.Range(func(ih InfoHash, c Counts) bool {
		if _, dup := got[ih]; dup {
			tb.Errorf("Range visited %x twice", ih[:8])
		}
		got[ih] = c
		return true
	})
	return got
}

func TestRange(t *testing.T) {
	tb := newTable(t, Config{PeerLifetime: 10 * time.Minute, Swarms: 16})
	if got := ranged(t, tb); len(got) != 0 {
		t.Fatalf("empty table: Range visited %d swarms", len(got))
	}

	// Swarm n has n seeders and 2n leechers over IPv4, n leechers over
	// IPv6 and n completions, so every count differs between swarms.
	const swarms = 100
	want := map[InfoHash]Counts{}
	peer := 0
	for n := 1; n <= swarms; n++ {
		ih := hashN(n)
		for i := range n {
			tb.Announce(&Announce{InfoHash: ih, Addr: addr4(peer), Seeder: true, Event: EventCompleted}, nil)
			tb.Announce(&Announce{InfoHash: ih, Addr: addr4(peer + 1)}, nil)
			tb.Announce(&Announce{InfoHash: ih, Addr: addr4(peer + 2)}, nil)
			tb.Announce(&Announce{InfoHash: ih, Addr: addr6(peer + i)}, nil)
			peer += 3
		}
		want[ih] = Counts{Seeders: uint32(n), Leechers: uint32(3 * n), Completed: uint32(n)}
	}
	got := ranged(t, tb)
	if len(got) != len(want) {
		t.Errorf("Range visited %d swarms, want %d", len(got), len(want))
	}
	for ih, w := range want {
		if c, ok := got[ih]; !ok || c != w {
			t.Errorf("Range gave swarm %x counts %+v (visited %v), want %+v", ih[:8], c, ok, w)
		}
		if c := tb.Scrape(ih); c != w {
			t.Errorf("Scrape(%x) = %+v, want %+v", ih[:8], c, w)
		}
	}

	calls := 0
	tb.Range(func(InfoHash, Counts) bool {
		calls++
		return calls < 5
	})
	if calls != 5 {
		t.Errorf("Range called f %d times after f returned false on the 5th, want 5", calls)
	}

	// f may announce, even into the swarm it is given: Range holds no lock.
	tb.Range(func(ih InfoHash, c Counts) bool {
		if ih == hashN(1) {
			tb.Announce(&Announce{InfoHash: ih, Addr: addr4(1 << 20)}, nil)
		}
		return true
	})
	if c := tb.Scrape(hashN(1)); c.Leechers != 4 {
		t.Errorf("after an announce from f: %+v, want 4 leechers", c)
	}

	// A swarm emptied by stops is still listed, all zero but Completed,
	// until the sweep removes it.
	empty := hashN(swarms + 1)
	tb.Announce(&Announce{InfoHash: empty, Addr: addr4(1 << 21), Event: EventCompleted, Seeder: true}, nil)
	tb.Announce(&Announce{InfoHash: empty, Addr: addr4(1 << 21), Event: EventStopped}, nil)
	if c, ok := ranged(t, tb)[empty]; !ok || c != (Counts{Completed: 1}) {
		t.Errorf("emptied swarm before the sweep: %+v (visited %v), want only Completed 1", c, ok)
	}
	tb.Sweep()
	got = ranged(t, tb)
	if _, ok := got[empty]; ok {
		t.Error("Range visited a swarm the sweep removed")
	}
	if len(got) != swarms {
		t.Errorf("after the sweep: Range visited %d swarms, want %d", len(got), swarms)
	}
}

// TestRangeConcurrent runs Range while announcers create and empty
// swarms in the same shards and the sweep removes them. Swarms that
// nobody touches meanwhile must be visited in every pass exactly once
// with their exact counts; churning swarms may be visited or not, once at
// most, with counts they could have had.
func TestRangeConcurrent(t *testing.T) {
	ops := 40000
	if raceEnabled {
		ops = 10000
	}
	if testing.Short() {
		ops /= 4
	}
	const (
		workers  = 2
		stable   = 200
		churning = 64
		perSwarm = 8 // peers a worker owns in each churning swarm
	)
	// Few shards, so that churn rebuilds the arrays Range is reading.
	tb := newTable(t, Config{Swarms: 64})
	stableHash := func(n int) InfoHash { return hashN(n) }
	churnHash := func(n int) InfoHash { return hashN(1<<16 + n) }
	for n := range stable {
		for i := range n%5 + 1 {
			tb.Announce(&Announce{InfoHash: stableHash(n), Addr: addr4(n<<4 | i), Seeder: i == 0}, nil)
		}
	}
	want := func(n int) Counts { return Counts{Seeders: 1, Leechers: uint32(n % 5)} }

	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 2))
			for range ops {
				a := &Announce{
					InfoHash: churnHash(r.IntN(churning)),
					Addr:     addr6(w<<12 | r.IntN(perSwarm)),
					Seeder:   r.IntN(2) == 0,
				}
				if r.IntN(2) == 0 {
					a.Event = EventStopped // empty swarms often, for the sweep to remove
				}
				tb.Announce(a, nil)
			}
		})
	}
	var bg sync.WaitGroup
	bg.Go(func() {
		for !stop.Load() {
			tb.Sweep()
		}
	})
	bg.Go(func() {
		wg.Wait()
		stop.Store(true)
	})

	// pass checks one Range call and reports whether it was right.
	pass := func(i int) bool {
		got := ranged(t, tb)
		for n := range stable {
			if c, ok := got[stableHash(n)]; !ok || c != want(n) {
				t.Errorf("pass %d: stable swarm %d: %+v (visited %v), want %+v", i, n, c, ok, want(n))
				return false
			}
		}
		for ih, c := range got {
			if ih[0]|ih[1]|ih[2]|ih[3]|ih[4] != 0 || ih[5] > 1 {
				t.Errorf("pass %d: Range visited %x, which nobody announced", i, ih[:8])
				return false
			}
			if ih[5] == 1 && (c.Seeders+c.Leechers > workers*perSwarm || c.Completed != 0) {
				t.Errorf("pass %d: churning swarm %x has counts %+v, beyond its peers", i, ih[:8], c)
				return false
			}
		}
		return true
	}
	// Passes until the announcers are done, then one more that sees the end.
	passes := 0
	for done := false; !done; passes++ {
		done = stop.Load()
		if !pass(passes) {
			break
		}
	}
	bg.Wait()
	t.Logf("%d passes", passes)
}
