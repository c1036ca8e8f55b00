package peertable

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestChange(t *testing.T) {
	tb := newTable(t, Config{PeerLifetime: 40 * time.Minute, RefreshEvery: 10 * time.Minute})
	// Periods are counted on the table's 16-bit stamps (seconds here):
	// start at the beginning of one.
	base := int64(1_700_000_000)
	t0 := time.Unix(base-int64(uint16(base)%600), 0)
	tb.Tick(t0)
	ih := hashN(1)
	ann := func(ap netip.AddrPort, ev Event, seeder bool) Result {
		t.Helper()
		_, res := tb.Announce(&Announce{InfoHash: ih, Addr: ap, Event: ev, Seeder: seeder}, nil)
		return res
	}
	for _, ap := range []netip.AddrPort{addr4(1), addr6(1)} {
		tb.Tick(t0)
		steps := []struct {
			at        time.Duration
			ev        Event
			seeder    bool
			want      Change
			completed bool
		}{
			{0, EventStarted, false, ChangeAdded, false},
			{time.Minute, EventNone, false, ChangeNone, false},
			{9 * time.Minute, EventNone, false, ChangeNone, false},
			{11 * time.Minute, EventNone, false, ChangeRefresh, false}, // a new period
			{12 * time.Minute, EventCompleted, true, ChangeRole, true},
			{13 * time.Minute, EventCompleted, true, ChangeNone, false}, // already a seeder: not counted again
			{35 * time.Minute, EventNone, true, ChangeRefresh, false},   // more than a period since the last
			{36 * time.Minute, EventStopped, true, ChangeRemoved, false},
			{37 * time.Minute, EventStopped, true, ChangeNone, false}, // nothing left to remove
		}
		for i, st := range steps {
			tb.Tick(t0.Add(st.at))
			res := ann(ap, st.ev, st.seeder)
			if res.Change != st.want || res.Completed != st.completed {
				t.Errorf("%v step %d (event %d at %v): change %d completed %v, want %d %v", ap, i, st.ev, st.at, res.Change, res.Completed, st.want, st.completed)
			}
		}
	}
}

// A peer that keeps announcing, more often than once a period, is
// reported as refreshed at least once in every two periods.
func TestRefreshBound(t *testing.T) {
	tb := newTable(t, Config{PeerLifetime: 40 * time.Minute})
	period := 10 * time.Minute // PeerLifetime/4
	t0 := time.Unix(1_700_000_123, 0)
	ih := hashN(2)
	last := t0
	for at := time.Duration(0); at < 5*time.Hour; at += 7*time.Minute + 13*time.Second {
		now := t0.Add(at)
		tb.Tick(now)
		_, res := tb.Announce(&Announce{InfoHash: ih, Addr: addr4(3)}, nil)
		if res.Change != ChangeNone {
			if gap := now.Sub(last); gap > 2*period {
				t.Fatalf("refreshed %v after the previous report, more than two periods", gap)
			}
			last = now
		}
	}
}

func TestOnExpire(t *testing.T) {
	var mu sync.Mutex
	var got []Peer
	tb := newTable(t, Config{PeerLifetime: time.Minute, OnExpire: func(ih InfoHash, p Peer) {
		if ih != hashN(5) {
			t.Errorf("expired peer of swarm %x", ih)
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}})
	t0 := time.Unix(1_700_000_000, 0)
	tb.Tick(t0)
	want := []Peer{{addr4(1), true}, {addr4(2), false}, {addr6(3), true}, {addr6(4), false}}
	for _, p := range want {
		tb.Announce(&Announce{InfoHash: hashN(5), Addr: p.Addr, Seeder: p.Seeder}, nil)
	}
	tb.Tick(t0.Add(30 * time.Second))
	if n := tb.Sweep(); n != 0 || len(got) != 0 {
		t.Fatalf("swept %d peers (%v) before their time", n, got)
	}
	tb.Tick(t0.Add(2 * time.Minute))
	if n := tb.Sweep(); n != len(want) {
		t.Fatalf("swept %d peers, want %d", n, len(want))
	}
	sortPeers(got)
	sortPeers(want)
	if !slices.Equal(got, want) {
		t.Fatalf("OnExpire got %v, want %v", got, want)
	}
}

func sortPeers(p []Peer) {
	slices.SortFunc(p, func(a, b Peer) int { return a.Addr.Compare(b.Addr) })
}

func TestSelectAndAppendPeers(t *testing.T) {
	tb := newTable(t, Config{})
	ih := hashN(7)
	var all []Peer
	for i := range 10 {
		p := Peer{addr4(i), i%2 == 0}
		if i >= 6 {
			p.Addr = addr6(i)
		}
		all = append(all, p)
		tb.Announce(&Announce{InfoHash: ih, Addr: p.Addr, Seeder: p.Seeder}, nil)
	}
	before := tb.Stats()

	got := tb.AppendPeers(ih, nil)
	sortPeers(got)
	sortPeers(all)
	if !slices.Equal(got, all) {
		t.Fatalf("AppendPeers = %v, want %v", got, all)
	}
	if p := tb.AppendPeers(hashN(8), nil); len(p) != 0 {
		t.Fatalf("AppendPeers of an unknown swarm = %v", p)
	}

	// A leecher from outside the swarm gets the six IPv4 peers.
	out, c := tb.Select(ih, addr4(100), false, 50, nil)
	if c != (Counts{Seeders: 5, Leechers: 5}) {
		t.Fatalf("Select counts %+v", c)
	}
	if got := decode(t, out, false); len(got) != 6 {
		t.Fatalf("Select gave %v, want the 6 IPv4 peers", got)
	}
	// A seeder in the swarm gets only leechers, never itself.
	out, _ = tb.Select(ih, addr4(0), true, 50, nil)
	for _, ap := range decode(t, out, false) {
		if ap == addr4(0) {
			t.Fatal("Select returned the requester")
		}
		if i := slices.IndexFunc(all, func(p Peer) bool { return p.Addr == ap }); i < 0 || all[i].Seeder {
			t.Fatalf("Select gave a seeder %v a non-leecher %v", addr4(0), ap)
		}
	}
	out, _ = tb.Select(ih, addr6(50), false, 50, nil)
	if got := decode(t, out, true); len(got) != 4 {
		t.Fatalf("IPv6 Select gave %v, want the 4 IPv6 peers", got)
	}
	if out, c := tb.Select(hashN(9), addr4(1), false, 50, nil); len(out) != 0 || c != (Counts{}) {
		t.Fatalf("Select of an unknown swarm = %v %+v", out, c)
	}
	if after := tb.Stats(); after != before {
		t.Fatalf("Select changed the table: %+v, then %+v", before, after)
	}
	if n := testing.AllocsPerRun(100, func() { out, _ = tb.Select(ih, addr4(100), false, 50, out[:0]) }); n != 0 {
		t.Fatalf("Select allocates %v times", n)
	}
}

func TestRaiseCompleted(t *testing.T) {
	tb := newTable(t, Config{})
	ih := hashN(10)
	tb.RaiseCompleted(ih, 5) // unknown: ignored
	if c := tb.Scrape(ih); c.Completed != 0 {
		t.Fatalf("RaiseCompleted created a swarm: %+v", c)
	}
	tb.Announce(&Announce{InfoHash: ih, Addr: addr4(1), Event: EventCompleted, Seeder: true}, nil)
	tb.RaiseCompleted(ih, 7)
	tb.RaiseCompleted(ih, 3) // lower: ignored
	if c := tb.Scrape(ih); c.Completed != 7 {
		t.Fatalf("completed = %d, want 7", c.Completed)
	}
}
