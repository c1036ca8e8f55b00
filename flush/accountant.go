package flush

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// identity is one client session as accounting tells them apart: the
// address is not part of it, so announces over IPv4 and IPv6 with the same
// peer id and key are one client, and the torrent is the storage's id, so
// a hybrid torrent's v1 and v2 hashes are one torrent.
type identity struct {
	torrent, user, key uint32
	peer               [20]byte
}

// baseline is what an identity last reported. It holds no pointers.
type baseline struct {
	up, down uint64
	seen     int64 // coarse clock, Unix seconds
	snatched bool  // a snatch was counted for this identity
}

type utKey struct{ user, torrent uint32 }

type utDelta struct {
	up, down    uint64
	snatches    uint32
	completedAt int64 // Unix seconds of the last snatch
}

// report is one announce's totals as step needs them.
type report struct {
	up, down, left uint64
	event          peertable.Event
}

// step applies one report to an identity's baseline (prev, if found) and
// returns the new baseline, whether to keep it, and the credit: bytes up
// and down and whether a snatch happened. The rules are in doc.go; every
// returned delta is at most the reported total, so never negative.
func step(prev baseline, found bool, r report) (next baseline, keep bool, up, down uint64, snatch bool) {
	started := r.event == peertable.EventStarted
	switch {
	case !found && started:
		up, down = r.up, r.down
	case found:
		up, down = delta(prev.up, r.up, started), delta(prev.down, r.down, started)
	}
	snatch = r.event == peertable.EventCompleted && r.left == 0 && !prev.snatched
	next = baseline{up: r.up, down: r.down, snatched: prev.snatched || snatch}
	return next, r.event != peertable.EventStopped, up, down, snatch
}

// delta is the credit for one counter going from last to reported.
func delta(last, reported uint64, started bool) uint64 {
	switch {
	case reported >= last:
		return reported - last
	case started:
		return reported // a new session counts from zero
	default:
		return 0 // a reset without started: new baseline, no credit
	}
}

// satAdd adds, saturating at math.MaxInt64, the storage's bigint.
func satAdd(a, b uint64) uint64 {
	a, b = min(a, math.MaxInt64), min(b, math.MaxInt64)
	return min(a+b, math.MaxInt64) // a+b < 1<<64: no wrap
}

const acctShards = 64

type acctShard struct {
	mu      sync.Mutex // guards the fields below
	base    map[identity]baseline
	pending map[utKey]utDelta
	since   int64 // coarse time of the oldest pending delta; 0 if none
	_       [64]byte
}

// An Accountant turns private-mode announces into per-user and
// per-user-torrent deltas and applies them to a Store in numbered batches,
// each exactly once. It implements tracker.Accountant.
//
// Account is safe for concurrent use and never blocks on I/O: it takes one
// of 64 shard locks for a few map operations. Run owns the flushing;
// Stats and Process may be called at any time.
type Accountant struct {
	store   Store
	cfg     Config
	process ProcessID
	now     atomic.Int64 // coarse clock, Unix seconds, advanced by Run
	shards  [acctShards]acctShard

	// Owned by the goroutine in Run.
	seq uint64

	mu           sync.Mutex // guards the fields below
	inflight     *AccountingBatch
	inflightKeys int
	oldest       int64 // coarse time of the oldest delta in inflight
	st           Stats
	fails        failures
}

var _ tracker.Accountant = (*Accountant)(nil)

