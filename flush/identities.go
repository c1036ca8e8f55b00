package flush

import (
	"hash/maphash"
	"math/bits"
)

// An idTable holds one shard's identities. It is an open-addressing hash
// table with linear probing whose 80-byte slots hold everything accounting
// keeps for an identity: its key, its baseline and its credit not yet
// frozen. At a million identities nearly every Account misses the cache;
// a Go map of entries would miss twice (its control word, then the slot)
// and hash twice (a lookup, then the write back), where a hit here costs
// the one or two lines of its slot. It also takes less memory: at a
// million identities 168 bytes each, against 201 for the map it replaced
// (heap-B/identity of BenchmarkAccountMany).
//
// A deleted slot becomes a tombstone until the next rehash, which insert
// does when the table would be more than three quarters used and expire
// does when it is mostly empty.
//
// The zero idTable is empty and ready to use. It is not safe for
// concurrent use: its shard's lock guards it.
type idTable struct {
	slots []idSlot // len 0 or a power of two
	live  int      // slots in use
	dead  int      // tombstones
	moves uint64   // rebuilds so far, so a walk can tell that slots moved
}

// idSlot is one identity and what accounting keeps for it, laid out so
// that find reads its first 36 bytes. It holds no pointers, so the table
// costs the garbage collector nothing to scan.
type idSlot struct {
	state    slotState
	hasBase  bool // up, down, seen and snatched are the identity's baseline
	snatched bool // a snatch was counted for this baseline's session
	id       identity

	// The baseline: what the identity last reported.
	seen     uint32 // coarse clock, Unix seconds (fits until 2106)
	up, down uint64

	// The credit not yet frozen into a batch.
	creditUp, creditDown uint64
	completedAt          uint32 // Unix seconds of the last snatch not yet frozen
	snatches             uint32 // snatches not yet frozen
}

// credited reports whether s holds credit not yet frozen.
func (s *idSlot) credited() bool {
	return s.creditUp != 0 || s.creditDown != 0 || s.snatches != 0
}

// baseline returns s's baseline in the form step takes.
func (s *idSlot) baseline() baseline {
	return baseline{up: s.up, down: s.down, seen: s.seen, snatched: s.snatched}
}

// setBaseline makes b the identity's baseline.
func (s *idSlot) setBaseline(b baseline) {
	s.up, s.down, s.seen, s.snatched, s.hasBase = b.up, b.down, b.seen, b.snatched, true
}

// clearBaseline forgets the identity's baseline, keeping its credit.
func (s *idSlot) clearBaseline() {
	s.up, s.down, s.seen, s.snatched, s.hasBase = 0, 0, 0, false, false
}

type slotState uint8

const (
	slotEmpty slotState = iota
	slotLive
	slotDead // a tombstone: deleted, but probes go on past it
)

// minSlots is the smallest table allocated: 5 KiB a shard.
const minSlots = 64

// find returns the position of id's slot and true, or, if id is not in
// the table, the position where insert should put it and false. h is
// hashID(id). The table must not be full; it never is, since insert keeps
// it at most three quarters used.
func (t *idTable) find(id *identity, h uint64) (int, bool) {
	if len(t.slots) == 0 {
		return -1, false
	}
	mask := len(t.slots) - 1
	free := -1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		switch s.state {
		case slotEmpty:
			if free < 0 {
				free = i
			}
			return free, false
		case slotDead:
			if free < 0 {
				free = i
			}
		default:
			if s.id == *id {
				return i, true
			}
		}
	}
}

// needsRehash reports whether one more identity would take the table
// past three quarters used, tombstones included.
func (t *idTable) needsRehash() bool {
	return (t.live+t.dead+1)*4 > len(t.slots)*3
}

// insertAt puts id in the free slot at i, which find returned, and
// returns i. The caller must have checked needsRehash first.
func (t *idTable) insertAt(i int, id *identity) int {
	s := &t.slots[i]
	if s.state == slotDead {
		t.dead--
	}
	*s = idSlot{id: *id, state: slotLive}
	t.live++
	return i
}

// remove deletes the identity at i.
func (t *idTable) remove(i int) {
	t.slots[i] = idSlot{state: slotDead}
	t.live--
	t.dead++
}

// sizeFor returns the table size for n identities: at most half used
// after a rehash, so that a table grows by doubling and is not rehashed
// again for a while.
func sizeFor(n int) int {
	if n*2 <= minSlots {
		return minSlots
	}
	return 1 << bits.Len(uint(n*2-1))
}

// rebuild moves every live slot into a new table of size slots, which
// must be a power of two greater than live, dropping the tombstones.
func (t *idTable) rebuild(size int, seed maphash.Seed) {
	old := t.slots
	t.slots = make([]idSlot, size)
	t.dead = 0
	t.moves++
	mask := size - 1
	for j := range old {
		o := &old[j]
		if o.state != slotLive {
			continue
		}
		i := int(hashID(seed, &o.id)) & mask
		for t.slots[i].state != slotEmpty {
			i = (i + 1) & mask
		}
		t.slots[i] = *o
	}
}

// hashID hashes an identity with the Accountant's random seed, so that
// clients cannot choose peer ids that collide.
func hashID(seed maphash.Seed, id *identity) uint64 {
	return maphash.Comparable(seed, *id)
}
