package peertable

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// refTable is the reference the lock-free Table must beat: the plain
// design, N shards each with a sync.RWMutex over a map of swarms, each
// swarm a map of peers per family. Announce holds the shard's write lock
// for the update and the pick; Scrape takes the read lock. It stores
// pointer-free keys, keeps counts, pads shards to a cache line and picks
// peers by map iteration (which starts at a random place), so it is a
// fair opponent, not a straw man.
type refTable struct {
	seed   maphash.Seed
	now    atomic.Int64
	shards [refShards]refShard
}

const refShards = 1024

type refShard struct {
	mu sync.RWMutex
	m  map[InfoHash]*refSwarm
	_  [64 - 24 - 8]byte
}

type refKey struct {
	addr [16]byte // IPv4 in the first 4 bytes
	port uint16
}

type refPeer struct {
	seeder bool
	seen   int64
}

type refSwarm struct {
	peers                        [2]map[refKey]refPeer // IPv4, IPv6
	seeders, leechers, completed uint32
}

func newRefTable() *refTable {
	t := &refTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[InfoHash]*refSwarm)
	}
	t.now.Store(time.Now().Unix())
	return t
}

func (t *refTable) shard(ih *InfoHash) *refShard {
	return &t.shards[maphash.Bytes(t.seed, ih[:])%refShards]
}

func (t *refTable) Announce(a *Announce, dst []byte) ([]byte, Result) {
	var k refKey
	fam := 0
	if a.Addr.Addr().Is4() {
		b := a.Addr.Addr().As4()
		copy(k.addr[:], b[:])
	} else {
		fam, k.addr = 1, a.Addr.Addr().As16()
	}
	k.port = a.Addr.Port()
	sh := t.shard(&a.InfoHash)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[a.InfoHash]
	if s == nil {
		if a.Event == EventStopped {
			return dst, Result{}
		}
		s = &refSwarm{peers: [2]map[refKey]refPeer{make(map[refKey]refPeer), make(map[refKey]refPeer)}}
		sh.m[a.InfoHash] = s
	}
	var res Result
	old, found := s.peers[fam][k]
	if found {
		if old.seeder {
			s.seeders--
		} else {
			s.leechers--
		}
	}
	if a.Event == EventStopped {
		delete(s.peers[fam], k)
	} else {
		if a.Event == EventCompleted && !(found && old.seeder) {
			s.completed++
		}
		s.peers[fam][k] = refPeer{seeder: a.Seeder, seen: t.now.Load()}
		if a.Seeder {
			s.seeders++
		} else {
			s.leechers++
		}
	}
	res.Counts = Counts{Seeders: s.seeders, Leechers: s.leechers, Completed: s.completed}
	n := 0
	for pk, p := range s.peers[fam] {
		if n >= a.NumWant {
			break
		}
		if pk == k || (a.Seeder && p.seeder) {
			continue
		}
		if fam == 0 {
			dst = append(dst, pk.addr[:4]...)
		} else {
			dst = append(dst, pk.addr[:]...)
		}
		dst = binary.BigEndian.AppendUint16(dst, pk.port)
		n++
	}
	return dst, res
}

func (t *refTable) Scrape(ih InfoHash) Counts {
	sh := t.shard(&ih)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if s := sh.m[ih]; s != nil {
		return Counts{Seeders: s.seeders, Leechers: s.leechers, Completed: s.completed}
	}
	return Counts{}
}

// announcer is what the mixed workload drives.
type announcer interface {
	Announce(a *Announce, dst []byte) ([]byte, Result)
	Scrape(ih InfoHash) Counts
}

// The mixed workload: mixSwarms swarms whose popularity follows a Zipf
// law, the most popular with mixTopPeers peers and the tail with 2, a
// fifth of peers on IPv6. An operation is a scrape (5%), a stop (5%), a
// start (5%), a completion (5%) or a plain re-announce (80%) asking for 50
// peers; stopped peers come back, so the population stays steady.
const (
	mixSwarms   = 100_000
	mixTopPeers = 20_000
)

