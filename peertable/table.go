package peertable

import (
	"context"
	"fmt"
	"hash/maphash"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults and limits of Config.
const (
	defaultLifetime = 31 * time.Minute
	maxLifetime     = 12 * time.Hour
	defaultSwarms   = 1 << 16
	swarmsPerShard  = 16
	maxShards       = 1 << 20
)

// A Table is the set of swarms. It is safe for concurrent use: announces
// and scrapes of any swarms may run at once with each other, with Tick and
// with Sweep. The zero Table is not usable; call New.
type Table struct {
	shards []shard
	mask   uint64
	seed   maphash.Seed // hashes info hashes to shards
	k0     uint64       // k0..k2 key the hash of peer keys (see mix)
	k1     uint64
	k2     uint64

	// now is the coarse clock in units of unit seconds since the Unix
	// epoch, set by Tick. Slots keep its low 16 bits.
	now        atomic.Int64
	unit       int64
	life       uint16 // PeerLifetime in units, rounded up
	refresh    uint16 // RefreshEvery in units, at least 1
	onExpire   func(InfoHash, Peer)
	sweepEvery time.Duration

	// keepUntil is the clock (as now) until which the sweep keeps empty
	// swarms that have a completed count; ReadSnapshot sets it.
	keepUntil atomic.Int64

	sweepMu sync.Mutex // serializes Sweep, so two sweeps never interleave their batches

	// sweeping is the swarm the sweep is working through, nil between
	// swarms; sweepWaiters counts the announces waiting for its lock,
	// so that the sweep can let them in between its batches.
	sweeping     atomic.Pointer[swarm]
	sweepWaiters atomic.Int32
}

// A shard is one slice of the swarm index: an immutable open-addressed
// array of swarms, replaced whole (copy, then compare-and-swap) when a
// swarm is created or removed, so that lookups are single loads.
type shard struct {
	p atomic.Pointer[bucket]
}

// A bucket is never modified once published. Its length is a power of two
// and at most three quarters of it is used, so a probe always ends.
type bucket struct {
	s []*swarm
}

var emptyBucket = &bucket{s: make([]*swarm, 1)}

// A swarm is the peers of one info hash. Its lock is taken only by writers
// of this swarm: an announce changing its own entry, and the sweep.
// Readers never take it.
type swarm struct {
	ih InfoHash
	// state holds the completed count in its low 31 bits and the dead
	// mark in bit 31. Both change only under mu; sharing a word keeps a
	// swarm at 64 bytes, a whole size class.
	state atomic.Uint32
	mu    sync.Mutex // guards the writer-only state of the sets below
	v4    peerSet
	v6    atomic.Pointer[peerSet] // nil until the first IPv6 peer
}

const deadBit = 1 << 31

// dead reports whether the sweep has emptied s and unlinked it, or is
// about to. A dead swarm never takes a peer again.
func (s *swarm) dead() bool { return s.state.Load()&deadBit != 0 }

func (s *swarm) markDeadLocked() { s.state.Or(deadBit) }

func (s *swarm) addCompletedLocked() {
	if s.state.Load()&^deadBit < deadBit-1 { // saturate rather than carry into the mark
		s.state.Add(1)
	}
}

// New returns an empty Table, or an error naming the Config field that is
// out of range.
func New(cfg Config) (*Table, error) {
	switch {
	case cfg.PeerLifetime < 0 || cfg.PeerLifetime > maxLifetime:
		return nil, fmt.Errorf("peertable: PeerLifetime %v out of range (0 to %v)", cfg.PeerLifetime, maxLifetime)
	case cfg.Swarms < 0:
		return nil, fmt.Errorf("peertable: Swarms %d is negative", cfg.Swarms)
	case cfg.RefreshEvery < 0 || cfg.RefreshEvery > cfg.PeerLifetime && cfg.PeerLifetime != 0:
		return nil, fmt.Errorf("peertable: RefreshEvery %v out of range (0 to PeerLifetime %v)", cfg.RefreshEvery, cfg.PeerLifetime)
	}
	if cfg.PeerLifetime == 0 {
		cfg.PeerLifetime = defaultLifetime
	}
	if cfg.Swarms == 0 {
		cfg.Swarms = defaultSwarms
	}
	if cfg.RefreshEvery == 0 {
		cfg.RefreshEvery = cfg.PeerLifetime / 4
	}
	nshards := 1
	for nshards < cfg.Swarms/swarmsPerShard && nshards < maxShards {
		nshards *= 2
	}

	// Stamps are 16 bits of coarse time. A unit of 1/8192 of the lifetime
	// (at least a second) keeps every age the sweep can meet far inside
	// the 65,536 units before a stamp wraps.
	secs := int64((cfg.PeerLifetime + time.Second - 1) / time.Second)
	unit := max(1, (secs+8191)/8192)
	t := &Table{
		shards:     make([]shard, nshards),
		mask:       uint64(nshards - 1),
		seed:       maphash.MakeSeed(),
		k0:         rand.Uint64(),
		k1:         rand.Uint64(),
		k2:         rand.Uint64() | 1,
		unit:       unit,
		life:       uint16((secs + unit - 1) / unit),
		onExpire:   cfg.OnExpire,
		sweepEvery: min(max(cfg.PeerLifetime/4, time.Second), 30*time.Second),
	}
	rsecs := int64(cfg.RefreshEvery / time.Second)
	t.refresh = uint16(min(max(1, rsecs/unit), int64(t.life)))
	for i := range t.shards {
		t.shards[i].p.Store(emptyBucket)
	}
	t.Tick(time.Now())
	return t, nil
}

// Tick sets the table's clock, which stamps announces and decides expiry.
// Run calls it every second; tests call it to move time. Announce never
// reads the system clock itself. The clock has a resolution of one unit
// (a second, or 1/8192 of PeerLifetime if that is longer). It should not
// go back by more than PeerLifetime: peers stamped that far in its future
// read as stale. Run's clock never goes back.
func (t *Table) Tick(now time.Time) {
	s := now.Unix()
	u := s / t.unit
	if s%t.unit < 0 {
		u-- // floor, so that a unit is never split around the epoch
	}
	t.now.Store(u)
}

func (t *Table) stamp() uint16 { return uint16(t.now.Load()) }

// stale reports whether a slot seen at stamp has outlived the lifetime.
// The age is taken modulo 2^16 and shifted by one lifetime, so that a
// stamp slightly ahead of now (an announce that read a newer clock than
// the sweeper) counts as fresh, and one that is far behind counts as
// stale however far, until it wraps (see the package comment).
func (t *Table) stale(now, stamp uint16) bool {
	return now-stamp+t.life > 2*t.life
}

// Run keeps the table's clock and expiry going: it calls Tick every second
// and Sweep every quarter of PeerLifetime (at least every second, at most
// every 30 seconds), until ctx is done. It then returns nil.
func (t *Table) Run(ctx context.Context) error {
	// Wall time advanced by the monotonic clock, so a step of the system
	// clock does not age or rejuvenate every peer at once.
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	next := start.Add(t.sweepEvery)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			now := start.Add(time.Since(start))
			t.Tick(now)
			if !now.Before(next) {
				t.Sweep()
				next = now.Add(t.sweepEvery)
			}
		}
	}
}

