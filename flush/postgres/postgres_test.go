package postgres

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/private"
	"github.com/chihaya/chihaya/tracker"
)

// open returns a migrated store on dsn, closed at cleanup.
func open(t testing.TB, dsn string) *store {
	t.Helper()
	s, err := Driver{}.Open(flush.StoreConfig{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s.(*store)
}

// viaProxy returns dsn rewritten to reach the server through a new proxy.
func viaProxy(t *testing.T, dsn string) (string, *testenv.Proxy) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(t, u.Host)
	u.Host = p.Addr()
	return u.String(), p
}

func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func TestOpenRegistered(t *testing.T) {
	if _, err := flush.Open("postgres", flush.StoreConfig{}); err == nil {
		t.Error(`Open("postgres") without a DSN succeeded`)
	}
	s, err := flush.Open("postgres", flush.StoreConfig{DSN: "postgres://nobody@127.0.0.1:1/x"})
	if err != nil {
		t.Fatalf("Open with an unreachable server = %v, want a lazy store", err)
	}
	s.Close()
}

func TestMigrationsParse(t *testing.T) {
	ms, err := migrations()
	if err != nil || len(ms) == 0 || ms[0].version != 1 {
		t.Fatalf("migrations() = %v, %v; want version 1 first", ms, err)
	}
}

func TestMigrateIdempotent(t *testing.T) {
	dsn := testenv.Database(t)
	s := open(t, dsn)
	c := connect(t, dsn)
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM chihaya_schema_migrations").Scan(&n); err != nil || n != len(ms) {
		t.Fatalf("after Migrate, %d migrations recorded (%v), want %d", n, err, len(ms))
	}
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM chihaya_schema_migrations").Scan(&n); err != nil || n != len(ms) {
		t.Errorf("after a second Migrate, %d migrations recorded (%v), want %d", n, err, len(ms))
	}
	for _, table := range []string{"chihaya_processes", "chihaya_swarms", "chihaya_torrent_stats", "chihaya_user_torrents",
		"chihaya_snatches", "chihaya_users_stats", "chihaya_flush_batches", "chihaya_torrent_completed"} {
		if _, err := c.Exec(context.Background(), "SELECT * FROM "+table+" LIMIT 0"); err != nil {
			t.Errorf("%s: %v", table, err)
		}
	}
	// A database from a newer binary is refused.
	c.Exec(context.Background(), "INSERT INTO chihaya_schema_migrations (version, name) VALUES (9999, 'future')")
	if err := s.Migrate(context.Background()); err == nil {
		t.Error("Migrate on a newer schema succeeded, want an error")
	}
}

