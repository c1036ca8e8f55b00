package peertable

import (
	"math/bits"
	"sync/atomic"
)

// A position names a peer's slot by role, not by address in the slot
// array, so that growing or shrinking the array (which moves the leecher
// region) leaves every position valid: seeder k is k+1, leecher k is
// -(k+1), where k counts from the start of the role's region. Zero is no
// position.
type position int32

func seederPos(k int) position  { return position(k + 1) }
func leecherPos(k int) position { return position(-(k + 1)) }

// split returns the role and the index within the role's region.
func (p position) split() (leech bool, k int) {
	if p < 0 {
		return true, int(-p) - 1
	}
	return false, int(p) - 1
}

// tomb marks an index cell whose position was removed. Lookups probe past
// it; inserts may reuse it.
const tomb = position(-1 << 31)

// indexMin is the smallest index size, and indexOn/indexOff the family
// sizes at which a set starts and stops keeping an index. Below indexOn a
// linear scan of at most indexOn 8-byte words is as fast as hashing; the
// gap between the two avoids rebuilding the index for a set that hovers
// around the threshold.
const (
	indexMin = 64
	indexOn  = 32
	indexOff = 16
)

// An index maps a peer's key to its position in a large set so that the
// writer finds its own entry without scanning. It is pointer-free (int32
// cells). Only the holder of the swarm's lock changes it or relies on what
// it reads; the cells are atomic so that Prefetch may read them without
// the lock, as a hint of which slot the writer will want. Keys are not
// stored; a candidate position is confirmed by comparing the entry it
// names, so a cell costs four bytes.
type index struct {
	cells []atomic.Int32 // positions; power-of-two length, linear probing
	used  int            // cells that are not empty, tombstones included
	live  int
}

// newIndex returns an index with room for n positions at load <= 1/2.
func newIndex(n int) *index {
	size := indexMin
	for size < 2*n {
		size *= 2
	}
	return &index{cells: make([]atomic.Int32, size)}
}

// full reports whether one more insert would push the index past 3/4 load,
// counting tombstones, after which the caller rebuilds it.
func (x *index) full() bool { return 4*(x.used+1) > 3*len(x.cells) }

func (x *index) home(h uint64) int { return homeIn(h, len(x.cells)) }

// homeIn is where the probe for h starts among n cells (a power of two).
// The high bits of the seeded mix are the best mixed.
func homeIn(h uint64, n int) int { return int(h >> (64 - bits.TrailingZeros(uint(n)))) }

// find returns the position whose entry matches, probing from h.
func (x *index) find(h uint64, match func(position) bool) position {
	mask := len(x.cells) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		switch p := position(x.cells[i].Load()); p {
		case 0:
			return 0
		case tomb:
		default:
			if match(p) {
				return p
			}
		}
	}
}

// insert adds p under h. The caller knows the key is absent and checked
// full first.
func (x *index) insert(h uint64, p position) {
	mask := len(x.cells) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		switch position(x.cells[i].Load()) {
		case 0:
			x.used++
			fallthrough
		case tomb:
			x.cells[i].Store(int32(p))
			x.live++
			return
		}
	}
}

// move replaces position from, stored under h, with to.
func (x *index) move(h uint64, from, to position) {
	mask := len(x.cells) - 1
	for i := x.home(h); ; i = (i + 1) & mask {
		if position(x.cells[i].Load()) == from {
			x.cells[i].Store(int32(to))
			return
		}
	}
}

// remove deletes position p, stored under h.
func (x *index) remove(h uint64, p position) {
	x.move(h, p, tomb)
	x.live--
}

// mix is the keyed hash of peer keys: the folded 128-bit product of the
// key with secret per-table words. Peers choose their addresses and ports,
// so an unkeyed hash would let one fill a probe chain on purpose.
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}
