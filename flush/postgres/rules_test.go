package postgres

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
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

// rulesDB returns the DSN of a fresh database holding the sample web-app
// schema, and a connection to it for the test to change rows with.
func rulesDB(tb testing.TB) (string, *pgx.Conn) {
	tb.Helper()
	dsn := testenv.Database(tb)
	schema, err := os.ReadFile("../schema/webapp.sql")
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close(context.Background()) })
	if _, err := c.Exec(ctx, string(schema)); err != nil {
		tb.Fatalf("apply flush/schema/webapp.sql: %v", err)
	}
	return dsn, c
}

func rulesExec(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := c.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// rulesViaProxy returns dsn with its host and port replaced by a proxy's.
func rulesViaProxy(t *testing.T, dsn string) (string, *testenv.Proxy) {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := testenv.NewProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		t.Skipf("CHIHAYA_TEST_POSTGRES must be a URL for this test: %v", err)
	}
	u.Host = p.Addr()
	return u.String(), p
}

func pk(n int) string { return fmt.Sprintf("%032x", n) }

func hashV1(n int) []byte {
	h := sha1.Sum(binary.BigEndian.AppendUint32(nil, uint32(n)))
	return h[:]
}

func hashV2(n int) []byte {
	h := sha256.Sum256(binary.BigEndian.AppendUint32(nil, uint32(n)))
	return h[:]
}

func announce(ih []byte, peerID string) *tracker.AnnounceRequest {
	req := &tracker.AnnounceRequest{InfoHash: peertable.InfoHash(ih[:20]), Left: 1}
	copy(req.PeerID[:], peerID)
	return req
}

// loadRules opens a Store on dsn and loads rules from it, as the daemon
// does. close closes the rules' feed and then the Store.
func loadRules(ctx context.Context, dsn string, cfg private.RulesConfig) (r *private.Source, close func(), err error) {
	s, err := Driver{}.Open(flush.StoreConfig{DSN: dsn})
	if err != nil {
		return nil, nil, err
	}
	r, err = private.LoadRules(ctx, s, cfg)
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return r, func() { r.Close(); s.Close() }, nil
}

// startRules loads rules from dsn and runs them until the test ends.
func startRules(t *testing.T, dsn string, cfg private.RulesConfig) *private.Source {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, closeRules, err := loadRules(ctx, dsn, cfg)
	if err != nil {
		t.Fatalf("LoadRules: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(runCtx); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	t.Cleanup(func() {
		stop()
		wg.Wait()
		closeRules()
		// Nothing of the Rules outlives Close (a proxy's forwarders
		// finish once they see the connections closed).
		eventually(t, "goroutines after Close", func() error {
			if n := runtime.NumGoroutine(); n > goroutines {
				return fmt.Errorf("%d goroutines, %d before LoadRules", n, goroutines)
			}
			return nil
		})
	})
	return r
}

// eventually polls cond for up to 5 seconds.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after 5s", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// authorized returns a condition: passkey n announcing ih with peerID gets
// want (nil: admitted).
func authorized(r *private.Source, n int, ih []byte, peerID string, want error) func() error {
	return func() error {
		_, err := r.Authorize([]byte(pk(n)), announce(ih, peerID))
		if err != want {
			return fmt.Errorf("Authorize = %v, want %v", err, want)
		}
		return nil
	}
}

const qb = "-qB4650-xxxxxxxxxxxx"

