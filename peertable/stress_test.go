package peertable

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStress hammers a few swarms from many goroutines with announces of
// every event, sweeps, scrapes, prefetches, stats and clock ticks, then
// checks the
// invariants. In the first phase the clock stands still, so the sweep only
// unlinks swarms that stops have emptied, while announcers race to refill
// them; each announcer owns its peers and models them, and afterwards the
// table must hold exactly the modelled peers in the modelled roles: a peer
// lost to a dead swarm would show. The second phase adds a moving clock,
// so peers expire under the announcers' feet.
func TestStress(t *testing.T) {
	ops := 100000
	if raceEnabled {
		ops = 30000
	}
	if testing.Short() {
		ops /= 4
	}
	const (
		workers = 4
		swarms  = 12  // few, so that announces, stops and sweeps collide
		busy    = 4   // swarms 0-3 are busy, the others empty out often
		bigOwn  = 400 // per worker in swarm 0, which then crosses a sweep batch
	)
	// own4 and own6 are how many peers of each family a worker owns in
	// swarm sw.
	own4 := func(sw int) int { return 1 + 39*min(1, busy/(sw+1)) }
	own6 := func(sw int) int { return 10 * min(1, busy/(sw+1)) }
	t0 := time.Unix(1_800_000_000, 0)

	for _, phase := range []string{"clock=still", "clock=moving"} {
		t.Run(phase, func(t *testing.T) {
			moving := phase == "clock=moving"
			tb := newTable(t, Config{PeerLifetime: time.Minute, Swarms: 1})
			tb.Tick(t0)

			// The big swarm first, so that it exceeds a sweep batch.
			for w := range workers {
				for i := range bigOwn {
					tb.Announce(&Announce{InfoHash: hashN(0), Addr: addr4(1<<20 | w<<12 | i), Seeder: i%3 == 0}, nil)
				}
			}

			type state struct{ present, seeder bool }
			models := make([]map[netip.AddrPort]state, workers*swarms) // by worker, swarm
			var stop atomic.Bool
			var bg sync.WaitGroup
			bg.Go(func() {
				for !stop.Load() {
					tb.Sweep()
					time.Sleep(50 * time.Microsecond) // pacing, not synchronization
				}
			})
			bg.Go(func() {
				for i := 0; !stop.Load(); i++ {
					tb.Scrape(hashN(i % swarms))
					if i%64 == 0 {
						tb.Stats()
						time.Sleep(50 * time.Microsecond)
					}
				}
			})
			bg.Go(func() {
				// Prefetches of the announcers' own peers, so that they
				// follow indexes that the announces and sweeps rebuild.
				r := rand.New(rand.NewPCG(99, 1))
				reqs := make([]Prefetch, 16)
				for !stop.Load() {
					for i := range reqs {
						sw, w := r.IntN(swarms), r.IntN(workers)
						reqs[i] = Prefetch{InfoHash: hashN(sw)}
						switch r.IntN(4) {
						case 0:
							reqs[i].Addr = addr6(w<<12 | sw<<8 | r.IntN(10))
						case 1:
							reqs[i].Addr = addr4(1<<20 | w<<12 | r.IntN(bigOwn))
						case 2:
							reqs[i].Addr = addr4(w<<12 | sw<<8 | r.IntN(own4(sw)))
						}
					}
					tb.Prefetch(reqs)
				}
			})
			if moving {
				bg.Go(func() {
					for s := 0; !stop.Load(); s++ {
						tb.Tick(t0.Add(time.Duration(s) * time.Second))
						time.Sleep(100 * time.Microsecond) // pacing, not synchronization
					}
				})
			}

			var wg sync.WaitGroup
			for w := range workers {
				for sw := range swarms {
					models[w*swarms+sw] = map[netip.AddrPort]state{}
				}
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(w), 1))
					dst := make([]byte, 0, 64*PeerLenV6)
					for range ops {
						sw := r.IntN(swarms)
						var addr netip.AddrPort
						v6 := r.IntN(own4(sw)+own6(sw)) < own6(sw)
						switch {
						case v6:
							addr = addr6(w<<12 | sw<<8 | r.IntN(own6(sw)))
						case sw == 0 && r.IntN(2) == 0:
							addr = addr4(1<<20 | w<<12 | r.IntN(bigOwn))
						default:
							addr = addr4(w<<12 | sw<<8 | r.IntN(own4(sw)))
						}
						a := &Announce{
							InfoHash: hashN(sw),
							Addr:     addr,
							Event:    Event(r.IntN(4)),
							Seeder:   r.IntN(2) == 0,
							NumWant:  r.IntN(60),
						}
						if sw >= busy && r.IntN(3) == 0 {
							a.Event = EventStopped // empty the quiet swarms often
						}
						dst, _ = tb.Announce(a, dst[:0])
						for _, p := range decode(t, dst, v6) {
							if p == addr {
								t.Errorf("%v was given itself", addr)
							}
						}
						m := models[w*swarms+sw]
						if a.Event == EventStopped {
							m[addr] = state{}
						} else {
							m[addr] = state{true, a.Seeder}
						}
					}
				})
			}
			wg.Wait()
			stop.Store(true)
			bg.Wait()
			tb.Sweep() // unlink what the last concurrent sweep left dead
			checkTable(t, tb)
			if moving {
				return // expiry makes the models inexact; the invariants are what hold
			}

			for sw := range swarms {
				var ws, wl []netip.AddrPort
				for w := range workers {
					for addr, st := range models[w*swarms+sw] {
						switch {
						case !st.present:
						case st.seeder:
							ws = append(ws, addr)
						default:
							wl = append(wl, addr)
						}
					}
				}
				if sw == 0 {
					for w := range workers {
						for i := range bigOwn {
							addr := addr4(1<<20 | w<<12 | i)
							if _, touched := models[w*swarms][addr]; !touched {
								if i%3 == 0 {
									ws = append(ws, addr)
								} else {
									wl = append(wl, addr)
								}
							}
						}
					}
				}
				var gs, gl []netip.AddrPort
				for _, v6 := range []bool{false, true} {
					s, l := tb.contents(hashN(sw), v6)
					gs, gl = append(gs, s...), append(gl, l...)
				}
				cmp := func(a, b netip.AddrPort) int { return a.Compare(b) }
				for _, l := range [][]netip.AddrPort{ws, wl, gs, gl} {
					slices.SortFunc(l, cmp)
				}
				if !slices.Equal(gs, ws) || !slices.Equal(gl, wl) {
					t.Errorf("swarm %d: table has %d seeders, %d leechers; model %d, %d", sw, len(gs), len(gl), len(ws), len(wl))
				}
				c := tb.Scrape(hashN(sw))
				if int(c.Seeders) != len(ws) || int(c.Leechers) != len(wl) {
					t.Errorf("swarm %d: Scrape = %+v, model has %d seeders, %d leechers", sw, c, len(ws), len(wl))
				}
			}
		})
	}
}
