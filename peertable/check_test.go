package peertable

import (
	"fmt"
	"net/netip"
)

// check verifies the table's invariants and returns the first violation.
// It takes each swarm's lock, so it may run beside announces, but it
// expects no Sweep to be running (a dead swarm still linked is only
// legitimate until the sweep's purge).
//
//   - each swarm sits in the shard and bucket its info hash selects, once;
//   - a dead swarm is empty and no longer linked;
//   - a set's counts fit its array, every admitted slot holds a peer
//     (nonzero port), an IPv6 slot is not mid-write and holds no
//     IPv4-mapped address, and no peer appears twice in its family;
//   - a key index, when present, finds every peer at its position and
//     holds nothing else.
func (t *Table) check() error {
	seen := make(map[InfoHash]bool)
	for i := range t.shards {
		b := t.shards[i].p.Load()
		if n := len(b.s); n&(n-1) != 0 {
			return fmt.Errorf("shard %d: bucket size %d is not a power of two", i, n)
		}
		for _, s := range b.s {
			if s == nil {
				continue
			}
			h := t.hashIH(&s.ih)
			if h&t.mask != uint64(i) {
				return fmt.Errorf("swarm %x in shard %d, want %d", s.ih, i, h&t.mask)
			}
			if b.find(h, &s.ih) != s {
				return fmt.Errorf("swarm %x: bucket lookup does not find it", s.ih)
			}
			if seen[s.ih] {
				return fmt.Errorf("swarm %x linked twice", s.ih)
			}
			seen[s.ih] = true
			if err := t.checkSwarm(s); err != nil {
				return fmt.Errorf("swarm %x: %v", s.ih, err)
			}
		}
	}
	return nil
}

func (t *Table) checkSwarm(s *swarm) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dead() {
		return fmt.Errorf("dead but linked")
	}
	if err := t.checkSet(&s.v4, fam4); err != nil {
		return fmt.Errorf("IPv4: %v", err)
	}
	if v6 := s.v6.Load(); v6 != nil {
		if err := t.checkSet(v6, fam6); err != nil {
			return fmt.Errorf("IPv6: %v", err)
		}
	}
	return nil
}

func (t *Table) checkSet(set *peerSet, f family) error {
	ns, nl := unpack(set.cnt.Load())
	v := set.vec.Load()
	if v == nil {
		if ns+nl != 0 {
			return fmt.Errorf("counts %d+%d without an array", ns, nl)
		}
		return nil
	}
	if len(v.e)%int(f) != 0 {
		return fmt.Errorf("array of %d words for %d-word slots", len(v.e), f)
	}
	capacity := len(v.e) / int(f)
	if ns+nl > capacity {
		return fmt.Errorf("counts %d+%d exceed capacity %d", ns, nl, capacity)
	}
	keys := make(map[peerKey]position, ns+nl)
	for _, r := range [2]struct {
		leech bool
		n     int
	}{{false, ns}, {true, nl}} {
		for i := range r.n {
			j := phys(capacity, r.leech, i)
			tail := v.e[j*int(f)+int(f)-1].Load()
			if tail&portMask == 0 {
				return fmt.Errorf("slot %d admitted by the counts is empty", j)
			}
			if f == fam6 {
				if tail>>32&1 != 0 {
					return fmt.Errorf("slot %d left mid-write (odd seq)", j)
				}
				var b [16]byte
				k := f.keyAt(v.e, j)
				for n := range 8 {
					b[n], b[8+n] = byte(k.hi>>(56-8*n)), byte(k.lo>>(56-8*n))
				}
				if netip.AddrFrom16(b).Is4In6() {
					return fmt.Errorf("slot %d holds an IPv4-mapped address", j)
				}
			}
			k := f.keyAt(v.e, j)
			p := seederPos(i)
			if r.leech {
				p = leecherPos(i)
			}
			if q, dup := keys[k]; dup {
				return fmt.Errorf("peer %v at positions %d and %d", k, q, p)
			}
			keys[k] = p
		}
	}
	if x := set.indexLocked(); x != nil {
		if x.live != ns+nl {
			return fmt.Errorf("index holds %d positions for %d peers", x.live, ns+nl)
		}
		for k, p := range keys {
			if got := set.findLocked(t, f, &k); got != p {
				return fmt.Errorf("index finds %v at %d, want %d", k, got, p)
			}
		}
	} else if ns+nl > indexOn {
		return fmt.Errorf("%d peers without an index", ns+nl)
	}
	return nil
}

// contents returns the peers of swarm ih in family of addr, by role.
func (t *Table) contents(ih InfoHash, v6 bool) (seeders, leechers []netip.AddrPort) {
	h := t.hashIH(&ih)
	s := t.shards[h&t.mask].p.Load().find(h, &ih)
	if s == nil {
		return nil, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	set, f := &s.v4, fam4
	if v6 {
		set, f = s.v6.Load(), fam6
		if set == nil {
			return nil, nil
		}
	}
	ns, nl := unpack(set.cnt.Load())
	if ns+nl == 0 {
		return nil, nil
	}
	e := set.vec.Load().e
	capacity := len(e) / int(f)
	addr := func(j int) netip.AddrPort {
		k := f.keyAt(e, j)
		port := uint16(k.tail >> 16)
		if f == fam4 {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(k.tail >> 56), byte(k.tail >> 48), byte(k.tail >> 40), byte(k.tail >> 32)}), port)
		}
		var b [16]byte
		for n := range 8 {
			b[n], b[8+n] = byte(k.hi>>(56-8*n)), byte(k.lo>>(56-8*n))
		}
		return netip.AddrPortFrom(netip.AddrFrom16(b), port)
	}
	for i := range ns {
		seeders = append(seeders, addr(i))
	}
	for i := range nl {
		leechers = append(leechers, addr(capacity-1-i))
	}
	return seeders, leechers
}
