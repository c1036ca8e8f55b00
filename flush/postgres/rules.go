package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/chihaya/chihaya/flush"
)

// RulesConfig says where the web application keeps private mode's rules.
// The relations must have the columns of flush/schema/webapp.sql:
//
//	users(id integer, passkey text, enabled boolean, can_download boolean)
//	torrents(id integer, info_hash bytea, info_hash_v2 bytea, allowed boolean)
//	allowed_clients(peer_id_prefix bytea)
//
// Column names are fixed; relation names are configurable so that they
// may be views over the web application's own tables. NULL booleans read
// as false. Rows that break the contract (a passkey that is not 32
// bytes, a negative id, a hash of the wrong length) are skipped, logged
// and counted in Errors.
type RulesConfig struct {
	// DSN is a PostgreSQL URL or keyword=value string, as for Config.DSN.
	// Required.
	DSN string

	// UsersTable, TorrentsTable and ClientsTable name the relations,
	// optionally schema-qualified ("app.users"). Zero values mean
	// "users", "torrents" and "allowed_clients".
	UsersTable    string
	TorrentsTable string
	ClientsTable  string

	// Channel is the LISTEN channel the web application's triggers
	// notify. Zero means "chihaya_rules".
	Channel string

	// ReloadEvery is how often everything is reloaded, as a backstop for
	// lost notifications. Zero means 5 minutes; it must be at least a
	// second.
	ReloadEvery time.Duration

	// Timeout bounds one load: a full reload or one batch of rows. Zero
	// means 1 minute.
	Timeout time.Duration

	// MaxBackoff caps the wait between attempts to reconnect the listener
	// or to repeat a failed load; the wait starts at 100ms and doubles,
	// with jitter. Zero means 30 seconds.
	MaxBackoff time.Duration

	// Logger receives a line per state change (listener lost and back,
	// loads failing and recovered) and per skipped row. Nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c *RulesConfig) setDefaults() error {
	if c.UsersTable == "" {
		c.UsersTable = "users"
	}
	if c.TorrentsTable == "" {
		c.TorrentsTable = "torrents"
	}
	if c.ClientsTable == "" {
		c.ClientsTable = "allowed_clients"
	}
	if c.Channel == "" {
		c.Channel = "chihaya_rules"
	}
	if c.ReloadEvery == 0 {
		c.ReloadEvery = 5 * time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = time.Minute
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.DSN == "":
		return errors.New("postgres: RulesConfig.DSN is empty")
	case c.ReloadEvery < time.Second:
		return fmt.Errorf("postgres: RulesConfig.ReloadEvery %v is under a second", c.ReloadEvery)
	case c.Timeout < 0:
		return fmt.Errorf("postgres: RulesConfig.Timeout %v is negative", c.Timeout)
	case c.MaxBackoff < 0:
		return fmt.Errorf("postgres: RulesConfig.MaxBackoff %v is negative", c.MaxBackoff)
	}
	return nil
}

// relation quotes a possibly schema-qualified relation name.
func relation(name string) string { return pgx.Identifier(strings.Split(name, ".")).Sanitize() }

const rulesInitialBackoff = 100 * time.Millisecond

// rulesMaxPending is how many changed rows may wait to be loaded one by
// one; past it the pending rows are dropped for one full reload.
const rulesMaxPending = 10_000

