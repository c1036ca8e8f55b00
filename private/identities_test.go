package private

import (
	"hash/maphash"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// TestIDTableModel runs random inserts, removals and rebuilds against a Go
// map and checks after every step that find agrees with it, that the
// counts are right and that the table never fills up. A small identity
// space makes removed identities come back, so tombstones are reused and
// probe chains run across them.
func TestIDTableModel(t *testing.T) {
	seed := maphash.MakeSeed()
	r := rand.New(rand.NewPCG(1, 2))
	var tab idTable
	model := make(map[identity]uint64)
	ident := func(n uint64) identity {
		return identity{torrent: uint32(n % 7), user: uint32(n % 5), key: uint32(n), peer: [20]byte{byte(n >> 8)}}
	}
	check := func(step int) {
		t.Helper()
		if tab.live != len(model) {
			t.Fatalf("step %d: live = %d, want %d", step, tab.live, len(model))
		}
		if len(tab.slots) > 0 && (tab.live+tab.dead)*4 > len(tab.slots)*3 {
			t.Fatalf("step %d: %d live and %d dead slots in %d: over three quarters used", step, tab.live, tab.dead, len(tab.slots))
		}
		live, dead := 0, 0
		for i := range tab.slots {
			switch tag := tab.tags[i]; {
			case tag&tagLive != 0:
				live++
				id := tab.slots[i].id
				if _, ok := model[id]; !ok {
					t.Fatalf("step %d: slot %d holds %v, which the model does not", step, i, id)
				}
				if h := hashID(seed, &id); tag != tagOf(h) {
					t.Fatalf("step %d: slot %d has tag %#x, want %#x", step, i, tag, tagOf(h))
				}
			case tag == tagDead:
				dead++
			}
		}
		if live != tab.live || dead != tab.dead {
			t.Fatalf("step %d: %d live and %d dead slots, counted as %d and %d", step, live, dead, tab.live, tab.dead)
		}
		if a := tab.arrays.Load(); len(tab.slots) > 0 && (a == nil || &a.slots[0] != &tab.slots[0] || &a.tags[0] != &tab.tags[0]) {
			t.Fatalf("step %d: the arrays published for prefetching are not the table's", step)
		}
	}
	for step := range 20000 {
		n := r.Uint64N(600)
		id := ident(n)
		h := hashID(seed, &id)
		i, found := tab.find(&id, h)
		want, inModel := model[id]
		if found != inModel {
			t.Fatalf("step %d: find(%v) found = %v, model has it: %v", step, id, found, inModel)
		}
		if found && tab.slots[i].up != want {
			t.Fatalf("step %d: slot of %v holds %d, want %d", step, id, tab.slots[i].up, want)
		}
		switch op := r.IntN(10); {
		case op < 6 && !found:
			if tab.needsRehash() {
				tab.rebuild(sizeFor(tab.live+1), seed)
				i, _ = tab.find(&id, h)
			}
			tab.insertAt(i, &id, h)
			tab.slots[i].up = n
			model[id] = n
		case op < 9 && found:
			tab.remove(i)
			delete(model, id)
		case op == 9 && tab.live > 0:
			tab.rebuild(sizeFor(tab.live), seed)
		}
		check(step)
	}
	for id, n := range model {
		i, found := tab.find(&id, hashID(seed, &id))
		if !found || tab.slots[i].up != n {
			t.Fatalf("after the run, %v found = %v", id, found)
		}
	}
}

// TestIDSlotSize pins the slot's size: the table's memory and the number
// of cache lines an Account touches depend on it.
func TestIDSlotSize(t *testing.T) {
	if got := unsafe.Sizeof(idSlot{}); got != 80 {
		t.Errorf("idSlot is %d bytes, want 80", got)
	}
	if got := unsafe.Offsetof(idSlot{}.id) + unsafe.Sizeof(identity{}); got > 36 {
		t.Errorf("find reads %d bytes of a slot, want at most 36", got)
	}
}

func TestSizeFor(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{0, minSlots}, {1, minSlots}, {32, minSlots}, {33, 128}, {64, 128}, {65, 256}, {1000, 2048},
	} {
		if got := sizeFor(tc.n); got != tc.want {
			t.Errorf("sizeFor(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}
