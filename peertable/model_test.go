package peertable

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// TestAgainstModel plays random announces, ticks and sweeps on one
// goroutine against a plain model of the semantics and compares counts,
// contents and every answer's peers after each step.
func TestAgainstModel(t *testing.T) {
	steps := 20000
	if testing.Short() || raceEnabled {
		steps = 5000
	}
	for seed := range uint64(3) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			playModel(t, seed, steps)
		})
	}
}

func playModel(t *testing.T, seed uint64, steps int) {
	const (
		life   = time.Minute
		swarms = 5
		pool   = 60 // peers per family: enough to cross indexOn
	)
	type peer struct {
		seeder bool
		seen   time.Time
	}
	type mswarm struct {
		peers     map[netip.AddrPort]peer
		completed uint32
	}
	tb := newTable(t, Config{PeerLifetime: life})
	now := time.Unix(1_900_000_000, 0)
	tb.Tick(now)
	model := map[InfoHash]*mswarm{}
	fresh := func(p peer) bool { return now.Sub(p.seen) <= life }
	// period numbers a time as the table's refresh periods do: by the
	// 16-bit stamp of whole seconds (the unit at this lifetime).
	period := func(at time.Time) uint16 { return uint16(at.Unix()) / uint16(life/4/time.Second) }
	r := rand.New(rand.NewPCG(seed, 2))

	for step := range steps {
		switch op := r.IntN(100); {
		case op < 3:
			now = now.Add(time.Duration(r.IntN(40)) * time.Second)
			tb.Tick(now)
			continue
		case op < 5:
			want := 0
			for ih, s := range model {
				for addr, p := range s.peers {
					if !fresh(p) {
						delete(s.peers, addr)
						want++
					}
				}
				if len(s.peers) == 0 {
					delete(model, ih)
				}
			}
			if got := tb.Sweep(); got != want {
				t.Fatalf("step %d: Sweep removed %d, model %d", step, got, want)
			}
			continue
		}

		ih := hashN(r.IntN(swarms))
		v6 := r.IntN(3) == 0
		addr := addr4(r.IntN(pool))
		if v6 {
			addr = addr6(r.IntN(pool))
		}
		a := &Announce{
			InfoHash: ih, Addr: addr, Event: Event(r.IntN(4)), Seeder: r.IntN(3) == 0,
			NumWant: r.IntN(30) - 2,
		}
		dst, res := tb.Announce(a, nil)

		// The model's view of the same announce.
		s := model[ih]
		var want Result
		if s == nil && a.Event != EventStopped {
			s = &mswarm{peers: map[netip.AddrPort]peer{}}
			model[ih] = s
		}
		if s != nil {
			old, found := s.peers[addr]
			switch {
			case a.Event == EventStopped && found:
				want.Change = ChangeRemoved
			case a.Event == EventStopped:
			case !found:
				want.Change = ChangeAdded
			case old.seeder != a.Seeder:
				want.Change = ChangeRole
			case period(old.seen) != period(now):
				want.Change = ChangeRefresh
			}
			if a.Event == EventStopped {
				delete(s.peers, addr)
			} else {
				if a.Event == EventCompleted && !(found && old.seeder) {
					s.completed++
					want.Completed = true
				}
				s.peers[addr] = peer{a.Seeder, now}
			}
			for _, p := range s.peers {
				if p.seeder {
					want.Counts.Seeders++
				} else {
					want.Counts.Leechers++
				}
			}
			want.Counts.Completed = s.completed
		}
		if res != want {
			t.Fatalf("step %d: Announce(%+v) = %+v, model %+v", step, a, res, want)
		}

		// The answer: distinct, fresh, of the family, not self, leechers
		// only for a seeder, and as many as asked or available.
		got := decode(t, dst, v6)
		eligible := 0
		if s != nil {
			for p, st := range s.peers {
				if p != addr && p.Addr().Is4() != v6 && fresh(st) && !(a.Seeder && st.seeder) {
					eligible++
				}
			}
		}
		if len(got) != min(max(a.NumWant, 0), eligible) {
			t.Fatalf("step %d: %d peers for NumWant %d, model has %d eligible", step, len(got), a.NumWant, eligible)
		}
		dup := map[netip.AddrPort]bool{}
		for _, p := range got {
			st, ok := s.peers[p]
			switch {
			case !ok || p == addr || dup[p] || !fresh(st):
				t.Fatalf("step %d: answer %v: in model %v, self %v, twice %v", step, p, ok, p == addr, dup[p])
			case a.Seeder && st.seeder:
				t.Fatalf("step %d: seeder %v given seeder %v", step, addr, p)
			}
			dup[p] = true
		}
		if step%500 == 0 {
			checkTable(t, tb)
			for ih, s := range model {
				for _, v6 := range []bool{false, true} {
					ss, ll := tb.contents(ih, v6)
					n := 0
					for addr := range s.peers {
						if addr.Addr().Is4() != v6 {
							n++
						}
					}
					if len(ss)+len(ll) != n {
						t.Fatalf("step %d: swarm %x v6=%v holds %d peers, model %d", step, ih[:2], v6, len(ss)+len(ll), n)
					}
				}
			}
			if st := tb.Stats(); st.Swarms != len(model) {
				t.Fatalf("step %d: %d swarms, model %d", step, st.Swarms, len(model))
			}
		}
	}
}
