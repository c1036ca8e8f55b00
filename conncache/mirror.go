package conncache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

// A Mirror keeps one process's swarms and the other processes' in step
// through a Pool. It implements tracker.Mirror: give it to the core as
// Hooks.Mirror, give Remote to the core as Hooks.Remote, set the local
// table's peertable.Config.OnExpire to Expired, and call Run.
type Mirror struct {
	pool   Pool
	local  *peertable.Table
	remote *peertable.Table
	cfg    Config
	log    *slog.Logger
	clog   *changeLog
	buf    []drained // the publisher's, for drain
	tx     Tx        // the publisher's, reused by every flush

	republish atomic.Bool   // the store may lack local state: send all of it
	reloadCh  chan struct{} // capacity 1: Remote may lack remote state

	applyMu sync.Mutex // guards the fields below; taken by the subscriber and the reloader
	// reloading queues batches that arrive while Remote is reloaded;
	// they are applied after it, so the reload cannot undo them.
	reloading bool
	queued    []queuedBatch
	queuedN   int
	// completed is every other origin's completed count per swarm;
	// Remote's count is their sum.
	completed map[peertable.InfoHash]map[Origin]uint32

	published   atomic.Uint64
	applied     atomic.Uint64
	errors      atomic.Uint64
	reloads     atomic.Uint64
	republishes atomic.Uint64
	lastSync    atomic.Int64 // unix nanoseconds
	everSent    atomic.Bool  // this origin has stored something

	stateMu sync.Mutex // guards the fields below
	failing map[string]failure
}

type queuedBatch struct {
	origin  Origin
	records []Record
}

type failure struct {
	since time.Time
	count int
}

// maxQueued bounds the records queued during a reload; beyond it they are
// dropped and another reload follows.
const maxQueued = 1 << 20

// NewMirror returns a Mirror publishing local through pool. cfg must
// describe local's lifetime (PeerLifetime, RefreshEvery); it panics on a
// Config that Open would refuse, a nil pool or a nil table.
func NewMirror(pool Pool, local *peertable.Table, cfg Config) *Mirror {
	if pool == nil || local == nil {
		panic("conncache: NewMirror with nil pool or table")
	}
	if err := cfg.setDefaults(); err != nil {
		panic(err.Error())
	}
	remote, err := peertable.New(peertable.Config{
		PeerLifetime: cfg.RemoteLifetime(),
		Swarms:       1 << 16,
	})
	if err != nil {
		panic("conncache: remote table: " + err.Error())
	}
	m := &Mirror{
		pool:      pool,
		local:     local,
		remote:    remote,
		cfg:       cfg,
		log:       cfg.Logger.With("origin", pool.Origin().String()),
		clog:      newChangeLog(cfg.MaxPending),
		reloadCh:  make(chan struct{}, 1),
		completed: make(map[peertable.InfoHash]map[Origin]uint32),
		failing:   make(map[string]failure),
	}
	// The local table may hold peers already (a restored snapshot).
	m.republish.Store(true)
	return m
}

// Remote returns the table of the other processes' peers, for
// tracker.Hooks.Remote. The Mirror writes it; callers only read it.
func (m *Mirror) Remote() *peertable.Table { return m.remote }

// Changed queues a change of the local table for the next batch. It
// implements tracker.Mirror: it does not block on I/O and, once the log
// has held as many entries as it holds now, does not allocate.
func (m *Mirror) Changed(ih peertable.InfoHash, p peertable.Peer, ch peertable.Change, res peertable.Result) {
	switch ch {
	case peertable.ChangeNone:
	case peertable.ChangeRemoved:
		m.clog.note(&ih, &p, logRemove)
	default:
		op := logPut
		if p.Seeder {
			op |= logSeeder
		}
		m.clog.note(&ih, &p, op)
	}
	if res.Completed {
		m.clog.noteCompleted(&ih, res.Counts.Completed)
	}
}

// Expired queues the expiry of a local peer; set the local table's
// peertable.Config.OnExpire to it. It is quick and takes no lock of the
// table.
func (m *Mirror) Expired(ih peertable.InfoHash, p peertable.Peer) {
	m.clog.note(&ih, &p, logRemove)
}

