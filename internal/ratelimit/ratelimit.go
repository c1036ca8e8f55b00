// Package ratelimit limits how often each source address may do
// something, in memory fixed when the Limiter is made, however many
// sources there are. The udp and httpcompat frontends share it.
//
// A Limiter is a count-min sketch of GCRA token buckets: two rows of
// buckets, each an int64 "theoretical arrival time" (GCRA, the generic
// cell rate algorithm, is a token bucket that stores one number instead
// of a count and a time). A source is hashed with a per-Limiter random
// seed (hash/maphash) to one bucket in each row. A request is allowed
// when the less loaded of its two buckets allows it, and then both are
// charged, never below what that source alone would have spent
// (conservative update). So a bucket only ever over-counts a source:
// sources that share a bucket are limited a little more strictly than
// the rate, never more loosely, and a source must share both of its
// buckets with busy ones before that happens. The seed keeps an attacker
// from picking addresses that collide with a victim's.
//
// A source is an IPv4 address or an IPv6 /64, which a subscriber usually
// holds whole; limiting single IPv6 addresses would let one host take
// 2^64 budgets.
//
// A Limiter is not safe for concurrent use: each udp worker owns one, and
// httpcompat guards its one with a mutex. Allow does not allocate.
package ratelimit

import (
	"fmt"
	"hash/maphash"
	"math"
	"net/netip"
	"time"
)

// A Limiter allows each source Rate requests a second on average, and up
// to Burst at once.
type Limiter struct {
	seed     maphash.Seed
	interval int64 // nanoseconds between requests at the rate
	tau      int64 // how far ahead of now a bucket may run: (burst-1)*interval
	mask     uint64
	rows     [2][]int64 // theoretical arrival time, Unix nanoseconds
}

// New returns a Limiter of rate requests a second with bursts of burst,
// keeping 2*buckets int64s (buckets is rounded up to a power of two). A
// zero burst means the rate rounded up, at least 1.
func New(rate float64, burst, buckets int) (*Limiter, error) {
	if math.IsNaN(rate) || rate <= 0 || rate > 1e9 {
		return nil, fmt.Errorf("rate %v out of range (above 0, at most 1e9 a second)", rate)
	}
	if burst < 0 || burst > 1e9 {
		return nil, fmt.Errorf("burst %d out of range (0 to 1e9)", burst)
	}
	if burst == 0 {
		burst = max(1, int(math.Ceil(rate)))
	}
	if buckets < 1 || buckets > 1<<24 {
		return nil, fmt.Errorf("buckets %d out of range (1 to 2^24)", buckets)
	}
	n := 1
	for n < buckets {
		n <<= 1
	}
	interval := max(1, int64(float64(time.Second)/rate))
	return &Limiter{
		seed:     maphash.MakeSeed(),
		interval: interval,
		tau:      int64(burst-1) * interval,
		mask:     uint64(n - 1),
		rows:     [2][]int64{make([]int64, n), make([]int64, n)},
	}, nil
}

// Key returns the source a client address belongs to: the address itself
// for IPv4 (4-in-6 addresses unmapped), its /64 for IPv6.
func Key(a netip.Addr) [16]byte {
	a = a.Unmap()
	k := a.As16()
	if a.Is6() {
		clear(k[8:])
		k[15] = 6 // no /64 meets a v4-mapped address
	}
	return k
}

// Allow reports whether the source with key k may make a request at now
// (Unix nanoseconds), and charges it if so. When it may not, wait is how
// long until it may.
func (l *Limiter) Allow(k [16]byte, now int64) (ok bool, wait time.Duration) {
	h := maphash.Bytes(l.seed, k[:])
	b0 := &l.rows[0][h&l.mask]
	b1 := &l.rows[1][(h>>32)&l.mask]
	tat := max(min(*b0, *b1), now)
	if tat-now > l.tau {
		return false, time.Duration(tat - now - l.tau)
	}
	tat += l.interval
	*b0 = max(*b0, tat)
	*b1 = max(*b1, tat)
	return true, 0
}