func (t *Table) hashIH(ih *InfoHash) uint64 { return maphash.Bytes(t.seed, ih[:]) }

// home returns where a probe for hash h starts in a bucket of n slots. It
// uses the hash bits above the shard bits.
func home(h uint64, n int) int { return int((h >> 32) & uint64(n-1)) }

func (b *bucket) find(h uint64, ih *InfoHash) *swarm {
	mask := len(b.s) - 1
	for i := home(h, len(b.s)); ; i = (i + 1) & mask {
		s := b.s[i]
		if s == nil || s.ih == *ih {
			return s
		}
	}
}

// rebuild returns a copy of b without its dead swarms and with add (if
// not nil), sized for its contents.
func (t *Table) rebuild(b *bucket, add *swarm) *bucket {
	n := 0
	if add != nil {
		n++
	}
	for _, s := range b.s {
		if s != nil && !s.dead() {
			n++
		}
	}
	size := 1
	for 4*n >= 3*size {
		size *= 2
	}
	nb := &bucket{s: make([]*swarm, size)}
	put := func(s *swarm) {
		mask := size - 1
		i := home(t.hashIH(&s.ih), size)
		for nb.s[i] != nil {
			i = (i + 1) & mask
		}
		nb.s[i] = s
	}
	for _, s := range b.s {
		if s != nil && !s.dead() {
			put(s)
		}
	}
	if add != nil {
		put(add)
	}
	return nb
}

