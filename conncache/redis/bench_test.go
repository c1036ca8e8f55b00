package redis

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

// BenchmarkCommit sends batches of 1,000 changed peers, spread over a
// number of swarms, to the real Redis: the cost of publishing per
// announce (ns/announce) as the Mirror pays it every SyncInterval.
func BenchmarkCommit(b *testing.B) {
	addr := testenv.RedisAddr(b)
	for _, swarms := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("swarms=%d", swarms), func(b *testing.B) {
			p := open(b, testConfig(b, []string{addr}, false))
			defer p.Close()
			ihs := make([]peertable.InfoHash, swarms)
			for i := range ihs {
				ihs[i] = randomHash()
			}
			const batch = 1000
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				tx := p.Begin()
				for i := range batch {
					a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
					tx.Put(ihs[i%swarms], peertable.Peer{Addr: netip.AddrPortFrom(a, 6881)})
				}
				if err := tx.Commit(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/announce")
		})
	}
}