// Stats are a Mirror's counters since NewMirror.
type Stats struct {
	Published   uint64        // changes stored and notified
	Applied     uint64        // other processes' changes applied to Remote
	Pending     int           // changes waiting for the next batch
	Dropped     uint64        // changes dropped because MaxPending was reached
	Errors      uint64        // failed operations on the store
	Reloads     uint64        // full reloads of Remote
	Republishes uint64        // full republishes of the local state
	LastSync    time.Time     // when the store last took a batch, or had nothing to take
	Lag         time.Duration // time since LastSync (since NewMirror if never)
	Healthy     bool          // no operation on the store is failing now
}

// Stats returns the Mirror's counters.
func (m *Mirror) Stats() Stats {
	st := Stats{
		Published:   m.published.Load(),
		Applied:     m.applied.Load(),
		Pending:     m.clog.len(),
		Dropped:     m.clog.dropped.Load(),
		Errors:      m.errors.Load(),
		Reloads:     m.reloads.Load(),
		Republishes: m.republishes.Load(),
	}
	if ns := m.lastSync.Load(); ns != 0 {
		st.LastSync = time.Unix(0, ns)
		st.Lag = time.Since(st.LastSync)
	}
	m.stateMu.Lock()
	st.Healthy = len(m.failing) == 0
	m.stateMu.Unlock()
	return st
}

// Run publishes local changes every SyncInterval, applies the other
// processes' to Remote, keeps Remote's clock and expiry going, and
// recovers from outages of the store, until ctx is done. It then sends
// what is pending (for at most Timeout), waits for its goroutines and
// returns nil. It deletes nothing from the store: the state of a process
// that is gone expires there and elsewhere on its own.
func (m *Mirror) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { m.remote.Run(ctx) })
	wg.Go(func() { m.pool.Subscribe(ctx, m.handle) })
	wg.Go(func() { m.reloadLoop(ctx) })
	m.publishLoop(ctx)
	wg.Wait()
	return nil
}

func (m *Mirror) publishLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.SyncInterval)
	defer tick.Stop()
	var retryAt time.Time
	backoff := m.cfg.SyncInterval
	for {
		select {
		case <-ctx.Done():
			if !m.republish.Load() {
				fctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
				m.flush(fctx)
				cancel()
			}
			return
		case now := <-tick.C:
			if now.Before(retryAt) {
				continue
			}
			if m.sync(ctx) {
				backoff = m.cfg.SyncInterval
				retryAt = time.Time{}
			} else {
				backoff = min(2*backoff, 2*time.Second)
				retryAt = now.Add(backoff)
			}
		}
	}
}

// sync sends one batch, or the whole local state when needed, and reports
// whether the store took it.
func (m *Mirror) sync(ctx context.Context) bool {
	if m.clog.full.Load() {
		m.republish.Store(true)
	}
	if m.republish.Load() {
		return m.republishAll(ctx)
	}
	return m.flush(ctx)
}