func TestMigrateConcurrent(t *testing.T) {
	dsn := testenv.Database(t)
	const n = 6
	stores := make([]flush.Store, n)
	for i := range stores {
		s, err := Driver{}.Open(flush.StoreConfig{DSN: dsn})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores[i] = s
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, s := range stores {
		wg.Go(func() { errs[i] = s.Migrate(context.Background()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate %d: %v", i, err)
		}
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	if err := connect(t, dsn).QueryRow(context.Background(), "SELECT count(*) FROM chihaya_schema_migrations").Scan(&v); err != nil || v != len(ms) {
		t.Errorf("%d migrations recorded (%v), want %d", v, err, len(ms))
	}
}

type utRow struct{ up, down int64 }
type userRow struct{ up, down, snatches int64 }

func readAccounting(t *testing.T, c *pgx.Conn) (map[[2]int64]utRow, map[int64]userRow, map[[2]int64]int) {
	t.Helper()
	ctx := context.Background()
	ut := make(map[[2]int64]utRow)
	rows, _ := c.Query(ctx, "SELECT user_id, torrent_id, uploaded, downloaded FROM chihaya_user_torrents")
	var k [2]int64
	var r utRow
	if _, err := pgx.ForEachRow(rows, []any{&k[0], &k[1], &r.up, &r.down}, func() error { ut[k] = r; return nil }); err != nil {
		t.Fatal(err)
	}
	users := make(map[int64]userRow)
	var u int64
	var ur userRow
	rows, _ = c.Query(ctx, "SELECT user_id, uploaded, downloaded, snatches FROM chihaya_users_stats")
	if _, err := pgx.ForEachRow(rows, []any{&u, &ur.up, &ur.down, &ur.snatches}, func() error { users[u] = ur; return nil }); err != nil {
		t.Fatal(err)
	}
	snatches := make(map[[2]int64]int)
	rows, _ = c.Query(ctx, "SELECT user_id, torrent_id FROM chihaya_snatches")
	if _, err := pgx.ForEachRow(rows, []any{&k[0], &k[1]}, func() error { snatches[k]++; return nil }); err != nil {
		t.Fatal(err)
	}
	return ut, users, snatches
}

func request(peer byte, key uint32, v6 bool, up, down, left uint64, ev peertable.Event) *tracker.AnnounceRequest {
	addr := netip.MustParseAddrPort("192.0.2.7:6881")
	if v6 {
		addr = netip.MustParseAddrPort("[2001:db8::7]:6881")
	}
	r := &tracker.AnnounceRequest{Addr: addr, Uploaded: up, Downloaded: down, Left: left, Event: ev, Key: key}
	r.PeerID[0] = peer
	return r
}

func TestAccountingRows(t *testing.T) {
	dsn := testenv.Database(t)
	s := open(t, dsn)
	a, err := private.NewAccountant(s, private.AccountantConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g1, g2 := tracker.Grant{User: 1, Torrent: 100}, tracker.Grant{User: 2, Torrent: 100}
	// User 1 over both families with one key; user 2 first seen mid-session.
	a.Account(g1, request(1, 9, false, 0, 0, 50, peertable.EventStarted))
	a.Account(g1, request(1, 9, true, 0, 0, 50, peertable.EventStarted))
	a.Account(g1, request(1, 9, false, 7, 50, 0, peertable.EventCompleted))
	a.Account(g1, request(1, 9, true, 7, 50, 0, peertable.EventCompleted))
	a.Account(g2, request(2, 1, false, 1000, 0, 0, peertable.EventNone))
	a.Account(g2, request(2, 1, false, 1300, 0, 0, peertable.EventNone))
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	a.Account(g1, request(1, 9, true, 10, 50, 0, peertable.EventNone))
	a.Account(tracker.Grant{User: 1, Torrent: 200}, request(3, 9, false, 1, 2, 5, peertable.EventStarted))
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil { // nothing to do
		t.Fatal(err)
	}

	ut, users, snatches := readAccounting(t, connect(t, dsn))
	wantUT := map[[2]int64]utRow{{1, 100}: {10, 50}, {2, 100}: {300, 0}, {1, 200}: {1, 2}}
	wantUsers := map[int64]userRow{1: {11, 52, 1}, 2: {300, 0, 0}}
	wantSnatches := map[[2]int64]int{{1, 100}: 1}
	if !equal(ut, wantUT) || !equal(users, wantUsers) || !equal(snatches, wantSnatches) {
		t.Errorf("rows = %v, %v, %v; want %v, %v, %v", ut, users, snatches, wantUT, wantUsers, wantSnatches)
	}
	var ledger int
	connect(t, dsn).QueryRow(ctx, "SELECT count(*) FROM chihaya_flush_batches").Scan(&ledger)
	if ledger != 1 {
		t.Errorf("%d ledger rows, want 1 (only the newest is kept)", ledger)
	}
}

func equal[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v != w {
			return false
		}
	}
	return true
}

// TestAccountingOutage cuts PostgreSQL off before and after COMMIT and in
// the middle of sending a batch, and checks every byte is applied once.
func TestAccountingOutage(t *testing.T) {
	dsn := testenv.Database(t)
	open(t, dsn) // migrate directly
	pdsn, proxy := viaProxy(t, dsn)
	s := open(t, pdsn)
	a, err := private.NewAccountant(s, private.AccountantConfig{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	var up uint64
	g := tracker.Grant{User: 5, Torrent: 6}
	a.Account(g, request(1, 1, false, 0, 0, 1, peertable.EventStarted))
	bump := func(n uint64) {
		up += n
		want += int64(n)
		a.Account(g, request(1, 1, false, up, 0, 1, peertable.EventNone))
	}
	cutEverywhere(t, s, proxy, a.Flush, func(step int) { bump(uint64(math.Pow10(step))) })

	ut, users, _ := readAccounting(t, connect(t, dsn))
	if got := ut[[2]int64{5, 6}].up; got != want {
		t.Errorf("user-torrent uploaded = %d, want %d", got, want)
	}
	if got := users[5].up; got != want {
		t.Errorf("user uploaded = %d, want %d", got, want)
	}
	if st := a.Stats(); st.PendingKeys != 0 || st.Errors == 0 {
		t.Errorf("Stats() = %+v, want errors counted and nothing pending", st)
	}
}

// cutEverywhere cuts the connection to PostgreSQL (proxy, under s) at
// each point of a batch that flush applies: before COMMIT, after COMMIT
// with its reply lost, and at five arbitrary moments of a slow batch.
// Before each cut bump(step) records new data, step 1 to 8 (2 while the
// first failed batch waits), so that amounts can differ per step. After
// each cut it restores the connection and flushes until a batch goes
// through, twice: the failed batch, then what came meanwhile. The caller
// checks that the totals hold every bump exactly once.
func cutEverywhere(t *testing.T, s *store, proxy *testenv.Proxy, flush func(context.Context) error, bump func(step int)) {
	t.Helper()
	ctx := context.Background()
	retry := func(what string) {
		t.Helper()
		proxy.Restore()
		for i := 0; ; i++ {
			err := flush(ctx)
			if err == nil {
				return
			}
			if i == 20 {
				t.Fatalf("%s: Flush still failing after Restore: %v", what, err)
			}
		}
	}

	// Cut before COMMIT: the transaction is rolled back.
	bump(1)
	s.beforeCommit = func(string) { proxy.Cut() }
	if err := flush(ctx); err == nil {
		t.Fatal("Flush with the connection cut before COMMIT succeeded")
	}
	s.beforeCommit = nil
	bump(2) // collects for the next batch meanwhile
	retry("cut before commit")
	retry("next batch")

	// COMMIT reaches the server but its reply is lost: the retry must
	// find the ledger row and apply nothing.
	bump(3)
	s.afterCommit = func(op string, err error) error {
		proxy.Cut()
		if err == nil {
			err = errors.New("COMMIT reply lost")
		}
		return err
	}
	if err := flush(ctx); err == nil {
		t.Fatal("Flush with a lost COMMIT reply succeeded")
	}
	s.afterCommit = nil
	retry("lost commit reply")
	retry("lost commit reply, next batch")

	// Cut at arbitrary points of a slow batch.
	for i := range 5 {
		bump(4 + i)
		proxy.SetDelay(time.Duration(i+1) * time.Millisecond)
		done := make(chan error)
		go func() { done <- flush(ctx) }()
		time.Sleep(time.Duration(i*3) * time.Millisecond)
		proxy.Cut()
		<-done // either outcome must be safe
		proxy.SetDelay(0)
		retry("cut mid-batch")
		retry("cut mid-batch, next batch")
	}
}

type statRow struct{ seeders, leechers, completed int64 }

func torrentStats(t *testing.T, c *pgx.Conn) map[peertable.InfoHash]statRow {
	t.Helper()
	m := make(map[peertable.InfoHash]statRow)
	rows, _ := c.Query(context.Background(), "SELECT info_hash, seeders, leechers, completed FROM chihaya_torrent_stats")
	var ih []byte
	var r statRow
	if _, err := pgx.ForEachRow(rows, []any{&ih, &r.seeders, &r.leechers, &r.completed}, func() error {
		m[peertable.InfoHash(ih)] = r
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

func peer(tb *peertable.Table, ih byte, host byte, seeder bool, ev peertable.Event) {
	a := peertable.Announce{
		InfoHash: peertable.InfoHash{ih},
		Addr:     netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, host}), 6881),
		Event:    ev,
		Seeder:   seeder,
	}
	tb.Announce(&a, nil)
}

func newTable(t *testing.T) *peertable.Table {
	tb, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestTwoProcesses runs two Flushers over two tables, as two processes
// would, and checks chihaya_torrent_stats sums them.
func TestTwoProcesses(t *testing.T) {
	dsn := testenv.Database(t)
	ctx := context.Background()
	t1, t2 := newTable(t), newTable(t)
	f1, err := flush.NewFlusher(open(t, dsn), t1, flush.FlusherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s2 := open(t, dsn)
	f2, err := flush.NewFlusher(s2, t2, flush.FlusherConfig{})
	if err != nil {
		t.Fatal(err)
	}
	peer(t1, 1, 1, true, peertable.EventStarted)
	peer(t1, 1, 2, false, peertable.EventStarted)
	peer(t1, 2, 1, false, peertable.EventStarted)
	peer(t2, 1, 3, true, peertable.EventStarted)
	peer(t2, 1, 4, false, peertable.EventStarted)
	peer(t2, 1, 4, true, peertable.EventCompleted)
	for _, f := range []*flush.Flusher{f1, f2} {
		if err := f.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c := connect(t, dsn)
	got := torrentStats(t, c)
	want := map[peertable.InfoHash]statRow{{1}: {3, 1, 1}, {2}: {0, 1, 0}}
	if !equal(got, want) {
		t.Errorf("torrent stats = %v, want %v", got, want)
	}

	// Swarm 2 empties in process 1; process 2's rows are reaped as dead
	// by process 1 (its heartbeat is backdated) and come back in full.
	peer(t1, 2, 1, false, peertable.EventStopped)
	if _, err := c.Exec(ctx, "UPDATE chihaya_processes SET last_flush = now() - interval '1 hour' WHERE id = $1", uuid(f2.Process())); err != nil {
		t.Fatal(err)
	}
	if got := torrentStats(t, c); got[peertable.InfoHash{1}] != (statRow{1, 1, 1}) {
		t.Errorf("with process 2 stale, swarm 1 = %v, want process 1's peers only and the completed download kept", got[peertable.InfoHash{1}])
	}
	if err := f1.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	c.QueryRow(ctx, "SELECT count(*) FROM chihaya_swarms WHERE process = $1", uuid(f2.Process())).Scan(&n)
	if n != 0 {
		t.Errorf("process 2 has %d swarm rows after being reaped, want 0", n)
	}
	if err := f2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want = map[peertable.InfoHash]statRow{{1}: {3, 1, 1}, {2}: {0, 0, 0}}
	if got := torrentStats(t, c); !equal(got, want) {
		t.Errorf("after the reap and a resync, torrent stats = %v, want %v", got, want)
	}

	// A graceful stop removes a process's peers at once; its completed
	// download stays.
	if err := s2.RemoveProcess(ctx, f2.Process()); err != nil {
		t.Fatal(err)
	}
	want = map[peertable.InfoHash]statRow{{1}: {1, 1, 1}, {2}: {0, 0, 0}}
	if got := torrentStats(t, c); !equal(got, want) {
		t.Errorf("after process 2 left, torrent stats = %v, want %v", got, want)
	}
}

func TestFlusherOutage(t *testing.T) {
	dsn := testenv.Database(t)
	open(t, dsn)
	pdsn, proxy := viaProxy(t, dsn)
	tb := newTable(t)
	f, err := flush.NewFlusher(open(t, pdsn), tb, flush.FlusherConfig{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	peer(tb, 1, 1, false, peertable.EventStarted)
	peer(tb, 2, 1, false, peertable.EventStarted)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	peer(tb, 1, 2, true, peertable.EventStarted)
	peer(tb, 2, 1, false, peertable.EventStopped)
	if err := f.Flush(ctx); err == nil {
		t.Fatal("Flush during an outage succeeded")
	}
	proxy.Restore()
	var err2 error
	for range 10 {
		if err2 = f.Flush(ctx); err2 == nil {
			break
		}
	}
	if err2 != nil {
		t.Fatal(err2)
	}
	want := map[peertable.InfoHash]statRow{{1}: {1, 1, 0}, {2}: {0, 0, 0}}
	if got := torrentStats(t, connect(t, dsn)); !equal(got, want) {
		t.Errorf("after the outage, torrent stats = %v, want %v", got, want)
	}
}
