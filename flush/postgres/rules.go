package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/internal/backoff"
	"github.com/chihaya/chihaya/private"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// relation quotes a possibly schema-qualified relation name.
func relation(name string) string { return pgx.Identifier(strings.Split(name, ".")).Sanitize() }

// rulesBackoff is the retry rule of the listener and of failed loads.
func rulesBackoff(c *private.RulesConfig) backoff.Backoff {
	return backoff.Backoff{Initial: 100 * time.Millisecond, Max: c.MaxBackoff}
}

// rulesMaxPending is how many changed rows may wait to be loaded one by
// one; past it the pending rows are dropped for one full reload.
const rulesMaxPending = 10_000

// rulesFeed keeps a private.Rules equal to the web application's tables:
// it is loaded in full by LoadRules, follows row changes through
// LISTEN/NOTIFY while Run runs, and reloads in full every ReloadEvery and
// after the listener reconnects, since notifications sent while it was
// away are lost.
//
// Changes are applied in the order their notifications arrive, by one
// goroutine that reads each changed row as committed: a row missing from
// its relation is forgotten, so its passkey or hash is refused. Bursts of
// notifications are coalesced into one query per relation.
//
// FeedStats and Health are safe for concurrent use. Queries use the
// Store's pool; the listener has a connection of its own.
type rulesFeed struct {
	rules *private.Rules

	cfg     private.RulesConfig
	log     *slog.Logger
	pool    *pgxpool.Pool
	connCfg *pgx.ConnConfig // the pool's, without pool_* settings: for the listener
	sql     rulesSQL

	reloads, notifications, errs atomic.Uint64
	lastReload                   atomic.Int64 // unix nanoseconds
	listenErr                    atomic.Pointer[listenState]
	running                      atomic.Bool

	q rulesQueue

	mu     sync.Mutex // guards the field below
	listen *pgx.Conn  // connected by LoadRules, owned by Run once it starts
}

type listenState struct {
	err   error // nil while connected
	since time.Time
}

type rulesSQL struct {
	users, torrents, clients string // full loads
	usersByID, torrentsByID  string // with $1 bigint[]
	listen                   string
}

func newRulesSQL(c *private.RulesConfig) rulesSQL {
	u := "SELECT id, passkey, coalesce(enabled, false), coalesce(can_download, false) FROM " + relation(c.UsersTable)
	t := "SELECT id, info_hash, info_hash_v2, coalesce(allowed, false) FROM " + relation(c.TorrentsTable)
	return rulesSQL{
		users:        u,
		torrents:     t,
		clients:      "SELECT peer_id_prefix FROM " + relation(c.ClientsTable),
		usersByID:    u + " WHERE id = ANY ($1::bigint[])",
		torrentsByID: t + " WHERE id = ANY ($1::bigint[])",
		listen:       "LISTEN " + pgx.Identifier{c.Channel}.Sanitize(),
	}
}

// LoadRules implements private.RulesLoader: it starts listening on
// cfg.Channel and loads every user, torrent and client prefix into into,
// so that the rules are complete before the tracker serves its first
// announce. It fails, naming the relation or column, if the database does
// not meet the contract of private.RulesConfig.
func (s *store) LoadRules(ctx context.Context, into *private.Rules, cfg private.RulesConfig) (private.RulesFeed, error) {
	r := &rulesFeed{
		rules:   into,
		cfg:     cfg,
		log:     cfg.Logger,
		pool:    s.pool,
		connCfg: s.pool.Config().ConnConfig,
		sql:     newRulesSQL(&cfg),
		q:       rulesQueue{wake: make(chan struct{}, 1)},
	}
	// Listen before loading, so a change committed during the load is
	// notified and applied after it.
	var err error
	r.listen, err = r.connectListener(ctx)
	if err != nil {
		return nil, err
	}
	r.listenErr.Store(&listenState{since: time.Now()})
	if err := r.reload(ctx); err != nil {
		r.Close()
		return nil, err
	}
	st := into.Stats()
	r.log.Info("rules loaded", "users", st.Users, "torrents", st.Torrents, "clients", st.Clients)
	return r, nil
}