// purge unlinks the dead swarms of sh. Whoever meets a dead swarm calls
// it, the sweep or an announcer, so no one waits for the other.
func (t *Table) purge(sh *shard) {
	for {
		b := sh.p.Load()
		dead := false
		for _, s := range b.s {
			if s != nil && s.dead() {
				dead = true
				break
			}
		}
		if !dead || sh.p.CompareAndSwap(b, t.rebuild(b, nil)) {
			return
		}
	}
}

// Announce records a's peer in its swarm (or, for EventStopped, removes
// it), then appends up to a.NumWant other peers of a's family to dst as
// compact peers and returns it. A seeder is given only leechers; a leecher
// seeders and leechers in proportion to their numbers. Peers are taken
// from a random point of the swarm, so different requesters see different
// subsets.
//
// Once the swarm and the peer exist and dst has room, Announce does not
// allocate. It takes no lock shared with other swarms and reads no clock.
func (t *Table) Announce(a *Announce, dst []byte) ([]byte, Result) {
	h := t.hashIH(&a.InfoHash)
	sh := &t.shards[h&t.mask]
	k, f := keyOf(a.Addr)
	var res Result
	var s *swarm
	for {
		b := sh.p.Load()
		s = b.find(h, &a.InfoHash)
		if s == nil {
			if a.Event == EventStopped {
				return dst, res // nothing to forget; create nothing
			}
			// A new swarm is filled before it is published: its first
			// peer cannot be lost to a sweep that sees it empty. No one
			// else can see s yet, so its lock is not needed.
			s = &swarm{ih: a.InfoHash}
			res = t.updateLocked(s, a, f, &k)
			if !sh.p.CompareAndSwap(b, t.rebuild(b, s)) {
				continue // someone changed the shard; look again
			}
			break
		}
		t.lock(s)
		if s.dead() {
			// The sweep emptied and unlinked s (or is about to): the peer
			// belongs in its successor.
			s.mu.Unlock()
			t.purge(sh)
			continue
		}
		res = t.updateLocked(s, a, f, &k)
		s.mu.Unlock()
		break
	}
	res.Counts = s.counts()
	if a.NumWant > 0 {
		set := &s.v4
		if f == fam6 {
			set = s.v6.Load()
		}
		if set != nil {
			dst = t.pick(set, f, dst, a.NumWant, &k, a.Seeder)
		}
	}
	return dst, res
}

// lock takes s.mu for an announce. If the sweep holds it, the announce
// counts itself as waiting, which makes the sweep hand the lock over at
// its next batch boundary instead of taking it straight back.
func (t *Table) lock(s *swarm) {
	if s.mu.TryLock() {
		return
	}
	if t.sweeping.Load() != s {
		s.mu.Lock()
		return
	}
	t.sweepWaiters.Add(1)
	s.mu.Lock()
	t.sweepWaiters.Add(-1)
}

// sweepYield is the longest the sweep waits, between two batches, for
// the announces queued on a swarm's lock to take it. A woken waiter on
// another thread needs some microseconds to run; without the wait the
// sweep, still running, would win the lock back every time and the
// waiter would get it only once sync.Mutex turned to starvation mode,
// a millisecond later.
const sweepYield = 200 * time.Microsecond

// yieldLocked releases s.mu, lets the announces waiting for it go first
// (for at most sweepYield), and takes it again.
func (t *Table) yieldLocked(s *swarm) {
	s.mu.Unlock()
	runtime.Gosched() // on a single P this alone runs the woken waiter
	if t.sweepWaiters.Load() > 0 {
		deadline := time.Now().Add(sweepYield)
		for t.sweepWaiters.Load() > 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}
	s.mu.Lock()
}

// updateLocked applies a to s.
func (t *Table) updateLocked(s *swarm, a *Announce, f family, k *peerKey) Result {
	var res Result
	set := &s.v4
	if f == fam6 {
		set = s.v6.Load()
		if set == nil {
			if a.Event == EventStopped {
				return res
			}
			set = new(peerSet)
			s.v6.Store(set)
		}
	}
	p := set.findLocked(t, f, k)
	wasSeeder := p > 0
	if a.Event == EventStopped {
		if p != 0 {
			set.removeLocked(t, f, p)
			res.Change = ChangeRemoved
		}
		return res
	}
	if a.Event == EventCompleted && !wasSeeder {
		s.addCompletedLocked()
		res.Completed = true
	}
	now := t.stamp()
	switch {
	case p != 0 && wasSeeder == a.Seeder:
		if prev := set.seenLocked(f, p); prev/t.refresh != now/t.refresh {
			res.Change = ChangeRefresh
		}
		set.touchLocked(f, p, now)
	case p != 0:
		set.removeLocked(t, f, p)              // a role change: out of one region...
		set.addLocked(t, f, k, !a.Seeder, now) // ...into the other
		res.Change = ChangeRole
	default:
		set.addLocked(t, f, k, !a.Seeder, now)
		res.Change = ChangeAdded
	}
	return res
}

