package private

import (
	"encoding/binary"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/tracker"
)

// benchIdentity sets g and req to identity i of a fixed, pseudo-random
// population: 50,000 users, 10,000 torrents and random peer ids and keys.
// It computes rather than loads them, so that the benchmark's own memory
// traffic stays out of the measurement.
func benchIdentity(i uint64, g *tracker.Grant, req *tracker.AnnounceRequest) {
	h := mix(i)
	g.User = uint32(h%50_000) + 1
	g.Torrent = uint32(h>>32%10_000) + 1
	h = mix(h)
	binary.LittleEndian.PutUint64(req.PeerID[0:], h)
	binary.LittleEndian.PutUint64(req.PeerID[8:], mix(h))
	req.Key = uint32(h >> 17)
}

// mix is splitmix64's finalizer.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// BenchmarkAccountMany is the daemon's case: a million identities, each
// announce from a random one, from every core at once. Goroutine g of p
// owns the identities i with i%p == g, and reports totals that only grow,
// so every announce credits something. Besides wall time per announce it
// reports the process's CPU time per announce, cpu-ns/op.
func BenchmarkAccountMany(b *testing.B) {
	const n = 1_000_000
	heap0 := heapInUse()
	a := startedAccountant(b, n)
	perIdentity := float64(heapInUse()-heap0) / n
	procs := uint64(runtime.GOMAXPROCS(0))
	var next atomic.Uint64
	b.ReportAllocs()
	cpu := testenv.StartCPU()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		own := (next.Add(1) - 1) % procs
		r := rand.New(rand.NewPCG(own, 1))
		var g tracker.Grant
		req := &tracker.AnnounceRequest{Left: 1}
		for pb.Next() {
			benchIdentity(r.Uint64N(n/procs)*procs+own, &g, req)
			req.Uploaded += 1 << 10
			a.Account(g, req)
		}
	})
	b.ReportMetric(perIdentity, "heap-B/identity")
	cpu.Report(b)
}

// startedAccountant returns an Accountant on a memory store that holds
// identities 0 to n-1 of benchIdentity, each announced once as started.
func startedAccountant(b *testing.B, n uint64) *Accountant {
	a, err := NewAccountant(newMemStore(), AccountantConfig{})
	if err != nil {
		b.Fatal(err)
	}
	var g tracker.Grant
	req := &tracker.AnnounceRequest{Left: 1, Event: started}
	for i := range n {
		benchIdentity(i, &g, req)
		a.Account(g, req)
	}
	return a
}

// heapInUse returns the bytes of live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// BenchmarkAccountChurn is a million identities with clients coming and
// going: each operation is one client stopping and a new one starting, so
// half the lookups are for an identity the table does not hold (which
// probes until an empty slot) and the stops leave tombstones that force a
// rehash now and then. One operation is the pair.
func BenchmarkAccountChurn(b *testing.B) {
	const n = 1_000_000
	a := startedAccountant(b, n)
	var g tracker.Grant
	req := &tracker.AnnounceRequest{Left: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for next := uint64(n); b.Loop(); next++ {
		benchIdentity(next-n, &g, req)
		req.Event = stopped
		a.Account(g, req)
		benchIdentity(next, &g, req)
		req.Event = started
		a.Account(g, req)
	}
}
