// Package postgres is the PostgreSQL storage driver for package flush,
// registered as "postgres". Import it for its side effect:
//
//	import _ "github.com/chihaya/chihaya/flush/postgres"
//
// It uses a pgxpool connection pool configured from Config.DSN (pgxpool's
// settings, such as pool_max_conns, may be added to the DSN). Opening does
// not connect: the tracker starts and serves announces while PostgreSQL is
// down, and flushes once it is back.
//
// Every batch is one transaction of a few statements, whatever its size:
// rows travel as arrays that the server expands with unnest. A swarm
// batch's completed downloads are added in its transaction, recorded in
// the same ledger as accounting batches. Per-user
// rows are sent sorted, so two processes adding to the same users lock
// rows in the same order. Sums saturate at 2^63 - 1 rather than failing,
// so no batch can be refused forever.
//
// Its Store is also a private.RulesLoader: private mode reads the web
// application's users, torrents and allowed clients from the same
// database (rules.go), following changes through LISTEN/NOTIFY on a
// connection of its own.
//
// The tracker's tables are created by Migrate from SQL files embedded in
// the binary (migrations/*.sql), recorded in chihaya_schema_migrations.
// The Store is safe for concurrent use.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/private"
)

func init() { flush.Register("postgres", Driver{}) }

// Driver opens PostgreSQL Stores. It is stateless.
type Driver struct{}

