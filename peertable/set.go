package peertable

import (
	"net/netip"
	"sync/atomic"
)

// A family says how a peer set lays out its slots in its word array.
//
// An IPv4 slot is one word; an IPv6 slot is three. The last word of every
// slot (its tail) carries the port and the coarse last-seen time at the
// same bits, so code that only needs those does not care about the family:
//
//	IPv4 slot (1 word)  63..32 address   31..16 port  15..0 seen
//	IPv6 slot (3 words) [0] address bytes 0-7 (big-endian)
//	                    [1] address bytes 8-15
//	                    [2] 63..32 seq   31..16 port  15..0 seen
//
// An IPv4 slot is read and written whole by one atomic access, so it is
// never torn. An IPv6 slot is guarded by seq, a seqlock: the writer makes
// it odd, writes the address words, then stores the new tail with seq one
// higher again; a reader that sees an odd seq, or a different seq after
// reading the address, skips the slot.
type family int

const (
	fam4 family = 1 // words per IPv4 slot
	fam6 family = 3 // words per IPv6 slot
)

const (
	seenMask = 0xffff
	portMask = 0xffff << 16
)

// A peerKey identifies a peer within its family: address and port.
type peerKey struct {
	hi, lo uint64 // IPv6 address; zero for IPv4
	tail   uint64 // a tail without seen (and seq): IPv4 address and port, or IPv6 port
}

func keyOf(ap netip.AddrPort) (peerKey, family) {
	a, port := ap.Addr(), uint64(ap.Port())<<16
	if a.Is4() {
		b := a.As4()
		return peerKey{tail: uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 | port}, fam4
	}
	b := a.As16()
	return peerKey{hi: be64(b[:8]), lo: be64(b[8:]), tail: port}, fam6
}

// addrPort is the inverse of keyOf.
func (k peerKey) addrPort(f family) netip.AddrPort {
	port := uint16(k.tail >> 16)
	if f == fam4 {
		a := uint32(k.tail >> 32)
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), port)
	}
	var b [16]byte
	for i := range 8 {
		b[i] = byte(k.hi >> (56 - 8*i))
		b[8+i] = byte(k.lo >> (56 - 8*i))
	}
	return netip.AddrPortFrom(netip.AddrFrom16(b), port)
}

func be64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
		uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
}

// keyAt returns the key of slot i. Writers only: a reader could see a torn
// IPv6 slot.
func (f family) keyAt(e []atomic.Uint64, i int) peerKey {
	if f == fam4 {
		return peerKey{tail: e[i].Load() &^ seenMask}
	}
	j := 3 * i
	return peerKey{hi: e[j].Load(), lo: e[j+1].Load(), tail: e[j+2].Load() & portMask}
}

// matches reports whether slot i holds k. Writers only.
func (f family) matches(e []atomic.Uint64, i int, k *peerKey) bool {
	if f == fam4 {
		return e[i].Load()&^seenMask == k.tail
	}
	j := 3 * i
	return e[j+2].Load()&portMask == k.tail && e[j].Load() == k.hi && e[j+1].Load() == k.lo
}

// store writes k into slot i, seen at stamp.
func (f family) store(e []atomic.Uint64, i int, k *peerKey, stamp uint16) {
	if f == fam4 {
		e[i].Store(k.tail | uint64(stamp))
		return
	}
	j := 3 * i
	seq := e[j+2].Load() >> 32
	e[j+2].Store((seq + 1) << 32) // odd: readers skip the slot from here...
	e[j].Store(k.hi)
	e[j+1].Store(k.lo)
	e[j+2].Store((seq+2)<<32 | k.tail | uint64(stamp)) // ...to here
}

// touch sets the last-seen time of slot i, whose key is unchanged. For
// IPv6 the seq stays: a reader that straddles the store sees the same
// address either way.
func (f family) touch(e []atomic.Uint64, i int, stamp uint16) {
	j := int(f)*i + int(f) - 1
	e[j].Store(e[j].Load()&^seenMask | uint64(stamp))
}

// seenAt returns the last-seen stamp of slot i.
func (f family) seenAt(e []atomic.Uint64, i int) uint16 {
	return uint16(e[int(f)*i+int(f)-1].Load())
}

// The counts word of a set: seeders in the high half, leechers in the low,
// so readers load both at once.
func unpack(c uint64) (seeders, leechers int) { return int(c >> 32), int(uint32(c)) }
func pack(seeders, leechers int) uint64       { return uint64(seeders)<<32 | uint64(uint32(leechers)) }

