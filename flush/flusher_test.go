package flush

import (
	"context"
	"maps"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

func newTable(t *testing.T, cfg peertable.Config) *peertable.Table {
	t.Helper()
	tb, err := peertable.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func newTestFlusher(t *testing.T, s Store, tb *peertable.Table, cfg FlusherConfig) *Flusher {
	t.Helper()
	f, err := NewFlusher(s, tb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
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
	tb := newTable(t, peertable.Config{})
	f := newTestFlusher(t, s, tb, FlusherConfig{})
	ctx := context.Background()
	announceTo(tb, 1, 1, true, peertable.EventStarted)
	announceTo(tb, 2, 1, false, peertable.EventStarted)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	announceTo(tb, 2, 2, false, peertable.EventStarted) // swarm 2 changes
	announceTo(tb, 1, 1, true, peertable.EventStopped)  // swarm 1 empties (kept until swept)
	announceTo(tb, 3, 1, false, peertable.EventStarted) // swarm 3 is new
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
		tb := newTable(t, peertable.Config{PeerLifetime: time.Minute})
		tb.Tick(time.Now())
		f := newTestFlusher(t, s, tb, FlusherConfig{})
		announceTo(tb, 1, 1, false, peertable.EventStarted)
		announceTo(tb, 2, 1, false, peertable.EventStarted)
		f.Flush(context.Background())
		time.Sleep(30 * time.Second)
		tb.Tick(time.Now())
		announceTo(tb, 2, 1, false, peertable.EventNone)
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
	tb := newTable(t, peertable.Config{})
	f := newTestFlusher(t, s, tb, FlusherConfig{})
	ctx := context.Background()
	announceTo(tb, 1, 1, false, peertable.EventStarted)
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
	announceTo(tb, 2, 1, false, peertable.EventStarted)
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
		tb := newTable(t, peertable.Config{})
		f := newTestFlusher(t, s, tb, FlusherConfig{})
		announceTo(tb, 1, 1, false, peertable.EventStarted)
		cancel, wait := testenv.Background(f.Run)
		time.Sleep(12 * time.Second)
		synctest.Wait()
		if got := len(s.swarmLog); got != 3 {
			t.Errorf("%d flushes in 12s at a 5s interval, want 3 (at 0, 5, 10s)", got)
		}
		if got := s.swarmsOf(f.Process()); len(got) != 1 {
			t.Errorf("store holds %v, want 1 swarm", got)
		}
		cancel()
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		if got := s.swarmsOf(f.Process()); len(got) != 0 {
			t.Errorf("after shutdown the store holds %v, want nothing", got)
		}
	})
}

// complete makes a new leecher on host port announce started and then
// completed in swarm ih: one completed download.
func complete(tb *peertable.Table, ih byte, port uint16) {
	announceTo(tb, ih, port, false, peertable.EventStarted)
	announceTo(tb, ih, port, true, peertable.EventCompleted)
}

func TestFlusherCreditsCompletedOnce(t *testing.T) {
	s := newMemStore()
	tb := newTable(t, peertable.Config{})
	ctx := context.Background()
	complete(tb, 1, 1) // before NewFlusher: restored, already credited
	f := newTestFlusher(t, s, tb, FlusherConfig{})
	complete(tb, 1, 2)
	complete(tb, 2, 1)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// A batch that fails before it commits is retried unchanged while new
	// completions wait for the next one.
	complete(tb, 1, 3)
	s.setFail(func(string) (bool, error) { return false, errInjected })
	if err := f.Flush(ctx); err == nil {
		t.Fatal("Flush with a failing store succeeded")
	}
	complete(tb, 2, 2)
	complete(tb, 3, 1)
	if err := f.Flush(ctx); err == nil {
		t.Fatal("Flush with a failing store succeeded")
	}
	if !f.Stats().Failing {
		t.Error("Stats().Failing is false while flushes fail")
	}
	// The next attempt commits but its reply is lost: the retry must
	// apply nothing.
	s.setFail(func(string) (bool, error) { return true, errInjected })
	if err := f.Flush(ctx); err == nil {
		t.Fatal("Flush with a lost reply succeeded")
	}
	s.setFail(nil)
	if err := f.Flush(ctx); err != nil { // the retry of batch 2
		t.Fatal(err)
	}
	if f.Stats().Failing {
		t.Error("Stats().Failing is true after a flush succeeded")
	}
	if err := f.Flush(ctx); err != nil { // batch 3: what collected meanwhile
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil { // nothing new
		t.Fatal(err)
	}

	type sent struct {
		seq   uint64
		delta map[peertable.InfoHash]uint64
	}
	var got []sent
	for _, b := range s.swarmLog {
		d := make(map[peertable.InfoHash]uint64)
		for _, c := range b.Completed {
			d[c.InfoHash] = c.Completed
		}
		got = append(got, sent{b.Seq, d})
	}
	want := []sent{
		{1, map[peertable.InfoHash]uint64{{1}: 1, {2}: 1}},
		{2, map[peertable.InfoHash]uint64{{1}: 1}},
		{2, map[peertable.InfoHash]uint64{{1}: 1}},
		{2, map[peertable.InfoHash]uint64{{1}: 1}},
		{2, map[peertable.InfoHash]uint64{{1}: 1}},
		{3, map[peertable.InfoHash]uint64{{2}: 1, {3}: 1}},
		{0, map[peertable.InfoHash]uint64{}},
	}
	if len(got) != len(want) {
		t.Fatalf("%d WriteSwarms calls %v, want %d: %v", len(got), got, len(want), want)
	}
	for i := range want {
		if got[i].seq != want[i].seq || !maps.Equal(got[i].delta, want[i].delta) {
			t.Errorf("call %d sent completed batch %d %v, want %d %v", i, got[i].seq, got[i].delta, want[i].seq, want[i].delta)
		}
	}
	wantTotal := map[peertable.InfoHash]uint64{{1}: 2, {2}: 2, {3}: 1}
	if got := s.completedCounts(); !maps.Equal(got, wantTotal) {
		t.Errorf("cumulative completed = %v, want %v (swarm 1's first download was restored, not credited)", got, wantTotal)
	}
	if st := f.Stats(); st.Errors != 3 || st.PendingKeys != 0 {
		t.Errorf("Stats() = %+v, want 3 errors and nothing pending", st)
	}
}

// TestFlusherCompletedSwarmGoneAndBack checks that a swarm removed by the
// sweep and created again counts from zero.
func TestFlusherCompletedSwarmGoneAndBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		tb := newTable(t, peertable.Config{PeerLifetime: time.Minute})
		tb.Tick(time.Now())
		f := newTestFlusher(t, s, tb, FlusherConfig{})
		ctx := context.Background()
		complete(tb, 1, 1)
		complete(tb, 1, 2)
		complete(tb, 1, 3)
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Minute)
		tb.Tick(time.Now())
		tb.Sweep() // swarm 1 goes, count and all
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		complete(tb, 1, 4) // back, with a count of 1 < 3
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if got := s.completedCounts()[peertable.InfoHash{1}]; got != 4 {
			t.Errorf("cumulative completed = %d, want 4", got)
		}
	})
}

