package peertable

import (
	"net/netip"
	"sync/atomic"
)

// This file holds what a cache mirroring swarms between processes needs
// beyond announces: a second Table serves as the view of the other
// processes' peers (Select reads it without announcing), and the local
// Table is read whole to republish it (AppendPeers).

// lookup returns the live swarm of ih, or nil.
func (t *Table) lookup(ih *InfoHash) *swarm {
	h := t.hashIH(ih)
	s := t.shards[h&t.mask].p.Load().find(h, ih)
	if s == nil || s.dead() {
		return nil
	}
	return s
}

// Select appends up to want peers of self's family from swarm ih to dst,
// never self, only leechers when seeder is set, chosen as Announce chooses
// them, and returns dst with the swarm's counts. Unlike Announce it changes
// nothing: the tracker uses it to add peers other processes know about to
// a reply. Like Scrape it takes no lock and does not allocate once dst has
// room.
func (t *Table) Select(ih InfoHash, self netip.AddrPort, seeder bool, want int, dst []byte) ([]byte, Counts) {
	s := t.lookup(&ih)
	if s == nil {
		return dst, Counts{}
	}
	if want > 0 {
		k, f := keyOf(self)
		set := &s.v4
		if f == fam6 {
			set = s.v6.Load()
		}
		if set != nil {
			dst = t.pick(set, f, dst, want, &k, seeder)
		}
	}
	return dst, s.counts()
}

// AppendPeers appends every live peer of swarm ih, both families, to dst.
// It takes no lock, so under concurrent announces it may miss a peer that
// moves between roles while it reads, or report one twice; a mirror that
// republishes with it repeats the republish when that matters.
func (t *Table) AppendPeers(ih InfoHash, dst []Peer) []Peer {
	s := t.lookup(&ih)
	if s == nil {
		return dst
	}
	now := t.stamp()
	dst = t.appendSet(&s.v4, fam4, dst, now)
	if v6 := s.v6.Load(); v6 != nil {
		dst = t.appendSet(v6, fam6, dst, now)
	}
	return dst
}

func (t *Table) appendSet(set *peerSet, f family, dst []Peer, now uint16) []Peer {
	e, capacity, ns, nl := set.regions(f)
	for i := range ns {
		dst = appendSlot(t, f, e, i, true, now, dst)
	}
	for i := capacity - nl; i < capacity; i++ {
		dst = appendSlot(t, f, e, i, false, now, dst)
	}
	return dst
}

// appendSlot appends the peer in slot i unless it is empty, stale or, for
// IPv6, being rewritten.
func appendSlot(t *Table, f family, e []atomic.Uint64, i int, seeder bool, now uint16, dst []Peer) []Peer {
	if f == fam4 {
		w := e[i].Load()
		if w&portMask == 0 || t.stale(now, uint16(w)) {
			return dst
		}
		k := peerKey{tail: w &^ seenMask}
		return append(dst, Peer{Addr: k.addrPort(f), Seeder: seeder})
	}
	j := 3 * i
	m := e[j+2].Load()
	if m&(1<<32) != 0 {
		return dst
	}
	k := peerKey{hi: e[j].Load(), lo: e[j+1].Load(), tail: m & portMask}
	if e[j+2].Load()>>32 != m>>32 || m&portMask == 0 || t.stale(now, uint16(m)) {
		return dst
	}
	return append(dst, Peer{Addr: k.addrPort(f), Seeder: seeder})
}

// RaiseCompleted sets the completed count of swarm ih to n if it is lower.
// A mirror uses it to bring the count of other processes' completed
// downloads up to date after it missed some. An unknown swarm is left
// alone: the count arrives with its first peer.
func (t *Table) RaiseCompleted(ih InfoHash, n uint32) {
	s := t.lookup(&ih)
	if s == nil {
		return
	}
	n = min(n, deadBit-1)
	s.mu.Lock()
	if st := s.state.Load(); st&deadBit == 0 && st < n {
		s.state.Store(n)
	}
	s.mu.Unlock()
}