func TestLoadRulesFollowsNotifications(t *testing.T) {
	dsn, c := rulesDB(t)
	rulesExec(t, c, `INSERT INTO users (id, passkey) VALUES (1, $1)`, pk(1))
	rulesExec(t, c, `INSERT INTO torrents (id, info_hash, info_hash_v2) VALUES (10, $1, $2)`, hashV1(10), hashV2(10))
	// pgxpool settings in the DSN must not reach the listener's server
	// session as unknown parameters.
	r := startRules(t, dsn+"&pool_max_conns=2", private.RulesConfig{})

	if s := r.Stats(); s.Users != 1 || s.Torrents != 1 || s.Clients != 0 || s.Reloads != 1 || s.LastReload.IsZero() {
		t.Errorf("Stats after LoadRules = %+v, want 1 user, 1 torrent, 0 clients, 1 reload", s)
	}
	if err := r.Health(); err != nil {
		t.Errorf("Health after LoadRules = %v, want nil", err)
	}
	for _, ih := range [][]byte{hashV1(10), hashV2(10)} {
		if g, err := r.Authorize([]byte(pk(1)), announce(ih, qb)); err != nil || g != (tracker.Grant{User: 1, Torrent: 10}) {
			t.Errorf("loaded hybrid torrent under %x = %+v, %v; want user 1, torrent 10", ih[:4], g, err)
		}
	}

	// A new user can announce; a disabled one cannot; a deleted one is
	// unknown.
	rulesExec(t, c, `INSERT INTO users (id, passkey) VALUES (2, $1)`, pk(2))
	eventually(t, "inserted user", authorized(r, 2, hashV1(10), qb, nil))
	rulesExec(t, c, `UPDATE users SET enabled = false WHERE id = 2`)
	eventually(t, "disabled user", authorized(r, 2, hashV1(10), qb, private.ErrAccountDisabled))
	rulesExec(t, c, `UPDATE users SET can_download = false WHERE id = 1`)
	eventually(t, "user who may not download", authorized(r, 1, hashV1(10), qb, private.ErrMayNotDownload))
	rulesExec(t, c, `UPDATE users SET can_download = true, passkey = $1 WHERE id = 1`, pk(100))
	eventually(t, "changed passkey", authorized(r, 100, hashV1(10), qb, nil))
	if err := authorized(r, 1, hashV1(10), qb, private.ErrUnknownPasskey)(); err != nil {
		t.Errorf("old passkey after change: %v", err)
	}
	rulesExec(t, c, `DELETE FROM users WHERE id = 2`)
	eventually(t, "deleted user", authorized(r, 2, hashV1(10), qb, private.ErrUnknownPasskey))

	// A new torrent is announceable; one not allowed is refused.
	rulesExec(t, c, `INSERT INTO torrents (id, info_hash_v2) VALUES (11, $1)`, hashV2(11))
	eventually(t, "inserted v2 torrent", authorized(r, 100, hashV2(11), qb, nil))
	rulesExec(t, c, `UPDATE torrents SET allowed = false WHERE id = 11`)
	eventually(t, "disallowed torrent", authorized(r, 100, hashV2(11), qb, private.ErrTorrentNotAllowed))
	rulesExec(t, c, `DELETE FROM torrents WHERE id = 10`)
	eventually(t, "deleted torrent", authorized(r, 100, hashV2(10), qb, private.ErrTorrentNotRegistered))

	// Client rules: listing prefixes refuses the others; removing one
	// refuses that client; emptying the list allows all again.
	rulesExec(t, c, `INSERT INTO torrents (id, info_hash) VALUES (12, $1)`, hashV1(12))
	rulesExec(t, c, `INSERT INTO allowed_clients VALUES ('-qB'::bytea), ('-TR'::bytea)`)
	eventually(t, "unlisted client", authorized(r, 100, hashV1(12), "-UT3550-xxxxxxxxxxxx", private.ErrClientNotAllowed))
	if err := authorized(r, 100, hashV1(12), "-TR4050-xxxxxxxxxxxx", nil)(); err != nil {
		t.Errorf("listed client: %v", err)
	}
	rulesExec(t, c, `DELETE FROM allowed_clients WHERE peer_id_prefix = '-TR'::bytea`)
	eventually(t, "removed client prefix", authorized(r, 100, hashV1(12), "-TR4050-xxxxxxxxxxxx", private.ErrClientNotAllowed))
	if err := authorized(r, 100, hashV1(12), qb, nil)(); err != nil {
		t.Errorf("client still listed: %v", err)
	}
	rulesExec(t, c, `TRUNCATE allowed_clients`)
	eventually(t, "empty client list", authorized(r, 100, hashV1(12), "-UT3550-xxxxxxxxxxxx", nil))

	if s := r.Stats(); s.Notifications == 0 || s.Users != 1 || s.Torrents != 2 {
		t.Errorf("Stats at the end = %+v, want notifications, 1 user, 2 torrents", s)
	}
}

// TestRulesFullReload checks the backstops for changes no trigger
// reported: an unknown payload and the periodic reload.
func TestRulesFullReload(t *testing.T) {
	dsn, c := rulesDB(t)
	rulesExec(t, c, `INSERT INTO torrents (id, info_hash) VALUES (10, $1)`, hashV1(10))
	r := startRules(t, dsn, private.RulesConfig{ReloadEvery: time.Second})
	// In replica mode ordinary triggers do not fire: these rows arrive
	// unannounced.
	rulesExec(t, c, `SET session_replication_role = replica`)

	rulesExec(t, c, `INSERT INTO users (id, passkey) VALUES (1, $1)`, pk(1))
	rulesExec(t, c, `SELECT pg_notify('chihaya_rules', 'bulk import done')`)
	eventually(t, "user after an unknown payload", authorized(r, 1, hashV1(10), qb, nil))

	rulesExec(t, c, `INSERT INTO users (id, passkey) VALUES (2, $1)`, pk(2))
	eventually(t, "user after the periodic reload", authorized(r, 2, hashV1(10), qb, nil))
	if s := r.Stats(); s.Reloads < 3 {
		t.Errorf("Stats().Reloads = %d, want at least 3 (start, payload, period)", s.Reloads)
	}
}