// A peerSet holds one family's peers of a swarm in a single slot array:
// seeders fill it from the front, leechers from the back, so a seeder's
// answer walks only the leecher region, both roles share one allocation
// and their spare room, and one atomic word holds both counts.
//
//	slot 0 ... ns-1 | free ... | cap-nl ... cap-1
//	seeder 0 ... ns-1          | leecher nl-1 ... leecher 0
//
// Readers load cnt, then vec, and clamp the counts to the array they got
// (see the package comment for why that is enough). Everything else is for
// the holder of the swarm's lock, hence the Locked suffixes.
type peerSet struct {
	cnt atomic.Uint64
	vec atomic.Pointer[slots]
	// idx is the writer's key index, nil while the set is small. Only
	// the writer changes it, replacing it whole when rebuilt, or its
	// contents; it is atomic so that Prefetch may follow it.
	idx atomic.Pointer[index]
}

// slots is the published slot array. It is replaced whole on growth and
// shrinking; its words are updated in place.
type slots struct {
	e []atomic.Uint64
}

// indexLocked returns the set's key index, or nil if it has none.
func (s *peerSet) indexLocked() *index { return s.idx.Load() }

// capacities step by 1.5 and 4/3 in turn (2, 3, 4, 6, 8, 12, ...), so an
// IPv4 array is always a whole malloc size class: nothing is lost to
// rounding, and a set wastes at most a third of its array.
func nextCap(c int) int {
	switch {
	case c < 2:
		return 2
	case c&(c-1) == 0:
		return c + c/2
	default:
		return c + c/3
	}
}

func capFor(n int) int {
	c := 2
	for c < n {
		c = nextCap(c)
	}
	return c
}

// phys returns the slot index of role position k in an array of cap slots.
func phys(capacity int, leech bool, k int) int {
	if leech {
		return capacity - 1 - k
	}
	return k
}

func (t *Table) hashKey(k *peerKey) uint64 {
	return mix(mix(k.hi^t.k0, k.lo^t.k1)^k.tail, t.k2)
}

// regions is how a reader sees s without its lock: the slot array, its
// capacity in slots, and the seeders at its start and leechers at its end,
// counted by the counts word loaded first and clamped to the array loaded
// after it (see the package comment). e is nil for a set never filled.
func (s *peerSet) regions(f family) (e []atomic.Uint64, capacity, ns, nl int) {
	c := s.cnt.Load()
	v := s.vec.Load()
	if v == nil {
		return nil, 0, 0, 0
	}
	capacity = len(v.e) / int(f)
	ns, nl = unpack(c)
	ns = min(ns, capacity)
	nl = min(nl, capacity-ns)
	return v.e, capacity, ns, nl
}

func (s *peerSet) size() int {
	ns, nl := unpack(s.cnt.Load())
	return ns + nl
}

// findLocked returns the position of k, or 0.
func (s *peerSet) findLocked(t *Table, f family, k *peerKey) position {
	ns, nl := unpack(s.cnt.Load())
	if ns+nl == 0 {
		return 0
	}
	e := s.vec.Load().e
	capacity := len(e) / int(f)
	if x := s.indexLocked(); x != nil {
		return x.find(t.hashKey(k), func(p position) bool {
			leech, i := p.split()
			return f.matches(e, phys(capacity, leech, i), k)
		})
	}
	for i := range ns {
		if f.matches(e, i, k) {
			return seederPos(i)
		}
	}
	for i := range nl {
		if f.matches(e, capacity-1-i, k) {
			return leecherPos(i)
		}
	}
	return 0
}

// seenLocked returns the last-seen stamp of the peer at p.
func (s *peerSet) seenLocked(f family, p position) uint16 {
	e := s.vec.Load().e
	leech, i := p.split()
	return f.seenAt(e, phys(len(e)/int(f), leech, i))
}

// touchLocked records a re-announce of the peer at p that keeps its role.
func (s *peerSet) touchLocked(f family, p position, stamp uint16) {
	e := s.vec.Load().e
	leech, i := p.split()
	f.touch(e, phys(len(e)/int(f), leech, i), stamp)
}

// addLocked adds k, which is not in the set, as a seeder or a leecher.
func (s *peerSet) addLocked(t *Table, f family, k *peerKey, leech bool, stamp uint16) {
	ns, nl := unpack(s.cnt.Load())
	v := s.vec.Load()
	if v == nil || ns+nl == len(v.e)/int(f) {
		v = s.resizeLocked(f, capFor(ns+nl+1))
	}
	capacity := len(v.e) / int(f)
	var p position
	var j int
	if leech {
		p, j = leecherPos(nl), capacity-1-nl
		nl++
	} else {
		p, j = seederPos(ns), ns
		ns++
	}
	f.store(v.e, j, k, stamp) // the slot is written before the count admits it
	s.cnt.Store(pack(ns, nl))

	switch x := s.indexLocked(); {
	case x != nil && !x.full():
		x.insert(t.hashKey(k), p)
	case x != nil, ns+nl > indexOn:
		s.reindexLocked(t, f)
	}
}

