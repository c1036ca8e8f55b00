package private

import (
	"hash/maphash"
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/chihaya/chihaya/internal/prefetch"
)

// An idTable holds one shard's identities. It is an open-addressing hash
// table with linear probing whose 80-byte slots hold everything accounting
// keeps for an identity: its key, its baseline and its credit not yet
// frozen. At a million identities nearly every Account misses the cache;
// a Go map of entries would miss twice (its control word, then the slot)
// and hash twice (a lookup, then the write back). Here a probe runs over
// a byte per slot (tags, 64 to a cache line) and reads a slot only when
// its tag matches 7 bits of the hash: a hit costs a line of tags and the
// line or two of its slot, and a miss (a new identity) a line of tags,
// where probing the slots themselves would read a line for every slot
// passed. It also takes less memory: at a million identities about 170
// bytes each, against 201 for the map it replaced (heap-B/identity of
// BenchmarkAccountMany).
//
// A deleted slot becomes a tombstone until the next rehash, which insert
// does when the table would be more than three quarters used and expire
// does when it is mostly empty.
//
// The zero idTable is empty and ready to use. It is not safe for
// concurrent use: its shard's lock guards it.
type idTable struct {
	slots []idSlot // len 0 or a power of two
	tags  []uint8  // per slot: tagEmpty, tagDead, or tagLive and 7 bits of its hash
	live  int      // slots in use
	dead  int      // tombstones
	moves uint64   // rebuilds so far, so a walk can tell that slots moved

	// arrays is slots and tags as of the last rebuild, published for
	// prefetchHome, which runs without the shard's lock. Only rebuild
	// stores it.
	arrays atomic.Pointer[idArrays]
}

type idArrays struct {
	slots []idSlot
	tags  []uint8
}

// idSlot is one identity and what accounting keeps for it, laid out so
// that find reads its first 36 bytes. It holds no pointers, so the table
// costs the garbage collector nothing to scan.
type idSlot struct {
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

// A slot's tag. A live slot's tag is tagLive with the top 7 bits of its
// identity's hash in the low bits, so a probe compares the key of about
// one slot in 128 that it passes.
const (
	tagEmpty = 0
	tagDead  = 1 // a tombstone: deleted, but probes go on past it
	tagLive  = 0x80
)

func tagOf(h uint64) uint8 { return tagLive | uint8(h>>57) }

// isLive reports whether slot i holds an identity.
func (t *idTable) isLive(i int) bool { return t.tags[i]&tagLive != 0 }

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
	mask := len(t.tags) - 1
	free := -1
	tag := tagOf(h)
	for i := int(h) & mask; ; i = (i + 1) & mask {
		switch t.tags[i] {
		case tagEmpty:
			if free < 0 {
				free = i
			}
			return free, false
		case tagDead:
			if free < 0 {
				free = i
			}
		case tag:
			if t.slots[i].id == *id {
				return i, true
			}
		}
	}
}

// prefetchHome starts loading the tag and the slot where the probe for
// hash h begins, without the shard's lock: the arrays it reads may be
// replaced meanwhile, which makes the prefetch useless, not wrong.
func (t *idTable) prefetchHome(h uint64) {
	a := t.arrays.Load()
	if a == nil {
		return
	}
	i := int(h) & (len(a.tags) - 1)
	prefetch.Line(unsafe.Pointer(&a.tags[i]))
	s := unsafe.Pointer(&a.slots[i])
	prefetch.Line(s)
	prefetch.Line(unsafe.Add(s, unsafe.Sizeof(idSlot{})-1)) // a slot may straddle two lines
}

// needsRehash reports whether one more identity would take the table
// past three quarters used, tombstones included.
func (t *idTable) needsRehash() bool {
	return (t.live+t.dead+1)*4 > len(t.slots)*3
}

// insertAt puts id, whose hash is h, in the free slot at i, which find
// returned, and returns i. The caller must have checked needsRehash first.
func (t *idTable) insertAt(i int, id *identity, h uint64) int {
	if t.tags[i] == tagDead {
		t.dead--
	}
	t.slots[i] = idSlot{id: *id}
	t.tags[i] = tagOf(h)
	t.live++
	return i
}

// remove deletes the identity at i.
func (t *idTable) remove(i int) {
	t.slots[i] = idSlot{}
	t.tags[i] = tagDead
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
	old, oldTags := t.slots, t.tags
	t.slots, t.tags = make([]idSlot, size), make([]uint8, size)
	t.dead = 0
	t.moves++
	mask := size - 1
	for j := range old {
		if oldTags[j]&tagLive == 0 {
			continue
		}
		o := &old[j]
		h := hashID(seed, &o.id)
		i := int(h) & mask
		for t.tags[i] != tagEmpty {
			i = (i + 1) & mask
		}
		t.slots[i], t.tags[i] = *o, tagOf(h)
	}
	t.arrays.Store(&idArrays{t.slots, t.tags})
}

// hashID hashes an identity with the Accountant's random seed, so that
// clients cannot choose peer ids that collide.
func hashID(seed maphash.Seed, id *identity) uint64 {
	return maphash.Comparable(seed, *id)
}