// NewAccountant returns an Accountant writing to store under a new random
// ProcessID. cfg is checked as Open checks it (DSN is not used).
func NewAccountant(store Store, cfg Config) (*Accountant, error) {
	if store == nil {
		panic("flush: NewAccountant with nil store")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	a := &Accountant{store: store, cfg: cfg, process: NewProcessID()}
	a.now.Store(time.Now().Unix())
	for i := range a.shards {
		a.shards[i].base = make(map[identity]baseline)
		a.shards[i].pending = make(map[utKey]utDelta)
	}
	return a, nil
}

// Process returns the id under which the Accountant records its batches.
func (a *Accountant) Process() ProcessID { return a.process }

func shardOf(user, torrent uint32) int {
	h := (uint64(user)<<32 | uint64(torrent)) * 0x9e3779b97f4a7c15
	return int(h >> 58) // top 6 bits: acctShards == 64
}

// Account records req's totals for g's user and torrent; see doc.go for
// the rules. It reads no clock and does not block on I/O.
func (a *Accountant) Account(g tracker.Grant, req *tracker.AnnounceRequest) {
	id := identity{torrent: g.Torrent, user: g.User, key: req.Key, peer: req.PeerID}
	r := report{up: req.Uploaded, down: req.Downloaded, left: req.Left, event: req.Event}
	now := a.now.Load()
	sh := &a.shards[shardOf(g.User, g.Torrent)]

	sh.mu.Lock()
	defer sh.mu.Unlock()
	prev, found := sh.base[id]
	next, keep, up, down, snatch := step(prev, found, r)
	if keep {
		next.seen = now
		sh.base[id] = next
	} else if found {
		delete(sh.base, id)
	}
	if up == 0 && down == 0 && !snatch {
		return
	}
	k := utKey{user: g.User, torrent: g.Torrent}
	d := sh.pending[k]
	d.up = satAdd(d.up, up)
	d.down = satAdd(d.down, down)
	if snatch {
		d.snatches++
		d.completedAt = now
	}
	sh.pending[k] = d
	if sh.since == 0 {
		sh.since = now
	}
}

// Stats returns the Accountant's counters.
func (a *Accountant) Stats() Stats {
	oldest := int64(0)
	keys := 0
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		keys += len(sh.pending)
		if sh.since != 0 && (oldest == 0 || sh.since < oldest) {
			oldest = sh.since
		}
		sh.mu.Unlock()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	st.PendingKeys = keys + a.inflightKeys
	if a.inflight != nil {
		oldest = a.oldest
	}
	if oldest != 0 {
		st.Backlog = max(0, time.Duration(a.now.Load()-oldest)*time.Second)
	}
	return st
}

// Run flushes every Interval until ctx is done, then makes a final flush
// bounded by ShutdownTimeout and returns its error, if any. A failed batch
// is retried unchanged with capped, jittered exponential backoff while new
// deltas collect for the next one. Run also expires baselines older than
// PeerLifetime and advances the coarse clock every second.
//
// Announces accounted after the final flush started are lost: stop the
// frontends before cancelling ctx.
func (a *Accountant) Run(ctx context.Context) error {
	clock := time.NewTicker(time.Second)
	defer clock.Stop()
	timer := time.NewTimer(a.cfg.Interval)
	defer timer.Stop()
	var backoff time.Duration
	for {
		select {
		case <-ctx.Done():
			return a.shutdown()
		case now := <-clock.C:
			a.now.Store(now.Unix())
		case <-timer.C:
			a.now.Store(time.Now().Unix())
			a.expire()
			if err := a.Flush(ctx); err != nil {
				backoff = a.cfg.nextBackoff(backoff)
				timer.Reset(jitter(backoff))
				continue
			}
			backoff = 0
			timer.Reset(a.cfg.Interval)
		}
	}
}

func (a *Accountant) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	// A batch in flight must commit first; then one more batch takes
	// what was collected until now.
	a.mu.Lock()
	rounds := 1
	if a.inflight != nil {
		rounds = 2
	}
	a.mu.Unlock()
	var backoff time.Duration
	for rounds > 0 {
		err := a.Flush(ctx)
		if err == nil {
			rounds--
			backoff = 0
			continue
		}
		backoff = a.cfg.nextBackoff(backoff)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("flush: final accounting flush gave up with %d keys unflushed: %w", a.Stats().PendingKeys, err)
		case <-t.C:
		}
	}
	return nil
}