// Open returns a Store for cfg.DSN without connecting.
func (Driver) Open(cfg flush.StoreConfig) (flush.Store, error) {
	if cfg.DSN == "" {
		return nil, errors.New("postgres: StoreConfig.DSN is empty")
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: parse DSN: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return &store{pool: pool}, nil
}

// store is a flush.Store, and a private.RulesLoader: the web
// application's PostgreSQL serves private mode too.
type store struct {
	pool *pgxpool.Pool

	// Test hooks, set before use: beforeCommit runs just before COMMIT
	// is sent; afterCommit gets COMMIT's error and returns the error to
	// report, so a test can fake a commit whose reply was lost.
	beforeCommit func(op string)
	afterCommit  func(op string, err error) error
}

var _ private.RulesLoader = (*store)(nil)

func (s *store) Close() error {
	s.pool.Close()
	return nil
}

func uuid(p flush.ProcessID) pgtype.UUID { return pgtype.UUID{Bytes: p, Valid: true} }

func (s *store) commit(ctx context.Context, tx pgx.Tx, op string) error {
	if s.beforeCommit != nil {
		s.beforeCommit(op)
	}
	err := tx.Commit(ctx)
	if s.afterCommit != nil {
		err = s.afterCommit(op, err)
	}
	return err
}

const (
	heartbeatSQL = `
INSERT INTO chihaya_processes (id, started_at, last_flush, stale_after)
VALUES ($1, $2, now(), make_interval(secs => $3))
ON CONFLICT (id) DO UPDATE SET last_flush = now(), stale_after = excluded.stale_after
RETURNING xmax = 0`

	clearSwarmsSQL = `DELETE FROM chihaya_swarms WHERE process = $1`

	upsertSwarmsSQL = `
INSERT INTO chihaya_swarms (process, info_hash, seeders, leechers, completed, last_activity)
SELECT $1, u.ih, u.s, u.l, u.c, now()
FROM unnest($2::bytea[], $3::bigint[], $4::bigint[], $5::bigint[]) AS u (ih, s, l, c)
ON CONFLICT (process, info_hash) DO UPDATE
SET seeders = excluded.seeders, leechers = excluded.leechers,
    completed = excluded.completed, last_activity = excluded.last_activity`

	deleteSwarmsSQL = `DELETE FROM chihaya_swarms WHERE process = $1 AND info_hash = ANY ($2::bytea[])`

	// The completed deltas are added only if the ledger row is inserted
	// (see ledgerSQL); a data-modifying CTE runs whether or not it is
	// read, and its row is visible to the outer statement through l.
	addCompletedSQL = `
WITH l AS (
	INSERT INTO chihaya_flush_batches (process, seq)
	SELECT $1, $2
	WHERE NOT EXISTS (SELECT 1 FROM chihaya_flush_batches WHERE process = $1 AND seq >= $2)
	ON CONFLICT DO NOTHING
	RETURNING 1
)
INSERT INTO chihaya_torrent_completed AS t (info_hash, completed, last_completed)
SELECT u.ih, u.n, u.at
FROM unnest($3::bytea[], $4::bigint[], $5::timestamptz[]) AS u (ih, n, at)
WHERE EXISTS (SELECT 1 FROM l)
ON CONFLICT (info_hash) DO UPDATE
SET completed = least(t.completed::numeric + excluded.completed, 9223372036854775807)::bigint,
    last_completed = greatest(t.last_completed, excluded.last_completed)`

	// Processes silent for twice their staleness are dead; any live
	// process removes them, skipping rows another one is removing.
	reapSQL = `
DELETE FROM chihaya_processes WHERE id IN (
	SELECT id FROM chihaya_processes
	WHERE id <> $1 AND last_flush < now() - 2 * stale_after
	FOR UPDATE SKIP LOCKED)`
)

// WriteSwarms implements flush.Store.
func (s *store) WriteSwarms(ctx context.Context, b *flush.SwarmBatch) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background())

	pid := uuid(b.Process)
	var batch pgx.Batch
	var inserted bool
	batch.Queue(heartbeatSQL, pid, b.StartedAt, b.StaleAfter.Seconds()).QueryRow(func(r pgx.Row) error {
		return r.Scan(&inserted)
	})
	if b.Full {
		batch.Queue(clearSwarmsSQL, pid)
	}
	if n := len(b.Upserts); n > 0 {
		ihs := make([][]byte, n)
		seeders, leechers, completed := make([]int64, n), make([]int64, n), make([]int64, n)
		for i := range b.Upserts {
			r := &b.Upserts[i]
			ihs[i] = r.InfoHash[:]
			seeders[i], leechers[i], completed[i] = int64(r.Counts.Seeders), int64(r.Counts.Leechers), int64(r.Counts.Completed)
		}
		batch.Queue(upsertSwarmsSQL, pid, ihs, seeders, leechers, completed)
	}
	if n := len(b.Deletes); n > 0 {
		ihs := make([][]byte, n)
		for i := range b.Deletes {
			ihs[i] = b.Deletes[i][:]
		}
		batch.Queue(deleteSwarmsSQL, pid, ihs)
	}
	if n := len(b.Completed); b.Seq != 0 && n > 0 {
		ihs, counts, ats := make([][]byte, n), make([]int64, n), make([]time.Time, n)
		for i := range b.Completed {
			d := &b.Completed[i]
			ihs[i], counts[i], ats[i] = d.InfoHash[:], clamp(d.Completed), d.At
		}
		batch.Queue(pruneLedgerSQL, pid, int64(b.Seq))
		batch.Queue(addCompletedSQL, pid, int64(b.Seq), ihs, counts, ats)
	}
	batch.Queue(reapSQL, pid)
	if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
		return fmt.Errorf("write %d swarms, delete %d, completed batch %d: %w", len(b.Upserts), len(b.Deletes), b.Seq, err)
	}
	if inserted && !b.Full {
		return flush.ErrResync
	}
	return s.commit(ctx, tx, "swarms")
}

// RemoveProcess implements flush.Store.
func (s *store) RemoveProcess(ctx context.Context, p flush.ProcessID) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM chihaya_processes WHERE id = $1`, uuid(p))
	return err
}

const (
	// The ledger row is inserted unless this batch or a later one of the
	// process was applied (the process keeps only its newest row). A
	// concurrent attempt with the same key waits on the primary key.
	ledgerSQL = `