func mixPool(z int) int { return max(2, mixTopPeers/(z+1)) }

func mixAddr(z, k int) netip.AddrPort {
	if k%5 == 4 {
		b := [16]byte{0x20, 0x01, 0x0d, 0xb8, 8: byte(z >> 16), 9: byte(z >> 8), 10: byte(z), 14: byte(k >> 8), 15: byte(k)}
		return netip.AddrPortFrom(netip.AddrFrom16(b), 6881)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(z >> 9), byte(z >> 1), byte(z<<7) | byte(k>>8), byte(k)}), uint16(6881+k%7))
}

func fillMixed(tb announcer) {
	a := &Announce{Event: EventStarted}
	for z := range mixSwarms {
		binary.BigEndian.PutUint64(a.InfoHash[:], uint64(z))
		for k := range mixPool(z) {
			a.Addr, a.Seeder = mixAddr(z, k), k%4 == 0
			tb.Announce(a, nil)
		}
	}
}

func BenchmarkMixed(b *testing.B) {
	impls := []struct {
		name string
		new  func() announcer
	}{
		{"lockfree", func() announcer { return newTable(b, Config{Swarms: mixSwarms}) }},
		{"rwmutex", func() announcer { return newRefTable() }},
	}
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			tb := impl.new()
			fillMixed(tb)
			var seed atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(seed.Add(1), 7))
				zipf := rand.NewZipf(r, 1.1, 1, mixSwarms-1)
				dst := make([]byte, 0, 50*PeerLenV6)
				a := &Announce{}
				for pb.Next() {
					z := int(zipf.Uint64())
					binary.BigEndian.PutUint64(a.InfoHash[:], uint64(z))
					op := r.IntN(100)
					if op < 5 {
						tb.Scrape(a.InfoHash)
						continue
					}
					k := r.IntN(mixPool(z))
					a.Addr, a.Seeder, a.NumWant, a.Event = mixAddr(z, k), k%4 == 0, 50, EventNone
					switch {
					case op < 10:
						a.Event, a.NumWant = EventStopped, 0
					case op < 15:
						a.Event = EventStarted
					case op < 20:
						a.Event, a.Seeder = EventCompleted, true
					}
					dst, _ = tb.Announce(a, dst[:0])
				}
			})
		})
	}
}

func BenchmarkAnnounce(b *testing.B) {
	for _, fam := range []string{"v4", "v6"} {
		for _, n := range []int{10, 1_000, 100_000} {
			b.Run(fmt.Sprintf("family=%s/peers=%d", fam, n), func(b *testing.B) {
				tb, a := newSwarm(b, Config{}, fam == "v6", n) // filled before timing starts
				dst := make([]byte, 0, 50*PeerLenV6)
				b.ReportAllocs()
				for b.Loop() {
					dst, _ = tb.Announce(a, dst[:0])
				}
			})
		}
	}
}

// BenchmarkHotSwarm is the worst case for per-swarm locking: every
// goroutine re-announces peers of one swarm of 10,000 and asks for 50.
func BenchmarkHotSwarm(b *testing.B) {
	const n = 10_000
	impls := []struct {
		name string
		new  func() announcer
	}{
		{"lockfree", func() announcer { return newTable(b, Config{}) }},
		{"rwmutex", func() announcer { return newRefTable() }},
	}
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			tb := impl.new()
			ih := hashN(1)
			for i := range n {
				tb.Announce(&Announce{InfoHash: ih, Addr: addr4(i), Seeder: i%4 == 0}, nil)
			}
			var seed atomic.Uint64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(seed.Add(1), 3))
				dst := make([]byte, 0, 50*PeerLenV4)
				a := &Announce{InfoHash: ih, NumWant: 50}
				for pb.Next() {
					i := r.IntN(n)
					a.Addr, a.Seeder = addr4(i), i%4 == 0
					dst, _ = tb.Announce(a, dst[:0])
				}
			})
		})
	}
}

