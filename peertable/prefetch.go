package peertable

import (
	"net/netip"
	"sync/atomic"
	"unsafe"

	"github.com/chihaya/chihaya/internal/prefetch"
)

// A Prefetch names the swarm, and the peer, of a request that a caller is
// about to pass to Announce or Scrape. Table.Prefetch reads what those
// calls will read first, for a whole batch of requests at a time.
//
// The unexported fields are Prefetch's scratch space: a caller keeps one
// slice of Prefetch values and reuses it, so that prefetching a batch
// allocates nothing.
type Prefetch struct {
	InfoHash InfoHash
	// Addr is the announcing peer's address and port (unmapped), or the
	// zero AddrPort for a scrape, which reads only the swarm.
	Addr netip.AddrPort

	h     uint64
	b     *bucket
	s     *swarm
	f     family
	hk    uint64 // the hash of the peer's key, for the index
	e     []atomic.Uint64
	cells []atomic.Int32
	p     position
}

// Prefetch reads, for each request of reqs, the memory that its Announce
// or Scrape will read first: the swarm, and for an announce the index
// cell and the slot that hold the peer's entry. It changes nothing and
// returns nothing; its only effect is that of the reads on the CPU's
// caches.
//
// On a table larger than the caches, each announce misses the cache on a
// chain of dependent loads (shard, swarm, index cell, slot), and alone it
// has to wait for each before it can issue the next. Prefetch walks the
// chains of a whole batch in stages, one hop of every request per stage,
// so that the misses of different requests are in flight together. A
// caller that holds several requests at once (a UDP worker's batch) calls
// it before answering them. Requests whose swarm or peer does not exist
// yet cost a hash and a probe.
//
// Prefetch takes no lock. What it reads may change before the request
// runs; that makes a prefetch useless, never wrong, since the requests
// themselves read everything again.
func (t *Table) Prefetch(reqs []Prefetch) {
	for i := range reqs { // the shard's bucket (hashing only; the shard array is small)
		r := &reqs[i]
		r.h = t.hashIH(&r.InfoHash)
		r.b = t.shards[r.h&t.mask].p.Load()
	}
	for i := range reqs { // the swarm
		r := &reqs[i]
		r.s = r.b.find(r.h, &r.InfoHash)
	}
	for i := range reqs { // the set's slot array and index, from the swarm's line
		r := &reqs[i]
		r.e, r.cells = nil, nil
		if r.s == nil || !r.Addr.IsValid() {
			continue
		}
		k, f := keyOf(r.Addr)
		set := &r.s.v4
		if f == fam6 {
			if set = r.s.v6.Load(); set == nil {
				continue
			}
		}
		v := set.vec.Load()
		if v == nil {
			continue
		}
		r.f, r.e = f, v.e
		if x := set.idx.Load(); x != nil {
			r.cells, r.hk = x.cells, t.hashKey(&k)
		}
	}
	for i := range reqs { // the index cell, or the two ends a small set's scan starts at
		r := &reqs[i]
		r.p = 0
		switch {
		case r.cells != nil:
			r.p = position(r.cells[homeIn(r.hk, len(r.cells))].Load())
		case r.e != nil:
			prefetch.Line(unsafe.Pointer(&r.e[0]))          // seeders
			prefetch.Line(unsafe.Pointer(&r.e[len(r.e)-1])) // leechers
		}
	}
	for i := range reqs { // the slot the index cell names
		r := &reqs[i]
		if r.p == 0 || r.p == tomb {
			continue
		}
		leech, k := r.p.split()
		if capacity := len(r.e) / int(r.f); k < capacity {
			prefetch.Line(unsafe.Pointer(&r.e[phys(capacity, leech, k)*int(r.f)]))
		}
	}
}
