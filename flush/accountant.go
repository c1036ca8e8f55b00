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
	seen     uint32 // coarse clock, Unix seconds (fits until 2106)
	snatched bool   // a snatch was counted for this identity
}

// entry is all an Accountant keeps for one identity: its baseline, if it
// has one, and its credit not yet frozen into a batch, so that Account
// touches one map entry. An entry without a baseline lives only until its
// credit is frozen. It holds no pointers.
type entry struct {
	base        baseline
	up, down    uint64 // credit not yet frozen
	completedAt int64  // Unix seconds of the last snatch not yet frozen
	snatches    uint32 // snatches not yet frozen
	hasBase     bool   // base is the identity's baseline
	dirty       bool   // the credit is not zero and the identity is in its shard's dirty list
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

// acctShards is the number of locks Account spreads over. Two cores
// rarely meet at one of them; more shards would only make freeze and
// expire take more, shorter locks.
const acctShards = 64

// freezeChunk is how many identities freeze handles per lock, so that an
// announce waits for a few tens of microseconds at most.
const freezeChunk = 512

type acctShard struct {
	mu    sync.Mutex // guards the fields below
	ids   map[identity]entry
	dirty []identity // identities with credit, each once, in order of first credit
	spare []identity // the dirty list freeze emptied last, for reuse
	since int64      // coarse time of the oldest credit in dirty; 0 if none
	_     [64]byte
}

// An Accountant turns private-mode announces into per-user and
// per-user-torrent deltas and applies them to a Store in numbered batches,
// each exactly once. It implements tracker.Accountant.
//
// Account is safe for concurrent use and never blocks on I/O: it takes one
// of 64 shard locks for one identity's map entry. Run owns the flushing;
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
		a.shards[i].ids = make(map[identity]entry)
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
	e, ok := sh.ids[id]
	var prev baseline
	if e.hasBase {
		prev = e.base
	}
	next, keep, up, down, snatch := step(prev, e.hasBase, r)
	if up != 0 || down != 0 || snatch {
		e.up = satAdd(e.up, up)
		e.down = satAdd(e.down, down)
		if snatch {
			e.snatches++
			e.completedAt = now
		}
		if !e.dirty {
			e.dirty = true
			sh.dirty = append(sh.dirty, id)
			if sh.since == 0 {
				sh.since = now
			}
		}
	}
	switch {
	case keep:
		next.seen = uint32(now)
		e.base, e.hasBase = next, true
		sh.ids[id] = e
	case e.dirty:
		// Stopped, with credit to freeze: keep the credit only.
		e.base, e.hasBase = baseline{}, false
		sh.ids[id] = e
	case ok:
		delete(sh.ids, id)
	}
}

// Stats returns the Accountant's counters. Counting the (user, torrent)
// pairs with credit takes a pass over the identities credited since the
// last batch, outside the hot path.
func (a *Accountant) Stats() Stats {
	oldest := int64(0)
	keys := 0
	var pairs []uint64
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		pairs = pairs[:0]
		for _, id := range sh.dirty {
			pairs = append(pairs, uint64(id.user)<<32|uint64(id.torrent))
		}
		if sh.since != 0 && (oldest == 0 || sh.since < oldest) {
			oldest = sh.since
		}
		sh.mu.Unlock()
		slices.Sort(pairs)
		keys += len(slices.Compact(pairs))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	st.Failing = a.fails.failing()
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
	if err := a.cfg.flushRounds(ctx, rounds, a.Flush); err != nil {
		return fmt.Errorf("flush: final accounting flush gave up with %d keys unflushed: %w", a.Stats().PendingKeys, err)
	}
	return nil
}

// expire forgets baselines not refreshed within PeerLifetime. An identity
// with credit not yet frozen keeps its entry, without a baseline, until
// freeze takes the credit.
func (a *Accountant) expire() {
	cutoff := a.now.Load() - int64(a.cfg.PeerLifetime/time.Second)
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for id, e := range sh.ids {
			switch {
			case !e.hasBase || int64(e.base.seen) >= cutoff:
			case e.dirty:
				e.base, e.hasBase = baseline{}, false
				sh.ids[id] = e
			default:
				delete(sh.ids, id)
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

// freeze moves the credit of every identity in the shards' dirty lists
// into a new batch with the next sequence number, summed per (user,
// torrent) and per user, and makes it the batch in flight. It returns nil,
// and uses no number, if there is none.
//
// It takes each shard's list at once, then the credit of its identities
// freezeChunk at a time. Credit that an identity on the taken list gains
// meanwhile joins this batch, credit of any other identity goes to the
// shard's new list: each delta is in exactly one batch.
func (a *Accountant) freeze() *AccountingBatch {
	var torrents []UserTorrentDelta
	oldest := int64(0)
	sums := make(map[utKey]utDelta)
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		ids := sh.dirty
		sh.dirty, sh.spare = sh.spare, nil
		if len(ids) > 0 && (oldest == 0 || sh.since < oldest) {
			oldest = sh.since
		}
		sh.since = 0
		sh.mu.Unlock()
		if len(ids) == 0 {
			continue
		}
		for c := range slices.Chunk(ids, freezeChunk) {
			sh.mu.Lock()
			for _, id := range c {
				sh.takeLocked(id, sums)
			}
			sh.mu.Unlock()
		}
		sh.mu.Lock()
		sh.spare = ids[:0]
		sh.mu.Unlock()
		// A (user, torrent) pair's identities are all in one shard.
		for k, d := range sums {
			ut := UserTorrentDelta{User: k.user, Torrent: k.torrent, Uploaded: d.up, Downloaded: d.down, Snatches: d.snatches}
			if d.snatches > 0 {
				ut.CompletedAt = time.Unix(d.completedAt, 0)
			}
			torrents = append(torrents, ut)
		}
		clear(sums)
	}
	if len(torrents) == 0 {
		return nil
	}
	a.seq++
	b := &AccountingBatch{Process: a.process, Seq: a.seq, Torrents: torrents}
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
	a.inflightKeys = len(b.Torrents)
	a.oldest = oldest
	a.mu.Unlock()
	return b
}

// takeLocked adds id's credit to sums and clears it, forgetting id if it
// has no baseline. id must be on a dirty list freeze has taken.
func (sh *acctShard) takeLocked(id identity, sums map[utKey]utDelta) {
	e := sh.ids[id] // a dirty entry is never deleted before this
	k := utKey{user: id.user, torrent: id.torrent}
	d := sums[k]
	d.up = satAdd(d.up, e.up)
	d.down = satAdd(d.down, e.down)
	if e.snatches > 0 {
		d.snatches += e.snatches
		d.completedAt = max(d.completedAt, e.completedAt)
	}
	sums[k] = d
	if !e.hasBase {
		delete(sh.ids, id)
		return
	}
	e.up, e.down, e.completedAt, e.snatches, e.dirty = 0, 0, 0, 0, false
	sh.ids[id] = e
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