func (s *swarm) counts() Counts {
	ns, nl := unpack(s.v4.cnt.Load())
	if v6 := s.v6.Load(); v6 != nil {
		ns6, nl6 := unpack(v6.cnt.Load())
		ns, nl = ns+ns6, nl+nl6
	}
	return Counts{Seeders: uint32(ns), Leechers: uint32(nl), Completed: s.state.Load() &^ deadBit}
}

// Scrape returns the counts of swarm ih; an unknown swarm has all zeros.
// It takes no lock.
func (t *Table) Scrape(ih InfoHash) Counts {
	h := t.hashIH(&ih)
	if s := t.shards[h&t.mask].p.Load().find(h, &ih); s != nil {
		return s.counts()
	}
	return Counts{}
}

// Sweep removes the peers not seen within PeerLifetime, and the swarms
// left empty, and returns how many peers it removed. Run calls it; it
// holds a swarm's lock for at most sweepBatch slots at a time.
func (t *Table) Sweep() int {
	t.sweepMu.Lock()
	defer t.sweepMu.Unlock()
	removed := 0
	for i := range t.shards {
		sh := &t.shards[i]
		dead := false
		for _, s := range sh.p.Load().s {
			if s == nil {
				continue
			}
			n, empty := t.sweepSwarm(s)
			removed += n
			dead = dead || empty
		}
		if dead {
			t.purge(sh)
		}
	}
	return removed
}