// Close releases the listener's connection; the pool is the Store's.
// Call it after Run has returned.
func (r *rulesFeed) Close() {
	r.mu.Lock()
	c := r.listen
	r.listen = nil
	r.mu.Unlock()
	if c != nil {
		closeConn(c)
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Close(ctx)
}

// FeedStats returns the counts of loads, notifications and errors since
// LoadRules.
func (r *rulesFeed) FeedStats() private.FeedStats {
	s := private.FeedStats{Reloads: r.reloads.Load(), Notifications: r.notifications.Load(), Errors: r.errs.Load()}
	if ns := r.lastReload.Load(); ns != 0 {
		s.LastReload = time.Unix(0, ns)
	}
	return s
}

// Health returns nil while the listener is connected, and otherwise an
// error saying since when it is not and why. While it is not, changes
// wait for the next successful reconnection, which reloads everything.
func (r *rulesFeed) Health() error {
	s := r.listenErr.Load()
	if s == nil || s.err == nil {
		return nil
	}
	return fmt.Errorf("rules listener down since %s: %w", s.since.UTC().Format(time.RFC3339), s.err)
}

func (r *rulesFeed) setListenErr(err error) {
	old := r.listenErr.Load()
	if old != nil && (old.err == nil) == (err == nil) {
		return // same state; logged when it began
	}
	r.listenErr.Store(&listenState{err: err, since: time.Now()})
	if err != nil {
		r.log.Warn("rules listener lost; changes wait for it to reconnect", "err", err)
	} else {
		r.log.Info("rules listener reconnected; reloading everything")
	}
}

func (r *rulesFeed) connectListener(ctx context.Context) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, r.connCfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("postgres: rules: connect: %w", err)
	}
	if _, err := c.Exec(ctx, r.sql.listen); err != nil {
		closeConn(c)
		return nil, fmt.Errorf("postgres: rules: LISTEN %s: %w", r.cfg.Channel, err)
	}
	return c, nil
}

// Run keeps the rules fresh until ctx is done, then returns nil. It
// returns an error only if called twice.
func (r *rulesFeed) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("postgres: rules feed Run called twice")
	}
	r.mu.Lock()
	conn := r.listen
	r.listen = nil
	r.mu.Unlock()

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { r.listenLoop(ctx, conn) })
	defer func() {
		cancel()
		wg.Wait()
		r.listenErr.Store(&listenState{err: errors.New("Run has returned"), since: time.Now()})
	}()

	tick := time.NewTicker(r.cfg.ReloadEvery)
	defer tick.Stop()
	fails := rulesBackoff(&r.cfg) // failing while loads fail
	var retry <-chan time.Time
	for {
		wake, ticks := r.q.wake, tick.C
		if fails.Failing() {
			wake, ticks = nil, nil // wait for retry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticks:
			r.q.requestFull()
		case <-wake:
		case <-retry:
			retry = nil
		}
		p := r.q.take()
		if p.empty() {
			continue
		}
		err := r.apply(ctx, p)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			r.errs.Add(1)
			if !fails.Failing() {
				r.log.Warn("rules: load failed; retrying with a full reload", "err", err)
			}
			r.q.requestFull() // what p asked for, and whatever the failure hid
			retry = time.After(fails.Next())
		case fails.Failing():
			r.log.Info("rules: loads recovered")
			fails.Reset()
			retry = nil
		}
	}
}

// listenLoop waits for notifications on conn, reconnecting when it
// breaks, until ctx is done. conn may be nil.
func (r *rulesFeed) listenLoop(ctx context.Context, conn *pgx.Conn) {
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	retry := rulesBackoff(&r.cfg)
	for {
		if conn == nil {
			c, err := r.connectListener(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				r.errs.Add(1)
				r.setListenErr(err)
				t := time.NewTimer(retry.Next())
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				continue
			}
			conn = c
			retry.Reset()
			r.setListenErr(nil)
			r.q.requestFull() // notifications sent while away are lost
		}
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			closeConn(conn)
			conn = nil
			if ctx.Err() != nil {
				return
			}
			r.errs.Add(1)
			r.setListenErr(fmt.Errorf("postgres: rules: wait for notification: %w", err))
			continue
		}
		r.notifications.Add(1)
		r.q.add(n.Payload)
	}
}

// rulesQueue coalesces notifications between the listener and Run's loop.
type rulesQueue struct {
	wake chan struct{} // capacity 1: a pending wake-up

	mu sync.Mutex // guards the field below
	p  pending
}