INSERT INTO chihaya_flush_batches (process, seq)
SELECT $1, $2
WHERE NOT EXISTS (SELECT 1 FROM chihaya_flush_batches WHERE process = $1 AND seq >= $2)
ON CONFLICT DO NOTHING`

	pruneLedgerSQL = `DELETE FROM chihaya_flush_batches WHERE process = $1 AND seq < $2`

	addUserTorrentsSQL = `
INSERT INTO chihaya_user_torrents AS t (user_id, torrent_id, uploaded, downloaded)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
ON CONFLICT (user_id, torrent_id) DO UPDATE
SET uploaded = least(t.uploaded::numeric + excluded.uploaded, 9223372036854775807)::bigint,
    downloaded = least(t.downloaded::numeric + excluded.downloaded, 9223372036854775807)::bigint`

	addUsersSQL = `
INSERT INTO chihaya_users_stats AS t (user_id, uploaded, downloaded, snatches)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])
ON CONFLICT (user_id) DO UPDATE
SET uploaded = least(t.uploaded::numeric + excluded.uploaded, 9223372036854775807)::bigint,
    downloaded = least(t.downloaded::numeric + excluded.downloaded, 9223372036854775807)::bigint,
    snatches = least(t.snatches::numeric + excluded.snatches, 9223372036854775807)::bigint`

	addSnatchesSQL = `
INSERT INTO chihaya_snatches (user_id, torrent_id, completed_at)
SELECT s.u, s.t, s.at
FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::timestamptz[]) AS s (u, t, n, at),
     generate_series(1, s.n)`
)

// clamp converts a counter to bigint; flush never sends more.
func clamp(v uint64) int64 { return int64(min(v, math.MaxInt64)) }

// ApplyAccounting implements flush.Store.
func (s *store) ApplyAccounting(ctx context.Context, b *flush.AccountingBatch) (bool, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.Background())

	pid := uuid(b.Process)
	tag, err := tx.Exec(ctx, ledgerSQL, pid, int64(b.Seq))
	if err != nil {
		return false, fmt.Errorf("record batch %v/%d: %w", b.Process, b.Seq, err)
	}
	if tag.RowsAffected() == 0 {
		return false, nil // applied before; its COMMIT reply was lost
	}

	var batch pgx.Batch
	batch.Queue(pruneLedgerSQL, pid, int64(b.Seq))
	if n := len(b.Torrents); n > 0 {
		users, torrents, up, down := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		var su, st []int64
		var sn []int32
		var sat []time.Time
		for i := range b.Torrents {
			d := &b.Torrents[i]
			users[i], torrents[i], up[i], down[i] = int64(d.User), int64(d.Torrent), clamp(d.Uploaded), clamp(d.Downloaded)
			if d.Snatches > 0 {
				su, st = append(su, int64(d.User)), append(st, int64(d.Torrent))
				sn, sat = append(sn, int32(min(d.Snatches, math.MaxInt32))), append(sat, d.CompletedAt)
			}
		}
		batch.Queue(addUserTorrentsSQL, users, torrents, up, down)
		if len(su) > 0 {
			batch.Queue(addSnatchesSQL, su, st, sn, sat)
		}
	}
	if n := len(b.Users); n > 0 {
		users, up, down, snatches := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		for i := range b.Users {
			d := &b.Users[i]
			users[i], up[i], down[i], snatches[i] = int64(d.User), clamp(d.Uploaded), clamp(d.Downloaded), clamp(d.Snatches)
		}
		batch.Queue(addUsersSQL, users, up, down, snatches)
	}
	if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
		return false, fmt.Errorf("apply batch %v/%d: %w", b.Process, b.Seq, err)
	}
	if err := s.commit(ctx, tx, "accounting"); err != nil {
		return false, fmt.Errorf("commit batch %v/%d: %w", b.Process, b.Seq, err)
	}
	return true, nil
}