// sweepSwarm expires the peers of s and marks s dead if it is left empty.
func (t *Table) sweepSwarm(s *swarm) (removed int, dead bool) {
	t.sweeping.Store(s)
	defer t.sweeping.Store(nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead() {
		return 0, true
	}
	now := t.stamp()
	removed = s.v4.sweepLocked(t, fam4, s, now)
	v6 := s.v6.Load()
	if v6 != nil {
		removed += v6.sweepLocked(t, fam6, s, now)
	}
	if s.v4.size() == 0 && (v6 == nil || v6.size() == 0) {
		if s.state.Load()&^deadBit != 0 && t.now.Load() < t.keepUntil.Load() {
			return removed, false // restored count waiting for its peers (ReadSnapshot)
		}
		s.markDeadLocked()
		return removed, true
	}
	return removed, false
}

// Range calls f with the info hash and counts of every live swarm, in no
// particular order, until f returns false. Like Scrape it takes no lock:
// announces and sweeps go on while it runs, and f may call any method of
// t, Announce included.
//
// Range reads each shard's swarm array once, when it reaches it, so it
// sees every shard as of a moment, not the whole table as of one: a swarm
// created in a shard it has already read is missed, one created in a
// shard it has yet to read is seen, and a swarm removed after its shard
// was read is still visited unless the sweep has already marked it dead.
// An info hash is visited at most once per call. Each swarm's counts are
// read when f is called, as Scrape reads them; they may include swarms
// left empty by stops that the sweep has not removed yet (all zero but
// Completed).
func (t *Table) Range(f func(ih InfoHash, c Counts) bool) {
	for i := range t.shards {
		for _, s := range t.shards[i].p.Load().s {
			if s == nil || s.dead() {
				continue
			}
			if !f(s.ih, s.counts()) {
				return
			}
		}
	}
}

// Stats counts the swarms and peers. It walks the whole table without
// locks, so under load the totals are approximate; it is meant for
// metrics, not for the announce path.
func (t *Table) Stats() Stats {
	var st Stats
	for i := range t.shards {
		for _, s := range t.shards[i].p.Load().s {
			if s == nil || s.dead() {
				continue
			}
			st.Swarms++
			st.PeersV4 += s.v4.size()
			if v6 := s.v6.Load(); v6 != nil {
				st.PeersV6 += v6.size()
			}
		}
	}
	return st
}

// pick appends up to want peers of set to dst, never k itself; only
// leechers when seeder is set. See the package comment for what a pick
// that races with writers may return.
func (t *Table) pick(set *peerSet, f family, dst []byte, want int, k *peerKey, seeder bool) []byte {
	e, capacity, ns, nl := set.regions(f)
	if e == nil {
		return dst
	}
	seeders := e[:ns*int(f)]
	leechers := e[(capacity-nl)*int(f):]

	// One random word gives both starting points (multiply-shift maps 32
	// random bits onto [0, n) without division).
	r := rand.Uint64()
	// A walk visits at most visitLimit(want) slots of each role, so
	// that a swarm full of stale peers the sweep has not reached yet
	// costs an announce no more than a live one: without the bound, it
	// would walk the whole swarm looking for fresh peers.
	limit := visitLimit(want)
	cl := cursor{at: int((r >> 32) * uint64(nl) >> 32), left: min(nl, limit)}
	cs := cursor{at: int(uint64(uint32(r)) * uint64(ns) >> 32), left: min(ns, limit)}
	now := t.stamp()
	if seeder {
		dst, _ = t.walk(f, dst, leechers, &cl, want, k, now)
		return dst
	}
	ks := ns
	if total := ns + nl; want < total {
		// Rounded to nearest: the requester itself is among the
		// leechers, and flooring would shortchange the seeders.
		hi, lo := bits.Mul64(uint64(want), uint64(ns))
		lo, carry := bits.Add64(lo, uint64(total/2), 0)
		q, _ := bits.Div64(hi+carry, lo, uint64(total))
		ks = int(q)
	}
	dst, gs := t.walk(f, dst, seeders, &cs, ks, k, now)
	dst, gl := t.walk(f, dst, leechers, &cl, want-gs, k, now)
	if gs+gl < want { // self, stale or too few leechers: more seeders
		dst, _ = t.walk(f, dst, seeders, &cs, want-gs-gl, k, now)
	}
	return dst
}

// visitLimit is how many slots of one role a pick of want peers visits
// at most: room for want peers, a stale or empty slot in every few, and
// the requester itself. Only a swarm where stale slots outnumber fresh
// ones by about four to one gets fewer peers than it could give.
func visitLimit(want int) int { return 4*want + 64 }

// A cursor is a walk's place in a region: the next slot, and how many
// slots it has not visited yet.
type cursor struct{ at, left int }

// walk appends up to want usable peers of region r, from c.at onwards with
// wraparound, and returns how many it appended. It skips self, slots that
// are stale, empty (port 0: never written in this array) or, for IPv6,
// being rewritten.
func (t *Table) walk(f family, dst []byte, r []atomic.Uint64, c *cursor, want int, self *peerKey, now uint16) ([]byte, int) {
	n := len(r) / int(f)
	got := 0
	if f == fam4 {
		for ; got < want && c.left > 0; c.left-- {
			w := r[c.at].Load()
			if c.at++; c.at == n {
				c.at = 0
			}
			if w&portMask == 0 || w&^seenMask == self.tail || t.stale(now, uint16(w)) {
				continue
			}
			dst = append(dst, byte(w>>56), byte(w>>48), byte(w>>40), byte(w>>32), byte(w>>24), byte(w>>16))
			got++
		}
		return dst, got
	}
	for ; got < want && c.left > 0; c.left-- {
		j := 3 * c.at
		if c.at++; c.at == n {
			c.at = 0
		}
		m := r[j+2].Load()
		if m&(1<<32) != 0 { // odd seq: being rewritten
			continue
		}
		hi, lo := r[j].Load(), r[j+1].Load()
		if r[j+2].Load()>>32 != m>>32 { // rewritten while we read
			continue
		}
		if m&portMask == 0 || (hi == self.hi && lo == self.lo && m&portMask == self.tail) || t.stale(now, uint16(m)) {
			continue
		}
		dst = append(dst,
			byte(hi>>56), byte(hi>>48), byte(hi>>40), byte(hi>>32), byte(hi>>24), byte(hi>>16), byte(hi>>8), byte(hi),
			byte(lo>>56), byte(lo>>48), byte(lo>>40), byte(lo>>32), byte(lo>>24), byte(lo>>16), byte(lo>>8), byte(lo),
			byte(m>>24), byte(m>>16))
		got++
	}
	return dst, got
}