// pending is the work that notifications asked for.
type pending struct {
	full, clients   bool
	users, torrents map[uint32]struct{}
}

func (p *pending) empty() bool {
	return !p.full && !p.clients && len(p.users) == 0 && len(p.torrents) == 0
}

// add records payload: "user:<id>", "torrent:<id>", "client" or
// "client:<anything>"; anything else asks for a full reload.
func (q *rulesQueue) add(payload string) {
	kind, arg, _ := strings.Cut(payload, ":")
	q.mu.Lock()
	switch id, err := strconv.ParseUint(arg, 10, 32); {
	case q.p.full:
		// Covered by the full reload already pending.
	case kind == "client":
		q.p.clients = true
	case kind == "user" && err == nil:
		q.p.users = addID(q.p.users, uint32(id))
	case kind == "torrent" && err == nil:
		q.p.torrents = addID(q.p.torrents, uint32(id))
	default:
		q.p.full = true
	}
	if len(q.p.users)+len(q.p.torrents) > rulesMaxPending {
		q.p.full = true
	}
	if q.p.full {
		q.p = pending{full: true}
	}
	q.mu.Unlock()
	q.signal()
}

func addID(m map[uint32]struct{}, id uint32) map[uint32]struct{} {
	if m == nil {
		m = make(map[uint32]struct{})
	}
	m[id] = struct{}{}
	return m
}

func (q *rulesQueue) requestFull() {
	q.mu.Lock()
	q.p = pending{full: true}
	q.mu.Unlock()
	q.signal()
}

func (q *rulesQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *rulesQueue) take() pending {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.p
	q.p = pending{}
	return p
}