// removeLocked removes the peer at p, moving its role's last peer into the
// hole. A reader walking the set meanwhile may see the moved peer twice,
// or miss it, but never a torn slot (see the package comment).
func (s *peerSet) removeLocked(t *Table, f family, p position) {
	ns, nl := unpack(s.cnt.Load())
	e := s.vec.Load().e
	capacity := len(e) / int(f)
	leech, i := p.split()
	last := ns - 1
	if leech {
		last = nl - 1
	}
	hole, from := phys(capacity, leech, i), phys(capacity, leech, last)
	idx := s.indexLocked()
	if idx != nil {
		k := f.keyAt(e, hole)
		idx.remove(t.hashKey(&k), p)
	}
	if i != last {
		k := f.keyAt(e, from)
		f.store(e, hole, &k, f.seenAt(e, from))
		if idx != nil {
			lastPos := seederPos(last)
			if leech {
				lastPos = leecherPos(last)
			}
			idx.move(t.hashKey(&k), lastPos, p)
		}
	}
	if leech {
		nl--
	} else {
		ns--
	}
	s.cnt.Store(pack(ns, nl))
}

// resizeLocked publishes a copy of the set in an array of capacity slots
// (nil for zero) and returns it. Positions are by role, so the index stays
// valid.
func (s *peerSet) resizeLocked(f family, capacity int) *slots {
	ns, nl := unpack(s.cnt.Load())
	old := s.vec.Load()
	if capacity == 0 {
		s.vec.Store(nil)
		return nil
	}
	v := &slots{e: make([]atomic.Uint64, capacity*int(f))}
	if old != nil {
		oldCap := len(old.e) / int(f)
		for _, r := range [2]struct {
			leech bool
			n     int
		}{{false, ns}, {true, nl}} {
			for i := range r.n {
				from, to := phys(oldCap, r.leech, i), phys(capacity, r.leech, i)
				for w := range int(f) {
					v.e[to*int(f)+w].Store(old.e[from*int(f)+w].Load())
				}
			}
		}
	}
	s.vec.Store(v) // after the copy: a reader that gets v sees every slot the counts admit
	return v
}

// reindexLocked builds the key index afresh, or drops it when the set has
// become small.
func (s *peerSet) reindexLocked(t *Table, f family) {
	ns, nl := unpack(s.cnt.Load())
	if ns+nl < indexOff {
		s.idx.Store(nil)
		return
	}
	x := newIndex(ns + nl)
	e := s.vec.Load().e
	capacity := len(e) / int(f)
	for i := range ns {
		k := f.keyAt(e, i)
		x.insert(t.hashKey(&k), seederPos(i))
	}
	for i := range nl {
		k := f.keyAt(e, capacity-1-i)
		x.insert(t.hashKey(&k), leecherPos(i))
	}
	s.idx.Store(x) // filled before it is published
}

// sweepBatch is how many slots a sweep examines per hold of a swarm's
// lock, so that sweeping a huge swarm never stalls its announces for long.
const sweepBatch = 256

// sweepLocked removes the peers not seen within the table's lifetime and
// returns how many. It releases mu every sweepBatch slots; it walks each
// role from its last position down, so the peer that a removal moves into
// the hole has already been examined, and a peer added while mu was free
// (at the end of its role) is fresh anyway. After the walk it shrinks an
// array that has become mostly empty.
func (s *peerSet) sweepLocked(t *Table, f family, sw *swarm, now uint16) int {
	removed, budget := 0, sweepBatch
	for _, leech := range [2]bool{false, true} {
		ns, nl := unpack(s.cnt.Load())
		i := ns - 1
		if leech {
			i = nl - 1
		}
		for ; i >= 0; i-- {
			e := s.vec.Load().e
			p := seederPos(i)
			if leech {
				p = leecherPos(i)
			}
			if j := phys(len(e)/int(f), leech, i); t.stale(now, f.seenAt(e, j)) {
				if t.onExpire != nil {
					k := f.keyAt(e, j)
					t.onExpire(sw.ih, Peer{Addr: k.addrPort(f), Seeder: !leech})
				}
				s.removeLocked(t, f, p)
				removed++
			}
			if budget--; budget == 0 {
				t.yieldLocked(sw) // let waiting announces take mu before we do
				budget = sweepBatch
				ns, nl = unpack(s.cnt.Load())
				if leech {
					i = min(i, nl)
				} else {
					i = min(i, ns)
				}
			}
		}
	}
	s.shrinkLocked(t, f)
	return removed
}

// shrinkLocked gives back memory of a set that is at most a quarter full.
func (s *peerSet) shrinkLocked(t *Table, f family) {
	n := s.size()
	v := s.vec.Load()
	if v == nil {
		return
	}
	switch capacity := len(v.e) / int(f); {
	case n == 0:
		s.resizeLocked(f, 0)
	case capacity > 4 && 4*n <= capacity:
		s.resizeLocked(f, capFor(2*n))
	}
	if x := s.indexLocked(); x != nil && (n < indexOff || len(x.cells) > indexMin && 8*n < len(x.cells)) {
		s.reindexLocked(t, f)
	}
}