func (m *Mirror) flush(ctx context.Context) bool {
	if m.tx == nil {
		m.tx = m.pool.Begin()
	}
	tx := m.tx
	var n int
	n, m.buf = m.clog.drain(tx, m.buf)
	if n == 0 {
		m.lastSync.Store(time.Now().UnixNano())
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	if err := tx.Commit(ctx); err != nil {
		// The batch may be lost in part: only sending everything again
		// is sure to repair the store and the others' copies.
		m.republish.Store(true)
		m.fail("publish", err)
		return false
	}
	m.everSent.Store(true)
	m.published.Add(uint64(n))
	m.lastSync.Store(time.Now().UnixNano())
	m.ok("publish")
	return true
}

// republishBatch is how many peers a republish sends per Commit.
const republishBatch = 8192

// republishAll replaces this origin's state in the store with the local
// table's, deletes its swarms the table no longer has, and, if other
// processes may hold stale copies, tells them to reload.
func (m *Mirror) republishAll(ctx context.Context) bool {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	err := m.pool.Ping(pctx)
	cancel()
	if err != nil {
		m.fail("publish", err)
		return false
	}
	m.clog.reset() // the table's state supersedes every queued change
	tx := m.pool.Begin()
	var peers []peertable.Peer
	sent := 0
	commit := func() bool {
		if tx.Len() == 0 {
			return true
		}
		n := tx.Len()
		cctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		defer cancel()
		if err = tx.Commit(cctx); err != nil {
			return false
		}
		sent += n
		return true
	}
	m.local.Range(func(ih peertable.InfoHash, c peertable.Counts) bool {
		peers = m.local.AppendPeers(ih, peers[:0])
		if len(peers) == 0 && c.Completed == 0 {
			return true
		}
		tx.Replace(ih, peers, c.Completed)
		if tx.Len() >= republishBatch {
			return commit()
		}
		return true
	})
	if err == nil && commit() {
		// No overall deadline: it walks the keyspace, and each command
		// is bounded by the driver's own timeouts.
		err = m.pool.Prune(ctx, func(ih peertable.InfoHash) bool {
			c := m.local.Scrape(ih)
			return c.Seeders+c.Leechers > 0 || c.Completed > 0
		})
	}
	// Others may hold stale copies of this origin's peers, or none of
	// those just written (a table restored from a snapshot).
	if err == nil && (m.everSent.Load() || sent > 0) {
		tx.Resync() // Len stays 0: Commit directly
		cctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
		err = tx.Commit(cctx)
		cancel()
	}
	if err != nil {
		m.fail("publish", err)
		return false
	}
	m.republish.Store(false)
	m.everSent.Store(true)
	m.published.Add(uint64(sent))
	m.republishes.Add(1)
	m.lastSync.Store(time.Now().UnixNano())
	m.ok("publish")
	m.log.Info("conncache: republished local state", "changes", sent)
	return true
}

// handle receives the subscription's events, in the subscriber goroutine.
func (m *Mirror) handle(e *Event) {
	switch e.Kind {
	case EventSubscribed:
		m.ok("subscribe")
		m.requestReload()
		// The store may have lost this origin's state too (a restart
		// without persistence, a failover).
		if m.everSent.Load() {
			m.republish.Store(true)
		}
	case EventBroken:
		m.fail("subscribe", e.Err)
	case EventResync:
		m.requestReload()
	case EventBatch:
		m.applyMu.Lock()
		if m.reloading {
			if m.queuedN+len(e.Records) > maxQueued {
				m.requestReload()
			} else {
				m.queued = append(m.queued, queuedBatch{e.Origin, append([]Record(nil), e.Records...)})
				m.queuedN += len(e.Records)
			}
		} else {
			m.applyLocked(e.Origin, e.Records)
		}
		m.applyMu.Unlock()
	}
}

func (m *Mirror) requestReload() {
	select {
	case m.reloadCh <- struct{}{}:
	default:
	}
}

// applyLocked applies one origin's records to Remote.
func (m *Mirror) applyLocked(o Origin, recs []Record) {
	for i := range recs {
		r := &recs[i]
		switch r.Op {
		case OpPut:
			a := peertable.Announce{InfoHash: r.InfoHash, Addr: r.Peer.Addr, Seeder: r.Peer.Seeder}
			m.remote.Announce(&a, nil)
		case OpRemove:
			a := peertable.Announce{InfoHash: r.InfoHash, Addr: r.Peer.Addr, Event: peertable.EventStopped}
			m.remote.Announce(&a, nil)
		case OpCompleted:
			m.setCompletedLocked(r.InfoHash, o, r.Completed)
		}
	}
	m.applied.Add(uint64(len(recs)))
}

func (m *Mirror) setCompletedLocked(ih peertable.InfoHash, o Origin, n uint32) {
	byOrigin := m.completed[ih]
	if byOrigin == nil {
		byOrigin = make(map[Origin]uint32, 1)
		m.completed[ih] = byOrigin
	}
	byOrigin[o] = n
	var sum uint32
	for _, c := range byOrigin {
		sum += c
	}
	m.remote.RaiseCompleted(ih, sum)
}

func (m *Mirror) reloadLoop(ctx context.Context) {
	backoff := m.cfg.SyncInterval
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.reloadCh:
		}
		for {
			// Let a burst of requests (every process republishing after
			// an outage) collapse into one reload.
			select {
			case <-ctx.Done():
				return
			case <-time.After(m.cfg.SyncInterval):
			}
			select {
			case <-m.reloadCh:
			default:
			}
			if err := m.reload(ctx); err == nil {
				m.ok("reload")
				backoff = m.cfg.SyncInterval
				break
			} else if ctx.Err() != nil {
				return
			} else {
				m.fail("reload", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// reload makes Remote equal to what the store holds of the other
// processes: it applies every stored peer, removes the peers Remote holds
// that the store does not, and resets the completed counts. Batches that
// arrive meanwhile are applied after it.
func (m *Mirror) reload(ctx context.Context) error {
	m.applyMu.Lock()
	m.reloading = true
	m.applyMu.Unlock()
	defer m.endReload()

	type key struct {
		ih   peertable.InfoHash
		peer peertable.Peer // Seeder false
	}
	seen := make(map[key]struct{})
	completed := make(map[peertable.InfoHash]map[Origin]uint32)
	since := time.Now().Add(-m.cfg.RemoteLifetime())
	n := 0
	// No overall deadline, as for Prune.
	err := m.pool.Load(ctx, since, func(o Origin, r Record) {
		switch r.Op {
		case OpPut:
			a := peertable.Announce{InfoHash: r.InfoHash, Addr: r.Peer.Addr, Seeder: r.Peer.Seeder}
			m.remote.Announce(&a, nil)
			seen[key{r.InfoHash, peertable.Peer{Addr: r.Peer.Addr}}] = struct{}{}
			n++
		case OpCompleted:
			byOrigin := completed[r.InfoHash]
			if byOrigin == nil {
				byOrigin = make(map[Origin]uint32, 1)
				completed[r.InfoHash] = byOrigin
			}
			byOrigin[o] = r.Completed
		}
	})
	if err != nil {
		return err
	}
	var peers []peertable.Peer
	var gone []key
	m.remote.Range(func(ih peertable.InfoHash, _ peertable.Counts) bool {
		peers = m.remote.AppendPeers(ih, peers[:0])
		for _, p := range peers {
			k := key{ih, peertable.Peer{Addr: p.Addr}}
			if _, ok := seen[k]; !ok {
				gone = append(gone, k)
			}
		}
		return true
	})
	for _, k := range gone {
		a := peertable.Announce{InfoHash: k.ih, Addr: k.peer.Addr, Event: peertable.EventStopped}
		m.remote.Announce(&a, nil)
	}
	m.applyMu.Lock()
	m.completed = completed
	for ih, byOrigin := range completed {
		var sum uint32
		for _, c := range byOrigin {
			sum += c
		}
		m.remote.RaiseCompleted(ih, sum)
	}
	m.applyMu.Unlock()
	m.reloads.Add(1)
	m.log.Debug("conncache: reloaded remote state", "peers", n, "removed", len(gone))
	return nil
}

// endReload applies the batches queued during a reload, in order.
func (m *Mirror) endReload() {
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	for _, b := range m.queued {
		m.applyLocked(b.origin, b.records)
	}
	clear(m.queued)
	m.queued = m.queued[:0]
	m.queuedN = 0
	m.reloading = false
}

// fail counts an error and logs it if what was not failing already.
func (m *Mirror) fail(what string, err error) {
	m.errors.Add(1)
	m.stateMu.Lock()
	f, was := m.failing[what]
	f.count++
	if !was {
		f.since = time.Now()
	}
	m.failing[what] = f
	m.stateMu.Unlock()
	if !was {
		m.log.Warn("conncache: store unavailable; serving from local state", "op", what, "err", err)
	}
}

// ok logs the recovery of what if it was failing.
func (m *Mirror) ok(what string) {
	m.stateMu.Lock()
	f, was := m.failing[what]
	delete(m.failing, what)
	m.stateMu.Unlock()
	if was {
		m.log.Info("conncache: store available again", "op", what, "failures", f.count, "after", time.Since(f.since).Round(time.Millisecond))
	}
}