// TestFlusherRunBacksOff fails a Flusher's store for a minute and checks
// the retries back off up to MaxBackoff, the failing spell is logged
// once when it starts and once when it ends, and flushes go back to every
// Interval afterwards.
func TestFlusherRunBacksOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		tb := newTable(t, peertable.Config{})
		logger, logs := testenv.Logger()
		cfg := FlusherConfig{Interval: 5 * time.Second, MaxBackoff: 8 * time.Second, Logger: logger}
		f := newTestFlusher(t, s, tb, cfg)
		var attempts []time.Time
		failUntil := time.Now().Add(time.Minute)
		s.setFail(func(op string) (bool, error) {
			if op != "swarms" {
				return true, nil
			}
			attempts = append(attempts, time.Now())
			if time.Now().Before(failUntil) {
				return false, errInjected
			}
			return true, nil
		})
		complete(tb, 1, 1)
		cancel, wait := testenv.Background(f.Run)
		time.Sleep(90 * time.Second)
		synctest.Wait()
		cancel()
		if err := wait(); err != nil {
			t.Fatal(err)
		}

		failed := 0
		for i, at := range attempts {
			if at.Before(failUntil) {
				failed++
			}
			if i == 0 {
				continue
			}
			gap := at.Sub(attempts[i-1])
			switch {
			case i == 1 && gap > time.Second:
				t.Errorf("first retry after %v, want at most the initial backoff (1s)", gap)
			case attempts[i-1].Before(failUntil) && gap > cfg.MaxBackoff:
				t.Errorf("retry %d after %v, want at most MaxBackoff %v", i, gap, cfg.MaxBackoff)
			case !attempts[i-1].Before(failUntil) && i < len(attempts)-1 && gap != cfg.Interval:
				t.Errorf("after recovery, attempt %d came %v after the last, want Interval %v", i, gap, cfg.Interval)
			}
		}
		// The backoff goes 1, 2, 4, 8, 8... s and each wait is between
		// half of it and all of it, so the minute of failures holds 10
		// (waits of 1, 2, 4, 8, 8... s) to 18 (0.5, 1, 2, 4, 4... s)
		// attempts. The last attempt (Run's final flush) comes at
		// cancellation.
		if failed < 10 || failed > 18 {
			t.Errorf("%d failed attempts in a minute, want 10 to 18 (backoff doubling from 1s, capped at %v)", failed, cfg.MaxBackoff)
		}
		if st := f.Stats(); st.Errors != uint64(failed) {
			t.Errorf("Stats().Errors = %d, want %d", st.Errors, failed)
		}
		lines := logs.Lines()
		if len(lines) != 2 ||
			!strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "swarm flush failing") || !strings.Contains(lines[0], "injected failure") ||
			!strings.Contains(lines[1], "level=INFO") || !strings.Contains(lines[1], "swarm flush recovered") ||
			!strings.Contains(lines[1], "failed_attempts="+strconv.Itoa(failed)) {
			t.Errorf("log = %q, want one failing record and one recovered with failed_attempts=%d", lines, failed)
		}
		if got := s.completedCounts()[peertable.InfoHash{1}]; got != 1 {
			t.Errorf("cumulative completed = %d, want 1", got)
		}
	})
}

// TestFlusherShutdownCreditsCompleted checks that Run's final flush
// credits completions since the last flush before it removes the
// process's rows.
func TestFlusherShutdownCreditsCompleted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		tb := newTable(t, peertable.Config{})
		f := newTestFlusher(t, s, tb, FlusherConfig{})
		cancel, wait := testenv.Background(f.Run)
		synctest.Wait()
		complete(tb, 1, 1)
		complete(tb, 2, 1)
		// The final flush's first attempt fails: it is retried.
		n := 0
		s.setFail(func(string) (bool, error) {
			n++
			if n == 1 {
				return false, errInjected
			}
			return true, nil
		})
		cancel()
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		want := map[peertable.InfoHash]uint64{{1}: 1, {2}: 1}
		if got := s.completedCounts(); !maps.Equal(got, want) {
			t.Errorf("after shutdown, cumulative completed = %v, want %v", got, want)
		}
		if got := s.swarmsOf(f.Process()); len(got) != 0 {
			t.Errorf("after shutdown the store holds %v, want no swarm rows", got)
		}
	})
}