// BenchmarkSweep sweeps one large swarm in which nothing has expired: the
// cost every sweep pays per live peer.
func BenchmarkSweep(b *testing.B) {
	for _, n := range []int{100_000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			tb, _ := newSwarm(b, Config{}, false, n)
			b.ReportAllocs()
			for b.Loop() {
				if got := tb.Sweep(); got != 0 {
					b.Fatalf("Sweep removed %d fresh peers", got)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/peer")
		})
	}
}

// BenchmarkMemory reports the heap each implementation holds per peer with
// 1,000,000 IPv4 peers spread at random over 100,000 swarms (10 on
// average). Run it alone, with -benchtime=1x: it builds the whole table
// per iteration.
func BenchmarkMemory(b *testing.B) {
	if testing.Short() {
		b.Skip("builds tables of a million peers")
	}
	const peers, swarms = 1_000_000, 100_000
	impls := []struct {
		name string
		new  func() announcer
	}{
		{"lockfree", func() announcer { return newTable(b, Config{Swarms: swarms}) }},
		{"rwmutex", func() announcer { return newRefTable() }},
	}
	for _, impl := range impls {
		b.Run("impl="+impl.name, func(b *testing.B) {
			var heap, inuse float64
			for b.Loop() {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				tb := impl.new()
				r := rand.New(rand.NewPCG(1, 2))
				a := &Announce{}
				for i := range peers {
					binary.BigEndian.PutUint64(a.InfoHash[:], r.Uint64N(swarms))
					a.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), 6881)
					a.Seeder = i%4 == 0
					tb.Announce(a, nil)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				runtime.KeepAlive(tb)
				heap = float64(after.HeapAlloc-before.HeapAlloc) / peers
				inuse = float64(after.HeapInuse-before.HeapInuse) / peers
			}
			b.ReportMetric(heap, "bytes/peer")
			b.ReportMetric(inuse, "inuse-bytes/peer")
		})
	}
}