// TestRulesBurst changes more rows in one statement than may wait to be
// loaded by id: however the notifications are batched (by id, or a full
// reload past rulesMaxPending), the end state is right.
func TestRulesBurst(t *testing.T) {
	dsn, c := rulesDB(t)
	rulesExec(t, c, `INSERT INTO torrents (id, info_hash) VALUES (10, $1)`, hashV1(10))
	r := startRules(t, dsn, private.RulesConfig{})
	const n = rulesMaxPending + 5000
	rulesExec(t, c, `INSERT INTO users (id, passkey) SELECT i, lpad(to_hex(i), 32, '0') FROM generate_series(1, $1) i`, n)
	eventually(t, "users inserted in bulk", func() error {
		if s := r.Stats(); s.Users != n {
			return fmt.Errorf("Stats().Users = %d, want %d", s.Users, n)
		}
		return nil
	})
	for _, id := range []int{1, n / 2, n} {
		if err := authorized(r, id, hashV1(10), qb, nil)(); err != nil {
			t.Errorf("user %d of the bulk insert: %v", id, err)
		}
	}
	rulesExec(t, c, `UPDATE users SET enabled = false WHERE id % 2 = 0`)
	eventually(t, "users disabled in bulk", authorized(r, n, hashV1(10), qb, private.ErrAccountDisabled))
	eventually(t, "users disabled in bulk", authorized(r, 2, hashV1(10), qb, private.ErrAccountDisabled))
	if err := authorized(r, n-1, hashV1(10), qb, nil)(); err != nil {
		t.Errorf("odd user after the bulk update: %v", err)
	}
	if s := r.Stats(); s.Notifications < n {
		t.Errorf("Stats().Notifications = %d, want at least %d", s.Notifications, n)
	}
}

func TestRulesQueue(t *testing.T) {
	var q rulesQueue
	q.wake = make(chan struct{}, 1)
	for _, p := range []string{"user:1", "user:1", "user:2", "torrent:7", "client", "client:2d7142"} {
		q.add(p)
	}
	p := q.take()
	if p.full || !p.clients || len(p.users) != 2 || len(p.torrents) != 1 {
		t.Errorf("take() = %+v, want users 1 and 2, torrent 7, clients", p)
	}
	if p := q.take(); !p.empty() {
		t.Errorf("second take() = %+v, want nothing pending", p)
	}
	for _, payload := range []string{"reload", "user:x", "user:-1", "torrent:4294967296", "user", ""} {
		q.add("user:1")
		q.add(payload)
		if p := q.take(); !p.full || len(p.users) != 0 {
			t.Errorf("after payload %q: take() = %+v, want only a full reload", payload, p)
		}
	}
	for i := range rulesMaxPending + 1 {
		q.add("user:" + strconv.Itoa(i))
	}
	if p := q.take(); !p.full || len(p.users) != 0 {
		t.Errorf("after %d user notifications: full = %v, %d users pending; want only a full reload", rulesMaxPending+1, p.full, len(p.users))
	}
	select {
	case <-q.wake:
	default:
		t.Error("add did not signal wake")
	}
}

func TestRulesSurviveConnectionCut(t *testing.T) {
	direct, c := rulesDB(t)
	dsn, proxy := rulesViaProxy(t, direct)
	rulesExec(t, c, `INSERT INTO torrents (id, info_hash) VALUES (10, $1)`, hashV1(10))
	rulesExec(t, c, `INSERT INTO users (id, passkey) VALUES (1, $1)`, pk(1))
	r := startRules(t, dsn, private.RulesConfig{MaxBackoff: 200 * time.Millisecond})

	proxy.Cut()
	eventually(t, "Health during the cut", func() error {
		if r.Health() == nil {
			return fmt.Errorf("Health() = nil")
		}
		return nil
	})
	// Announces keep being decided from memory during the outage.
	if err := authorized(r, 1, hashV1(10), qb, nil)(); err != nil {
		t.Errorf("during the cut: %v", err)
	}
	// Changes made now are notified to nobody.
	rulesExec(t, c, `INSERT INTO users (id, passkey) VALUES (2, $1)`, pk(2))
	rulesExec(t, c, `UPDATE users SET enabled = false WHERE id = 1`)
	reloads := r.Stats().Reloads
	proxy.Restore()

	eventually(t, "user inserted during the cut", authorized(r, 2, hashV1(10), qb, nil))
	eventually(t, "user disabled during the cut", authorized(r, 1, hashV1(10), qb, private.ErrAccountDisabled))
	eventually(t, "Health after restore", r.Health)
	if s := r.Stats(); s.Reloads <= reloads || s.Errors == 0 {
		t.Errorf("Stats after the cut = %+v, want a reload after %d and errors counted", s, reloads)
	}
	// And the new listener works.
	rulesExec(t, c, `INSERT INTO users (id, passkey) VALUES (3, $1)`, pk(3))
	eventually(t, "user inserted after restore", authorized(r, 3, hashV1(10), qb, nil))
}