// Rules is a flush.Rules kept equal to the web application's tables: it
// is loaded in full by LoadRules, follows row changes through
// LISTEN/NOTIFY while Run runs, and reloads in full every ReloadEvery and
// after the listener reconnects, since notifications sent while it was
// away are lost. Use it as the tracker's Authorizer.
//
// Changes are applied in the order their notifications arrive, by one
// goroutine that reads each changed row as committed: a row missing from
// its relation is forgotten, so its passkey or hash is refused. Bursts of
// notifications are coalesced into one query per relation.
//
// Stats and Health are safe for concurrent use, as is Authorize.
type Rules struct {
	*flush.Rules

	cfg     RulesConfig
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

func newRulesSQL(c *RulesConfig) rulesSQL {
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

// LoadRules connects to cfg.DSN, starts listening on cfg.Channel and
// loads every user, torrent and client prefix, so that the Rules it
// returns are complete before the tracker serves its first announce. It
// fails, naming the relation or column, if the database does not meet the
// contract of RulesConfig. Call Run to keep the rules fresh and Close
// when done.
func LoadRules(ctx context.Context, cfg RulesConfig) (*Rules, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: rules: parse DSN: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: rules: %w", err)
	}
	r := &Rules{
		Rules:   flush.NewRules(),
		cfg:     cfg,
		log:     cfg.Logger,
		pool:    pool,
		connCfg: pcfg.ConnConfig,
		sql:     newRulesSQL(&cfg),
		q:       rulesQueue{wake: make(chan struct{}, 1)},
	}
	// Listen before loading, so a change committed during the load is
	// notified and applied after it.
	r.listen, err = r.connectListener(ctx)
	if err != nil {
		pool.Close()
		return nil, err
	}
	r.listenErr.Store(&listenState{since: time.Now()})
	if err := r.reload(ctx); err != nil {
		r.Close()
		return nil, err
	}
	s := r.Stats()
	r.log.Info("rules loaded", "users", s.Users, "torrents", s.Torrents, "clients", s.Clients)
	return r, nil
}

// Close releases the connections. Call it after Run has returned.
func (r *Rules) Close() {
	r.mu.Lock()
	c := r.listen
	r.listen = nil
	r.mu.Unlock()
	if c != nil {
		closeConn(c)
	}
	r.pool.Close()
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c.Close(ctx)
}

// Stats returns the counts of rows held and of loads, notifications and
// errors since LoadRules.
func (r *Rules) Stats() flush.RulesStats {
	s := r.Rules.Stats()
	s.Reloads = r.reloads.Load()
	s.Notifications = r.notifications.Load()
	s.Errors = r.errs.Load()
	if ns := r.lastReload.Load(); ns != 0 {
		s.LastReload = time.Unix(0, ns)
	}
	return s
}

// Health returns nil while the listener is connected, and otherwise an
// error saying since when it is not and why. While it is not, changes
// wait for the next successful reconnection, which reloads everything.
func (r *Rules) Health() error {
	s := r.listenErr.Load()
	if s == nil || s.err == nil {
		return nil
	}
	return fmt.Errorf("rules listener down since %s: %w", s.since.UTC().Format(time.RFC3339), s.err)
}

func (r *Rules) setListenErr(err error) {
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

func (r *Rules) connectListener(ctx context.Context) (*pgx.Conn, error) {
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
func (r *Rules) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("postgres: Rules.Run called twice")
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
	backoff := time.Duration(0) // nonzero while loads fail
	var retry <-chan time.Time
	for {
		wake, ticks := r.q.wake, tick.C
		if backoff > 0 {
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
			if backoff == 0 {
				r.log.Warn("rules: load failed; retrying with a full reload", "err", err)
				backoff = rulesInitialBackoff
			} else {
				backoff = min(2*backoff, r.cfg.MaxBackoff)
			}
			r.q.requestFull() // what p asked for, and whatever the failure hid
			retry = time.After(jitter(backoff))
		case backoff > 0:
			r.log.Info("rules: loads recovered")
			backoff, retry = 0, nil
		}
	}
}

// jitter returns a duration in [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d < 2 {
		return d
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)))
}

// listenLoop waits for notifications on conn, reconnecting when it
// breaks, until ctx is done. conn may be nil.
func (r *Rules) listenLoop(ctx context.Context, conn *pgx.Conn) {
	defer func() {
		if conn != nil {
			closeConn(conn)
		}
	}()
	backoff := rulesInitialBackoff
	for {
		if conn == nil {
			c, err := r.connectListener(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				r.errs.Add(1)
				r.setListenErr(err)
				t := time.NewTimer(jitter(backoff))
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				backoff = min(2*backoff, r.cfg.MaxBackoff)
				continue
			}
			conn, backoff = c, rulesInitialBackoff
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
func (r *Rules) apply(ctx context.Context, p pending) error {
	if p.full {
		return r.reload(ctx)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	var users []flush.User
	var torrents []flush.Torrent
	var clients [][]byte
	if len(p.users) > 0 {
		err := r.readUsers(ctx, r.pool, r.sql.usersByID, ids(p.users), func(u flush.User, err error) {
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
		err := r.readTorrents(ctx, r.pool, r.sql.torrentsByID, ids(p.torrents), func(t flush.Torrent, err error) {
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
	r.Edit(func(e *flush.RulesEdit) {
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
func (r *Rules) skip(err error) bool {
	if err == nil {
		return true
	}
	r.errs.Add(1)
	r.log.Warn("rules: row skipped", "err", err)
	return false
}

// reload reads every relation in one read-only snapshot and replaces the
// rules with what it read. Rows are added to the new set as they arrive.
func (r *Rules) reload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	tx, err := r.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("postgres: rules: begin reload: %w", err)
	}
	defer tx.Rollback(context.Background())

	set := flush.NewRuleSet()
	set.SizeLike(r.Rules)
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
	err = r.readUsers(ctx, tx, r.sql.users, nil, func(u flush.User, err error) {
		if err == nil {
			err = e.SetUser(u)
		}
		note(err)
	})
	if err != nil {
		return err
	}
	err = r.readTorrents(ctx, tx, r.sql.torrents, nil, func(t flush.Torrent, err error) {
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
	r.Replace(set)

	r.reloads.Add(1)
	r.lastReload.Store(time.Now().UnixNano())
	if skipped > 0 {
		r.errs.Add(skipped)
		r.log.Warn("rules: rows skipped in full reload", "count", skipped, "first", firstSkip)
	}
	s := r.Rules.Stats()
	r.log.Debug("rules reloaded", "users", s.Users, "torrents", s.Torrents, "clients", s.Clients)
	return nil
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// query runs sql with args, if any, and calls scan for each row.
func (r *Rules) query(ctx context.Context, q querier, what, sql string, args []int64, scan func(pgx.Rows) error) error {
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
func (r *Rules) contractError(kind string, err error) error {
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
func (r *Rules) readUsers(ctx context.Context, q querier, sql string, args []int64, each func(flush.User, error)) error {
	var id int64
	var u flush.User
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
func (r *Rules) readTorrents(ctx context.Context, q querier, sql string, args []int64, each func(flush.Torrent, error)) error {
	var id int64
	var t flush.Torrent
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

func (r *Rules) readClients(ctx context.Context, q querier) ([][]byte, error) {
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
