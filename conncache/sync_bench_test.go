//go:build unix

package conncache_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/conncache"
	_ "github.com/chihaya/chihaya/conncache/redis"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

// BenchmarkSync is one publication of 10,000 changes over 1,000 swarms to
// the real Redis (9,000 peers put or, every tenth, removed, and a completed
// count per swarm): what the publisher costs per change (ns/change, allocs/change),
// noting the changes excluded.
func BenchmarkSync(b *testing.B) {
	addr := testenv.RedisAddr(b)
	const changes, swarms = 10_000, 1_000
	var rnd [6]byte
	rand.Read(rnd[:])
	prefix := "chihaya-bench-" + hex.EncodeToString(rnd[:]) + ":"
	b.Cleanup(func() {
		c := goredis.NewClient(&goredis.Options{Addr: addr})
		defer c.Close()
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
	})
	cfg := conncache.Config{Addrs: []string{addr}, KeyPrefix: prefix, PeerLifetime: time.Minute, Logger: discardLogger()}
	pool, err := conncache.Open("redis", cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	local, err := peertable.New(peertable.Config{PeerLifetime: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	m := conncache.NewMirror(pool, local, cfg)
	ctx := context.Background()
	if !m.SyncForTest(ctx) { // the first round republishes the (empty) table
		b.Fatal("first sync failed")
	}
	ihs := make([]peertable.InfoHash, swarms)
	for i := range ihs {
		rand.Read(ihs[i][:])
	}
	peers := make([]peertable.Peer, changes-swarms)
	for i := range peers {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		peers[i] = peertable.Peer{Addr: netip.AddrPortFrom(a, uint16(1000+i)), Seeder: i%3 == 0}
	}
	var ms runtime.MemStats
	var ru syscall.Rusage
	var mallocs uint64
	var cpu int64
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for i, p := range peers {
			ch := peertable.ChangeAdded
			if i%10 == 9 {
				ch = peertable.ChangeRemoved
			}
			res := peertable.Result{Completed: i < swarms, Counts: peertable.Counts{Completed: uint32(i)}}
			m.Changed(ihs[i%swarms], p, ch, res)
		}
		runtime.ReadMemStats(&ms)
		mallocs -= ms.Mallocs
		cpu -= cpuTime(&ru)
		b.StartTimer()
		if !m.SyncForTest(ctx) {
			b.Fatal("sync failed")
		}
		b.StopTimer()
		cpu += cpuTime(&ru)
		runtime.ReadMemStats(&ms)
		mallocs += ms.Mallocs
		b.StartTimer()
	}
	if st := m.Stats(); st.Pending != 0 || st.Dropped != 0 || st.Errors != 0 {
		b.Fatalf("Stats = %+v, want nothing pending, dropped or failed", st)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*changes), "ns/change")
	b.ReportMetric(float64(cpu)/float64(b.N*changes), "cpu-ns/change")
	b.ReportMetric(float64(mallocs)/float64(b.N*changes), "allocs/change")
}

// cpuTime returns the CPU time the process has used, in nanoseconds.
func cpuTime(ru *syscall.Rusage) int64 {
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, ru); err != nil {
		panic(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