// apply loads what p asks for and applies it.
func (r *rulesFeed) apply(ctx context.Context, p pending) error {
	if p.full {
		return r.reload(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var users []private.User
	var torrents []private.Torrent
	var clients [][]byte
	if len(p.users) > 0 {
		err := r.readUsers(ctx, r.pool, r.sql.usersByID, ids(p.users), func(u private.User, err error) {
			if r.skip(err) {
				u.Passkey = bytes.Clone(u.Passkey)
				users = append(users, u)
			}
		})
		if err != nil {
			return err
		}
	}
	if len(p.torrents) > 0 {
		err := r.readTorrents(ctx, r.pool, r.sql.torrentsByID, ids(p.torrents), func(t private.Torrent, err error) {
			if r.skip(err) {
				t.InfoHash, t.InfoHashV2 = bytes.Clone(t.InfoHash), bytes.Clone(t.InfoHashV2)
				torrents = append(torrents, t)
			}
		})
		if err != nil {
			return err
		}
	}
	if p.clients {
		var err error
		if clients, err = r.readClients(ctx, r.pool); err != nil {
			return err
		}
	}
	r.rules.Edit(func(e *private.RulesEdit) {
		// Rows asked for and not found are gone: forget them.
		for id := range p.users {
			e.RemoveUser(id)
		}
		for id := range p.torrents {
			e.RemoveTorrent(id)
		}
		for _, u := range users {
			r.skip(e.SetUser(u))
		}
		for _, t := range torrents {
			r.skip(e.SetTorrent(t))
		}
		if p.clients {
			e.SetClients(clients)
		}
	})
	return nil
}

func ids(m map[uint32]struct{}) []int64 {
	s := make([]int64, 0, len(m))
	for id := range m {
		s = append(s, int64(id))
	}
	return s
}

// skip counts and logs a row that breaks the contract, and reports
// whether err is nil. Full reloads count and log such rows themselves,
// once per reload.
func (r *rulesFeed) skip(err error) bool {
	if err == nil {
		return true
	}
	r.errs.Add(1)
	r.log.Warn("rules: row skipped", "err", err)
	return false
}

// reload reads every relation in one read-only snapshot and replaces the
// rules with what it read. Rows are added to the new set as they arrive.
func (r *rulesFeed) reload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("postgres: rules: begin reload: %w", err)
	}
	defer tx.Rollback(context.Background())

	set := private.NewRuleSet()
	set.SizeLike(r.rules)
	e := set.Edit()
	var skipped uint64
	var firstSkip error
	note := func(err error) {
		if err != nil {
			if skipped == 0 {
				firstSkip = err
			}
			skipped++
		}
	}
	err = r.readUsers(ctx, tx, r.sql.users, nil, func(u private.User, err error) {
		if err == nil {
			err = e.SetUser(u)
		}
		note(err)
	})
	if err != nil {
		return err
	}
	err = r.readTorrents(ctx, tx, r.sql.torrents, nil, func(t private.Torrent, err error) {
		if err == nil {
			err = e.SetTorrent(t)
		}
		note(err)
	})
	if err != nil {
		return err
	}
	clients, err := r.readClients(ctx, tx)
	if err != nil {
		return err
	}
	e.SetClients(clients)
	r.rules.Replace(set)

	r.reloads.Add(1)
	r.lastReload.Store(time.Now().UnixNano())
	if skipped > 0 {
		r.errs.Add(skipped)
		r.log.Warn("rules: rows skipped in full reload", "count", skipped, "first", firstSkip)
	}
	s := r.rules.Stats()
	r.log.Debug("rules reloaded", "users", s.Users, "torrents", s.Torrents, "clients", s.Clients)
	return nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// query runs sql with args, if any, and calls scan for each row.
func (r *rulesFeed) query(ctx context.Context, q querier, what, sql string, args []int64, scan func(pgx.Rows) error) error {
	var qargs []any
	if args != nil {
		qargs = []any{args}
	}
	rows, err := q.Query(ctx, sql, qargs...)
	if err == nil {
		for rows.Next() {
			if err = scan(rows); err != nil {
				break
			}
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		return r.contractError(what, err)
	}
	return nil
}

// contractError explains err from reading relation kind ("users", …).
func (r *rulesFeed) contractError(kind string, err error) error {
	name, field, cols := r.cfg.UsersTable, "UsersTable", "id, passkey, enabled, can_download"
	switch kind {
	case "torrents":
		name, field, cols = r.cfg.TorrentsTable, "TorrentsTable", "id, info_hash, info_hash_v2, allowed"
	case "clients":
		name, field, cols = r.cfg.ClientsTable, "ClientsTable", "peer_id_prefix"
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "42P01", "3F000": // undefined_table, invalid_schema_name
			return fmt.Errorf("postgres: rules: relation %s (RulesConfig.%s) does not exist; create it or a view with columns %s, see flush/schema/webapp.sql: %w", name, field, cols, err)
		case "42703": // undefined_column
			return fmt.Errorf("postgres: rules: relation %s lacks a column it must have (%s), see flush/schema/webapp.sql: %w", name, cols, err)
		}
	}
	return fmt.Errorf("postgres: rules: read %s (columns %s): %w", name, cols, err)
}

// readUsers calls each for every row; a row that breaks the contract
// comes with an error. The passkey's memory is reused for the next row.
func (r *rulesFeed) readUsers(ctx context.Context, q querier, sql string, args []int64, each func(private.User, error)) error {
	var id int64
	var u private.User
	return r.query(ctx, q, "users", sql, args, func(rows pgx.Rows) error {
		if err := rows.Scan(&id, &u.Passkey, &u.Enabled, &u.CanDownload); err != nil {
			return err
		}
		var err error
		u.ID, err = rowID("user", id)
		each(u, err)
		return nil
	})
}

// readTorrents calls each for every row, as readUsers does.
func (r *rulesFeed) readTorrents(ctx context.Context, q querier, sql string, args []int64, each func(private.Torrent, error)) error {
	var id int64
	var t private.Torrent
	return r.query(ctx, q, "torrents", sql, args, func(rows pgx.Rows) error {
		if err := rows.Scan(&id, &t.InfoHash, &t.InfoHashV2, &t.Allowed); err != nil {
			return err
		}
		var err error
		t.ID, err = rowID("torrent", id)
		each(t, err)
		return nil
	})
}

// rowID checks a row's id against the 32 bits the tracker keeps of it.
func rowID(kind string, id int64) (uint32, error) {
	if id < 0 || id > 1<<32-1 {
		return 0, fmt.Errorf("rules: %s id %d out of range", kind, id)
	}
	return uint32(id), nil
}

func (r *rulesFeed) readClients(ctx context.Context, q querier) ([][]byte, error) {
	var out [][]byte
	err := r.query(ctx, q, "clients", r.sql.clients, nil, func(rows pgx.Rows) error {
		var p []byte
		if err := rows.Scan(&p); err != nil {
			return err
		}
		if p != nil {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}