// BenchmarkRange walks every swarm of a table, as a full scrape does.
func BenchmarkRange(b *testing.B) {
	for _, n := range []int{100_000} {
		b.Run(fmt.Sprintf("swarms=%d", n), func(b *testing.B) {
			tb := newTable(b, Config{Swarms: n})
			for i := range n {
				tb.Announce(&Announce{InfoHash: hashN(i), Addr: addr4(i), Seeder: i%2 == 0}, nil)
			}
			b.ReportAllocs()
			for b.Loop() {
				seen := 0
				tb.Range(func(InfoHash, Counts) bool { seen++; return true })
				if seen != n {
					b.Fatalf("Range visited %d swarms, want %d", seen, n)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/swarm")
		})
	}
}

// BenchmarkSweepExpiry sweeps a table in which every one of 1,000,000
// IPv4 peers has expired, while another goroutine keeps announcing new
// peers into the same swarms, and reports how long the sweep took and how
// long those announces waited: on average (mean-ns), the worst one
// (max-ns) and the 99th percentile (p99-ns). A sweep that held a swarm's lock across all its
// peers, or the shard while it rebuilt, would show in max-ns. Run it
// with -benchtime=1x (or a few x) and -cpu 2 or more: each iteration
// builds the table anew, outside the timer. sweep=false is the control:
// the same announces for 100ms with no sweep running, which shows what
// the scheduler and the machine alone do to max-ns.
func BenchmarkSweepExpiry(b *testing.B) {
	if testing.Short() {
		b.Skip("builds tables of a million peers")
	}
	const peers = 1_000_000
	for _, c := range []struct {
		swarms int
		sweep  bool
	}{{1, true}, {16, true}, {100_000, true}, {100_000, false}} {
		swarms := c.swarms
		b.Run(fmt.Sprintf("swarms=%d/sweep=%v", swarms, c.sweep), func(b *testing.B) {
			var lat []time.Duration
			var sweep time.Duration
			for b.Loop() {
				b.StopTimer()
				start := time.Now()
				tb := newTable(b, Config{Swarms: swarms, PeerLifetime: time.Minute})
				tb.Tick(start)
				a := &Announce{}
				for i := range peers {
					binary.BigEndian.PutUint64(a.InfoHash[:], uint64(i%swarms))
					a.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(6881+i%7))
					a.Seeder = i%4 == 0
					tb.Announce(a, nil)
				}
				tb.Tick(start.Add(2 * time.Minute)) // every peer is now stale
				stop := make(chan struct{})
				done := make(chan []time.Duration)
				go func() {
					var l []time.Duration
					r := rand.New(rand.NewPCG(1, 2))
					dst := make([]byte, 0, 50*PeerLenV4)
					a := &Announce{NumWant: 50}
					for i := 0; ; i++ {
						select {
						case <-stop:
							done <- l
							return
						default:
						}
						binary.BigEndian.PutUint64(a.InfoHash[:], r.Uint64N(uint64(swarms)))
						a.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), byte(i)}), 6881)
						t0 := time.Now()
						dst, _ = tb.Announce(a, dst[:0])
						l = append(l, time.Since(t0))
					}
				}()
				runtime.GC() // the fill's garbage is not the sweep's doing
				b.StartTimer()
				t0 := time.Now()
				if c.sweep {
					if got := tb.Sweep(); got != peers {
						b.Fatalf("Sweep removed %d peers, want %d", got, peers)
					}
				} else {
					// The control: announces alone for as long as a
					// sweep takes, for the noise floor of max-ns.
					time.Sleep(100 * time.Millisecond)
				}
				sweep += time.Since(t0)
				b.StopTimer()
				close(stop)
				lat = append(lat, <-done...)
				b.StartTimer()
			}
			var sum time.Duration
			for _, d := range lat {
				sum += d
			}
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat)), "mean-ns")
				b.ReportMetric(float64(lat[len(lat)-1].Nanoseconds()), "max-ns")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
			}
			b.ReportMetric(float64(len(lat))/float64(b.N), "announces/op")
			b.ReportMetric(float64(sweep.Milliseconds())/float64(b.N), "sweep-ms")
		})
	}
}

// BenchmarkBatch answers the mixed workload's re-announces (50 peers
// each) in batches of 16, as a UDP worker does, with and without a
// Prefetch of each batch first. One operation is one announce. The table
// (the mixed workload's, about 400,000 peers) is larger than the L2
// caches, so each announce misses on its swarm, index cell and slot.
func BenchmarkBatch(b *testing.B) {
	tb := newTable(b, Config{Swarms: mixSwarms})
	fillMixed(tb)
	for _, prefetch := range []bool{false, true} {
		b.Run(fmt.Sprintf("prefetch=%v", prefetch), func(b *testing.B) {
			const batch = 16
			r := rand.New(rand.NewPCG(1, 7))
			zipf := rand.NewZipf(r, 1.1, 1, mixSwarms-1)
			as := make([]Announce, batch)
			reqs := make([]Prefetch, batch)
			dst := make([]byte, 0, 50*PeerLenV6)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				j := i % batch
				if j == 0 {
					for k := range as {
						z := int(zipf.Uint64())
						p := r.IntN(mixPool(z))
						a := &as[k]
						binary.BigEndian.PutUint64(a.InfoHash[:], uint64(z))
						a.Addr, a.Seeder, a.NumWant = mixAddr(z, p), p%4 == 0, 50
						reqs[k] = Prefetch{InfoHash: a.InfoHash, Addr: a.Addr}
					}
					if prefetch {
						tb.Prefetch(reqs)
					}
				}
				dst, _ = tb.Announce(&as[j], dst[:0])
			}
		})
	}
}