func TestLoadRulesContract(t *testing.T) {
	dsn, c := rulesDB(t)
	ctx := context.Background()
	load := func(cfg private.RulesConfig) error {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
		_, closeRules, err := loadRules(ctx, dsn, cfg)
		if err == nil {
			closeRules()
		}
		return err
	}
	if err := load(private.RulesConfig{UsersTable: "members"}); err == nil || !strings.Contains(err.Error(), `"members"`) || !strings.Contains(err.Error(), "UsersTable") {
		t.Errorf("LoadRules with a missing relation = %v, want an error naming it and UsersTable", err)
	}
	rulesExec(t, c, `CREATE VIEW no_prefix AS SELECT 1 AS id`)
	if err := load(private.RulesConfig{ClientsTable: "no_prefix"}); err == nil || !strings.Contains(err.Error(), "peer_id_prefix") {
		t.Errorf("LoadRules with a missing column = %v, want an error naming peer_id_prefix", err)
	}
	if err := load(private.RulesConfig{}); err != nil {
		t.Errorf("LoadRules on the sample schema: %v", err)

	}

	// Relations may be views in another schema.
	rulesExec(t, c, `CREATE SCHEMA app`)
	rulesExec(t, c, `CREATE TABLE app.members (member_id int, pass text, banned bool)`)
	rulesExec(t, c, `INSERT INTO app.members VALUES (7, $1, false), (8, 'too short', false)`, pk(7))
	rulesExec(t, c, `CREATE VIEW app.chihaya_users AS SELECT member_id AS id, pass AS passkey, NOT banned AS enabled, true AS can_download FROM app.members`)
	rulesExec(t, c, `INSERT INTO torrents (id, info_hash) VALUES (10, $1)`, hashV1(10))
	r := startRules(t, dsn, private.RulesConfig{UsersTable: "app.chihaya_users"})
	if err := authorized(r, 7, hashV1(10), qb, nil)(); err != nil {
		t.Errorf("user from a view: %v", err)
	}
	if s := r.Stats(); s.Users != 1 || s.Errors != 1 {
		t.Errorf("Stats with one malformed row = %+v, want 1 user, 1 error", s)
	}

	if _, err := private.LoadRules(ctx, noRules{}, private.RulesConfig{}); !errors.Is(err, private.ErrNoRules) {
		t.Errorf("LoadRules from a Store that cannot serve rules = %v, want ErrNoRules", err)
	}
}

// BenchmarkLoadRules measures LoadRules over a million users and a
// million hybrid torrents, and the heap the rules take.
func BenchmarkLoadRules(b *testing.B) {
	const n = 1_000_000
	dsn, c := rulesDB(b)
	rulesExec(b, c, `ALTER TABLE users DISABLE TRIGGER USER`)
	rulesExec(b, c, `ALTER TABLE torrents DISABLE TRIGGER USER`)
	rulesExec(b, c, `INSERT INTO users (id, passkey) SELECT i, lpad(to_hex(i), 32, '0') FROM generate_series(1, $1) i`, n)
	rulesExec(b, c, `INSERT INTO torrents (id, info_hash, info_hash_v2)
		SELECT i, substr(sha256(int4send(i)), 1, 20), sha256(int8send(i)) FROM generate_series(1, $1) i`, n)
	rulesExec(b, c, `VACUUM ANALYZE`) // hint bits set now, not in the first timed load
	ctx := context.Background()
	cfg := private.RulesConfig{Logger: slog.New(slog.DiscardHandler)}
	var heap uint64
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		r, closeRules, err := loadRules(ctx, dsn, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if s := r.Stats(); s.Users != n || s.Torrents != n {
			b.Fatalf("Stats = %+v, want %d users and torrents", s, n)
		}
		heap = after.HeapAlloc - before.HeapAlloc
		closeRules()
		b.StartTimer()
	}
	b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
}

// noRules is a Store of a driver that cannot serve private mode.
type noRules struct{ flush.Store }
