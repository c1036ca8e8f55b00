package flush

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

func newTable(t *testing.T) *peertable.Table {
	t.Helper()
	tb, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func announceTo(tb *peertable.Table, ih byte, port uint16, seeder bool, ev peertable.Event) {
	a := peertable.Announce{
		InfoHash: peertable.InfoHash{ih},
		Addr:     netip.AddrPortFrom(netip.MustParseAddr("192.0.2.1"), port),
		Event:    ev,
		Seeder:   seeder,
	}
	tb.Announce(&a, nil)
}

func TestFlusherWritesChangesOnly(t *testing.T) {
	s := newMemStore()
	tb := newTable(t)
	f, err := NewFlusher(s, tb, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	announceTo(tb, 1, 1, true, started)
	announceTo(tb, 2, 1, false, started)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	announceTo(tb, 2, 2, false, started) // swarm 2 changes
	announceTo(tb, 1, 1, true, stopped)  // swarm 1 empties (kept until swept)
	announceTo(tb, 3, 1, false, started) // swarm 3 is new
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil { // nothing changed
		t.Fatal(err)
	}
	log := s.swarmLog
	if len(log) != 3 {
		t.Fatalf("%d WriteSwarms calls, want 3", len(log))
	}
	if !log[0].Full || len(log[0].Upserts) != 2 {
		t.Errorf("first batch = %+v, want full with 2 swarms", log[0])
	}
	if log[1].Full || len(log[1].Upserts) != 3 || len(log[1].Deletes) != 0 {
		t.Errorf("second batch = %+v, want 3 changed swarms (1 emptied, 2 grew, 3 new)", log[1])
	}
	if len(log[2].Upserts) != 0 || len(log[2].Deletes) != 0 {
		t.Errorf("third batch = %+v, want a heartbeat only", log[2])
	}
	got := s.swarmsOf(f.Process())
	want := map[peertable.InfoHash]peertable.Counts{
		{1}: {},
		{2}: {Leechers: 2},
		{3}: {Leechers: 1},
	}
	if len(got) != len(want) {
		t.Errorf("store holds %v, want %v", got, want)
	}
	for ih, c := range want {
		if got[ih] != c {
			t.Errorf("swarm %x = %+v, want %+v", ih[0], got[ih], c)
		}
	}
	if st := f.Stats(); st.Flushes != 3 || st.Rows != 5 || st.Errors != 0 {
		t.Errorf("Stats() = %+v, want 3 flushes of 5 rows", st)
	}
}

func TestFlusherDeletesGoneSwarms(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		tb, err := peertable.New(peertable.Config{PeerLifetime: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		tb.Tick(time.Now())
		f, err := NewFlusher(s, tb, Config{})
		if err != nil {
			t.Fatal(err)
		}
		announceTo(tb, 1, 1, false, started)
		announceTo(tb, 2, 1, false, started)
		f.Flush(context.Background())
		time.Sleep(30 * time.Second)
		tb.Tick(time.Now())
		announceTo(tb, 2, 1, false, none)
		time.Sleep(50 * time.Second)
		tb.Tick(time.Now())
		tb.Sweep() // swarm 1 expires
		if err := f.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		b := s.swarmLog[1]
		if len(b.Deletes) != 1 || b.Deletes[0] != (peertable.InfoHash{1}) || len(b.Upserts) != 0 {
			t.Errorf("batch after swarm 1 expired = %+v, want one delete", b)
		}
		if got := s.swarmsOf(f.Process()); len(got) != 1 {
			t.Errorf("store holds %v, want swarm 2 only", got)
		}
	})
}

func TestFlusherRetriesAndResyncs(t *testing.T) {
	s := newMemStore()
	tb := newTable(t)
	f, err := NewFlusher(s, tb, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	announceTo(tb, 1, 1, false, started)
	s.setFail(func(string) (bool, error) { return false, errInjected })
	if err := f.Flush(ctx); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Flush with a failing store = %v, want the injected error", err)
	}
	if st := f.Stats(); st.Errors != 1 || st.PendingKeys != 1 {
		t.Errorf("Stats() = %+v, want 1 error, 1 pending", st)
	}
	s.setFail(nil)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Another process reaps this one's rows; the next incremental batch
	// is refused and a full one follows.
	s.mu.Lock()
	delete(s.processes, f.Process())
	delete(s.swarms, f.Process())
	s.mu.Unlock()
	announceTo(tb, 2, 1, false, started)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.swarmsOf(f.Process()); len(got) != 2 {
		t.Errorf("after a resync the store holds %v, want both swarms", got)
	}
}

func TestFlusherRunRemovesProcessAtShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		tb := newTable(t)
		f, err := NewFlusher(s, tb, Config{})
		if err != nil {
			t.Fatal(err)
		}
		announceTo(tb, 1, 1, false, started)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- f.Run(ctx) }()
		time.Sleep(12 * time.Second)
		synctest.Wait()
		if got := len(s.swarmLog); got != 3 {
			t.Errorf("%d flushes in 12s at a 5s interval, want 3 (at 0, 5, 10s)", got)
		}
		if got := s.swarmsOf(f.Process()); len(got) != 1 {
			t.Errorf("store holds %v, want 1 swarm", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := s.swarmsOf(f.Process()); len(got) != 0 {
			t.Errorf("after shutdown the store holds %v, want nothing", got)
		}
	})
}
