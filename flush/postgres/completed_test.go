package postgres

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

var quiet = slog.New(slog.DiscardHandler)

// complete makes host a leecher of swarm ih that then completes: one
// completed download.
func complete(tb *peertable.Table, ih, host byte) {
	peer(tb, ih, host, false, peertable.EventStarted)
	peer(tb, ih, host, true, peertable.EventCompleted)
}

// completedRows reads chihaya_torrent_completed.
func completedRows(t *testing.T, c *pgx.Conn) map[peertable.InfoHash]int64 {
	t.Helper()
	m := make(map[peertable.InfoHash]int64)
	rows, _ := c.Query(context.Background(), "SELECT info_hash, completed, last_completed FROM chihaya_torrent_completed")
	var ih []byte
	var n int64
	var at time.Time
	if _, err := pgx.ForEachRow(rows, []any{&ih, &n, &at}, func() error {
		if at.IsZero() {
			t.Errorf("swarm %x: last_completed is zero", ih)
		}
		m[peertable.InfoHash(ih)] = n
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// stop runs f with a cancelled context: one flush, then the graceful
// shutdown (final flush, rows removed).
func stop(t *testing.T, f *flush.Flusher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Run(ctx); err != nil {
		t.Fatalf("Run at shutdown: %v", err)
	}
}

func newFlusher(t *testing.T, s flush.Store, tb *peertable.Table) *flush.Flusher {
	t.Helper()
	f, err := flush.NewFlusher(s, tb, flush.FlusherConfig{Timeout: 5 * time.Second, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCompletedAcrossRestart stops a process gracefully and starts it
// again, once restored from its snapshot and once with a fresh table:
// cumulative completed counts are neither lost nor doubled.
func TestCompletedAcrossRestart(t *testing.T) {
	dsn := testenv.Database(t)
	s := open(t, dsn)
	c := connect(t, dsn)
	ctx := context.Background()
	check := func(when string, wantCompleted map[peertable.InfoHash]int64, wantStats map[peertable.InfoHash]statRow) {
		t.Helper()
		if got := completedRows(t, c); !equal(got, wantCompleted) {
			t.Errorf("%s: chihaya_torrent_completed = %v, want %v", when, got, wantCompleted)
		}
		if got := torrentStats(t, c); !equal(got, wantStats) {
			t.Errorf("%s: chihaya_torrent_stats = %v, want %v", when, got, wantStats)
		}
	}

	t1 := newTable(t)
	f1 := newFlusher(t, s, t1)
	complete(t1, 1, 1)
	complete(t1, 1, 2)
	complete(t1, 1, 3)
	complete(t1, 2, 1)
	if err := f1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("first flush", map[peertable.InfoHash]int64{{1}: 3, {2}: 1},
		map[peertable.InfoHash]statRow{{1}: {3, 0, 3}, {2}: {1, 0, 1}})
	complete(t1, 1, 4) // credited by the final flush
	stop(t, f1)
	check("after a graceful stop", map[peertable.InfoHash]int64{{1}: 4, {2}: 1},
		map[peertable.InfoHash]statRow{{1}: {0, 0, 4}, {2}: {0, 0, 1}})

	// Restart restored from the snapshot: the restored counts are the
	// baseline, not new downloads.
	var snap bytes.Buffer
	if _, err := t1.WriteSnapshot(&snap, true); err != nil {
		t.Fatal(err)
	}
	t2 := newTable(t)
	if _, err := t2.ReadSnapshot(&snap); err != nil {
		t.Fatal(err)
	}
	f2 := newFlusher(t, s, t2)
	if err := f2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("restart from the snapshot", map[peertable.InfoHash]int64{{1}: 4, {2}: 1},
		map[peertable.InfoHash]statRow{{1}: {4, 0, 4}, {2}: {1, 0, 1}})
	complete(t2, 1, 5)
	if err := f2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	stop(t, f2)
	check("second graceful stop", map[peertable.InfoHash]int64{{1}: 5, {2}: 1},
		map[peertable.InfoHash]statRow{{1}: {0, 0, 5}, {2}: {0, 0, 1}})

	// Restart without a snapshot: counting starts from zero, added to
	// what is stored.
	t3 := newTable(t)
	f3 := newFlusher(t, s, t3)
	complete(t3, 2, 9)
	peer(t3, 3, 9, false, peertable.EventStarted)
	if err := f3.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("restart with a fresh table", map[peertable.InfoHash]int64{{1}: 5, {2}: 2},
		map[peertable.InfoHash]statRow{{1}: {0, 0, 5}, {2}: {1, 0, 2}, {3}: {0, 1, 0}})
}

// TestCompletedOutage cuts PostgreSQL off before and after COMMIT and in
// the middle of a swarm batch, and checks every completed download is
// added exactly once.
func TestCompletedOutage(t *testing.T) {
	dsn := testenv.Database(t)
	open(t, dsn)
	pdsn, proxy := viaProxy(t, dsn)
	s := open(t, pdsn)
	tb := newTable(t)
	f := newFlusher(t, s, tb)
	ctx := context.Background()
	want := make(map[peertable.InfoHash]int64)
	host := byte(0)
	bump := func(n int) {
		for i := range n {
			host++
			ih := byte(i%3 + 1)
			complete(tb, ih, host)
			want[peertable.InfoHash{ih}]++
		}
	}
	bump(2)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cutEverywhere(t, s, proxy, f.Flush, func(step int) { bump(step + 2) })

	if got := completedRows(t, connect(t, dsn)); !equal(got, want) {
		t.Errorf("chihaya_torrent_completed = %v, want %v", got, want)
	}
	if st := f.Stats(); st.PendingKeys != 0 || st.Errors == 0 {
		t.Errorf("Stats() = %+v, want errors counted and nothing pending", st)
	}
}

// TestCompletedTwoProcesses checks that the completed downloads of two
// processes add up, and stay when both are gone.
func TestCompletedTwoProcesses(t *testing.T) {
	dsn := testenv.Database(t)
	ctx := context.Background()
	c := connect(t, dsn)
	t1, t2 := newTable(t), newTable(t)
	f1, f2 := newFlusher(t, open(t, dsn), t1), newFlusher(t, open(t, dsn), t2)
	complete(t1, 1, 1)
	complete(t1, 1, 2)
	complete(t2, 1, 3)
	complete(t2, 1, 4)
	complete(t2, 1, 5)
	complete(t2, 2, 1)
	peer(t2, 2, 2, false, peertable.EventStarted)
	for _, f := range []*flush.Flusher{f1, f2, f1, f2} {
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := map[peertable.InfoHash]statRow{{1}: {5, 0, 5}, {2}: {1, 1, 1}}
	if got := torrentStats(t, c); !equal(got, want) {
		t.Errorf("torrent stats = %v, want %v", got, want)
	}

	complete(t1, 2, 3)
	stop(t, f1)
	want = map[peertable.InfoHash]statRow{{1}: {3, 0, 5}, {2}: {1, 1, 2}}
	if got := torrentStats(t, c); !equal(got, want) {
		t.Errorf("after process 1 stopped, torrent stats = %v, want %v", got, want)
	}

	// Process 2 dies: its peers stop counting, the completed downloads
	// stay, in rows with no peers.
	if _, err := c.Exec(ctx, "UPDATE chihaya_processes SET last_flush = now() - interval '1 hour' WHERE id = $1", uuid(f2.Process())); err != nil {
		t.Fatal(err)
	}
	want = map[peertable.InfoHash]statRow{{1}: {0, 0, 5}, {2}: {0, 0, 2}}
	if got := torrentStats(t, c); !equal(got, want) {
		t.Errorf("with both processes gone, torrent stats = %v, want %v", got, want)
	}
	wantCompleted := map[peertable.InfoHash]int64{{1}: 5, {2}: 2}
	if got := completedRows(t, c); !equal(got, wantCompleted) {
		t.Errorf("chihaya_torrent_completed = %v, want %v", got, wantCompleted)
	}
}
