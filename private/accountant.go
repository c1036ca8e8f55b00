package private

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/internal/backoff"
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

// baseline is what an identity last reported, as step works on it; an
// idSlot keeps it flat.
type baseline struct {
	up, down uint64
	seen     uint32 // coarse clock, Unix seconds (fits until 2106)
	snatched bool   // a snatch was counted for this identity
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

// acctShards is the number of locks Account spreads over. Two cores
// rarely meet at one of them; more shards would only make freeze and
// expire take more, shorter locks.
const acctShards = 64

// walkChunk is how many slots freeze, expire and Stats look at per lock,
// so that an announce waits for a few tens of microseconds at most.
const walkChunk = 1024

type acctShard struct {
	mu    sync.Mutex // guards the fields below
	ids   idTable
	since int64 // coarse time of the oldest credit not yet frozen; 0 if none
	_     [64]byte
}

// walk calls f for every live slot of the shard, walkChunk slots per lock.
// f may remove the slot it is given. A rehash between two chunks moves
// slots, so a slot may then be seen twice or not at all: f must be
// idempotent, and what it misses must be able to wait for the next walk.
func (sh *acctShard) walk(f func(s *idSlot, pos int)) {
	for start := 0; ; start += walkChunk {
		sh.mu.Lock()
		t := &sh.ids
		if start >= len(t.slots) {
			sh.mu.Unlock()
			return
		}
		for i := start; i < min(start+walkChunk, len(t.slots)); i++ {
			if t.isLive(i) {
				f(&t.slots[i], i)
			}
		}
		sh.mu.Unlock()
	}
}

// An Accountant turns private-mode announces into per-user and
// per-user-torrent deltas and applies them to a flush.Store in numbered batches,
// each exactly once. It implements tracker.Accountant.
//
// Account is safe for concurrent use and never blocks on I/O: it takes one
// of 64 shard locks for one identity's slot. Run owns the flushing;
// Stats and Process may be called at any time.
type Accountant struct {
	store   flush.Store
	cfg     AccountantConfig
	process flush.ProcessID
	seed    maphash.Seed // of every shard's idTable
	now     atomic.Int64 // coarse clock, Unix seconds, advanced by Run
	shards  [acctShards]acctShard

	// Owned by the goroutine in Run.
	seq uint64

	mu           sync.Mutex // guards the fields below
	inflight     *flush.AccountingBatch
	inflightKeys int
	oldest       int64 // coarse time of the oldest delta in inflight
	st           flush.Stats
	fails        backoff.Outage
}

var _ tracker.Accountant = (*Accountant)(nil)

// NewAccountant returns an Accountant writing to store under a new random
// flush.ProcessID, or an error naming the field of cfg that is out of
// range.
func NewAccountant(store flush.Store, cfg AccountantConfig) (*Accountant, error) {
	if store == nil {
		panic("private: NewAccountant with nil store")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	a := &Accountant{store: store, cfg: cfg, process: flush.NewProcessID(), seed: maphash.MakeSeed()}
	a.now.Store(time.Now().Unix())
	return a, nil
}

// Process returns the id under which the Accountant records its batches.
func (a *Accountant) Process() flush.ProcessID { return a.process }

func shardOf(user, torrent uint32) int {
	h := (uint64(user)<<32 | uint64(torrent)) * 0x9e3779b97f4a7c15
	return int(h >> 58) // top 6 bits: acctShards == 64
}

// Prefetch starts loading the memory that Account(g, req) will read first:
// the tag and the slot where the probe for req's identity begins. The
// tracker calls it before it applies the announce to the peer table, so
// that this cache miss (the table holds about one slot per client) is
// resolved while the peer table works rather than after it. It takes no
// lock, changes nothing and does not wait for memory.
func (a *Accountant) Prefetch(g tracker.Grant, req *tracker.AnnounceRequest) {
	id := identity{torrent: g.Torrent, user: g.User, key: req.Key, peer: req.PeerID}
	a.shards[shardOf(g.User, g.Torrent)].ids.prefetchHome(hashID(a.seed, &id))
}

// Account records req's totals for g's user and torrent; see doc.go for
// the rules. It reads no clock and does not block on I/O.
func (a *Accountant) Account(g tracker.Grant, req *tracker.AnnounceRequest) {
	id := identity{torrent: g.Torrent, user: g.User, key: req.Key, peer: req.PeerID}
	r := report{up: req.Uploaded, down: req.Downloaded, left: req.Left, event: req.Event}
	now := a.now.Load()
	h := hashID(a.seed, &id)
	sh := &a.shards[shardOf(g.User, g.Torrent)]

	sh.mu.Lock()
	defer sh.mu.Unlock()
	i, found := sh.ids.find(&id, h)
	var prev baseline
	hasBase := false
	if found {
		prev, hasBase = sh.ids.slots[i].baseline(), sh.ids.slots[i].hasBase
	}
	next, keep, up, down, snatch := step(prev, hasBase, r)
	credited := up != 0 || down != 0 || snatch
	if !found {
		if !keep && !credited {
			return
		}
		if sh.ids.needsRehash() {
			sh.ids.rebuild(sizeFor(sh.ids.live+1), a.seed)
			i, _ = sh.ids.find(&id, h)
		}
		sh.ids.insertAt(i, &id, h)
	}
	s := &sh.ids.slots[i]
	if credited {
		s.creditUp = flush.SatAdd(s.creditUp, up)
		s.creditDown = flush.SatAdd(s.creditDown, down)
		if snatch {
			s.snatches++
			s.completedAt = uint32(now)
		}
		if sh.since == 0 {
			sh.since = now
		}
	}
	switch {
	case keep:
		next.seen = uint32(now)
		s.setBaseline(next)
	case s.credited():
		// Stopped, with credit to freeze: keep the credit only.
		s.clearBaseline()
	default:
		sh.ids.remove(i)
	}
}

// Stats returns the Accountant's counters. Counting the (user, torrent)
// pairs with credit takes a pass over the identities credited since the
// last batch, outside the hot path.
func (a *Accountant) Stats() flush.Stats {
	oldest := int64(0)
	keys := 0
	var pairs []uint64
	for i := range a.shards {
		sh := &a.shards[i]
		pairs = pairs[:0]
		sh.walk(func(s *idSlot, _ int) {
			if s.credited() {
				pairs = append(pairs, uint64(s.id.user)<<32|uint64(s.id.torrent))
			}
		})
		sh.mu.Lock()
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
	st.Failing = a.fails.Failing()
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
	retry := a.cfg.backoff()
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
				timer.Reset(retry.Next())
				continue
			}
			retry.Reset()
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
	if err := backoff.Rounds(ctx, a.cfg.backoff(), rounds, a.Flush); err != nil {
		return fmt.Errorf("private: final accounting flush gave up with %d keys unflushed: %w", a.Stats().PendingKeys, err)
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
		sh.walk(func(s *idSlot, pos int) {
			switch {
			case !s.hasBase || int64(s.seen) >= cutoff:
			case s.credited():
				s.clearBaseline()
			default:
				sh.ids.remove(pos)
			}
		})
		sh.mu.Lock()
		if t := &sh.ids; len(t.slots) > minSlots && (t.live*8 < len(t.slots) || t.dead*4 > len(t.slots)) {
			t.rebuild(sizeFor(t.live), a.seed)
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
		started := a.fails.Fail(now)
		a.mu.Unlock()
		err = fmt.Errorf("private: apply accounting batch %d (%d user-torrents, %d users): %w", b.Seq, len(b.Torrents), len(b.Users), err)
		if started {
			a.cfg.Logger.Error("private: accounting flush failing; retrying with backoff", "err", err)
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
	lasted, attempts, recovered := a.fails.End(now)
	a.mu.Unlock()
	if recovered {
		a.cfg.Logger.Info("private: accounting flush recovered", "failed_for", lasted, "failed_attempts", attempts)
	}
	return nil
}

// freeze moves the credit of every identity into a new batch with the
// next sequence number, summed per (user, torrent) and per user, and makes
// it the batch in flight. It returns nil, and uses no number, if there is
// none.
//
// It walks each shard's table a chunk at a time while announces go on.
// Taking an identity's credit zeroes it, so credit gained before its slot
// is reached joins this batch and credit gained after goes to the next:
// each delta is in exactly one batch.
func (a *Accountant) freeze() *flush.AccountingBatch {
	var torrents []flush.UserTorrentDelta
	oldest := int64(0)
	sums := make(map[utKey]utDelta)
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		if sh.since == 0 {
			sh.mu.Unlock()
			continue // no credit since the last walk
		}
		since, moves := sh.since, sh.ids.moves
		if oldest == 0 || since < oldest {
			oldest = since
		}
		sh.since = 0
		sh.mu.Unlock()
		sh.walk(func(s *idSlot, pos int) {
			if !s.credited() {
				return
			}
			k := utKey{user: s.id.user, torrent: s.id.torrent}
			d := sums[k]
			d.up = flush.SatAdd(d.up, s.creditUp)
			d.down = flush.SatAdd(d.down, s.creditDown)
			if s.snatches > 0 {
				d.snatches += s.snatches
				d.completedAt = max(d.completedAt, int64(s.completedAt))
			}
			sums[k] = d
			s.creditUp, s.creditDown, s.snatches, s.completedAt = 0, 0, 0, 0
			if !s.hasBase {
				sh.ids.remove(pos)
			}
		})
		sh.mu.Lock()
		if sh.ids.moves != moves && (sh.since == 0 || since < sh.since) {
			// Slots moved under the walk, which may have missed some
			// credit: the next freeze must look again.
			sh.since = since
		}
		sh.mu.Unlock()
		// A (user, torrent) pair's identities are all in one shard.
		for k, d := range sums {
			ut := flush.UserTorrentDelta{User: k.user, Torrent: k.torrent, Uploaded: d.up, Downloaded: d.down, Snatches: d.snatches}
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
	b := &flush.AccountingBatch{Process: a.process, Seq: a.seq, Torrents: torrents}
	slices.SortFunc(b.Torrents, func(x, y flush.UserTorrentDelta) int {
		if x.User != y.User {
			return cmpU32(x.User, y.User)
		}
		return cmpU32(x.Torrent, y.Torrent)
	})
	for _, ut := range b.Torrents {
		if len(b.Users) == 0 || b.Users[len(b.Users)-1].User != ut.User {
			b.Users = append(b.Users, flush.UserDelta{User: ut.User})
		}
		u := &b.Users[len(b.Users)-1]
		u.Uploaded = flush.SatAdd(u.Uploaded, ut.Uploaded)
		u.Downloaded = flush.SatAdd(u.Downloaded, ut.Downloaded)
		u.Snatches += uint64(ut.Snatches)
	}
	a.mu.Lock()
	a.inflight = b
	a.inflightKeys = len(b.Torrents)
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