// expire forgets baselines not refreshed within PeerLifetime.
func (a *Accountant) expire() {
	cutoff := a.now.Load() - int64(a.cfg.PeerLifetime/time.Second)
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for id, b := range sh.base {
			if b.seen < cutoff {
				delete(sh.base, id)
			}
		}
		sh.mu.Unlock()
	}
}

// Flush makes one attempt: it retries the frozen batch if the last attempt
// failed, or else freezes the deltas collected so far into a batch with the
// next sequence number, and applies it. With nothing to apply it returns
// nil at once. Run calls it; it must not be called concurrently with Run
// or with itself.
func (a *Accountant) Flush(ctx context.Context) error {
	a.mu.Lock()
	b := a.inflight
	a.mu.Unlock()
	if b == nil {
		b = a.freeze()
		if b == nil {
			return nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()
	applied, err := a.store.ApplyAccounting(ctx, b)
	now := time.Now()
	a.mu.Lock()
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		// Run is stopping: the batch stays frozen for its final flush,
		// and an interrupted flush is not a failing store.
		a.mu.Unlock()
		return err
	}
	if err != nil {
		a.st.Errors++
		started := a.fails.fail(now)
		a.mu.Unlock()
		err = fmt.Errorf("flush: apply accounting batch %d (%d user-torrents, %d users): %w", b.Seq, len(b.Torrents), len(b.Users), err)
		if started {
			logFailing(a.cfg.Logger, "accounting flush", err)
		}
		return err
	}
	a.inflight = nil
	a.inflightKeys = 0
	a.oldest = 0
	a.st.Flushes++
	if applied {
		a.st.Rows += uint64(len(b.Torrents) + len(b.Users))
	}
	a.st.LastSuccess = now
	lasted, attempts, recovered := a.fails.succeed(now)
	a.mu.Unlock()
	if recovered {
		logRecovered(a.cfg.Logger, "accounting flush", lasted, attempts)
	}
	return nil
}

// freeze moves every shard's pending deltas into a new batch with the next
// sequence number and makes it the batch in flight. It returns nil, and
// uses no number, if there are none.
func (a *Accountant) freeze() *AccountingBatch {
	var maps []map[utKey]utDelta
	n := 0
	oldest := int64(0)
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		if len(sh.pending) > 0 {
			maps = append(maps, sh.pending)
			n += len(sh.pending)
			sh.pending = make(map[utKey]utDelta, len(sh.pending))
			if oldest == 0 || sh.since < oldest {
				oldest = sh.since
			}
			sh.since = 0
		}
		sh.mu.Unlock()
	}
	if n == 0 {
		return nil
	}
	a.seq++
	b := &AccountingBatch{Process: a.process, Seq: a.seq, Torrents: make([]UserTorrentDelta, 0, n)}
	for _, m := range maps {
		for k, d := range m {
			ut := UserTorrentDelta{User: k.user, Torrent: k.torrent, Uploaded: d.up, Downloaded: d.down, Snatches: d.snatches}
			if d.snatches > 0 {
				ut.CompletedAt = time.Unix(d.completedAt, 0)
			}
			b.Torrents = append(b.Torrents, ut)
		}
	}
	slices.SortFunc(b.Torrents, func(x, y UserTorrentDelta) int {
		if x.User != y.User {
			return cmpU32(x.User, y.User)
		}
		return cmpU32(x.Torrent, y.Torrent)
	})
	for _, ut := range b.Torrents {
		if len(b.Users) == 0 || b.Users[len(b.Users)-1].User != ut.User {
			b.Users = append(b.Users, UserDelta{User: ut.User})
		}
		u := &b.Users[len(b.Users)-1]
		u.Uploaded = satAdd(u.Uploaded, ut.Uploaded)
		u.Downloaded = satAdd(u.Downloaded, ut.Downloaded)
		u.Snatches += uint64(ut.Snatches)
	}
	a.mu.Lock()
	a.inflight = b
	a.inflightKeys = n
	a.oldest = oldest
	a.mu.Unlock()
	return b
}

func cmpU32(x, y uint32) int {
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}
