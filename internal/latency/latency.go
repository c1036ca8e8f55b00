// Package latency keeps histograms of how long requests take, cheaply
// enough to record every request on a frontend's hot path.
//
// A Histogram has a fixed set of buckets whose upper bounds double from
// 50µs: 50µs, 100µs, 200µs, … 1.6384s, then one for anything longer.
// Observe finds the bucket with a division and a bit count and adds to
// two atomic counters: it takes no lock and does not allocate. Snapshot
// copies the counters into a plain value for metrics. The package knows
// nothing of Prometheus or of any frontend, so that udp and httpcompat
// can both use it without importing each other.
//
// A Histogram is safe for concurrent use; its zero value is empty and
// ready to use. It must not be copied after first use.
package latency

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Buckets is the number of buckets with a finite upper bound. A
// Snapshot has one more, for durations above the last bound.
const Buckets = 16

// first is the upper bound of bucket 0; bucket i ends at first<<i.
const first = 50 * time.Microsecond

// UpperBound returns the inclusive upper bound of bucket i, for i in
// [0, Buckets).
func UpperBound(i int) time.Duration { return first << i }

// A Histogram counts durations by bucket and keeps their sum.
type Histogram struct {
	counts [Buckets + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// bucket returns the index of the bucket that holds d: the least i with
// d <= UpperBound(i), or Buckets when there is none.
func bucket(d time.Duration) int {
	if d <= first {
		return 0
	}
	// For d in (first<<(i-1), first<<i], (d-1)/first is in
	// [1<<(i-1), 1<<i), whose bit length is i.
	return min(bits.Len64(uint64((d-1)/first)), Buckets)
}

// Observe records one duration. A negative d counts as zero.
func (h *Histogram) Observe(d time.Duration) {
	d = max(d, 0)
	h.counts[bucket(d)].Add(1)
	h.sum.Add(int64(d))
}

// ObserveN records n observations of the same duration d, as a frontend
// that handles requests in batches does: each request of a batch waited
// for the whole batch.
func (h *Histogram) ObserveN(d time.Duration, n uint64) {
	if n == 0 {
		return
	}
	d = max(d, 0)
	h.counts[bucket(d)].Add(n)
	h.sum.Add(int64(d) * int64(n))
}

// A Snapshot is a Histogram's counts at one moment.
type Snapshot struct {
	// Counts holds the observations in each bucket, not cumulative:
	// Counts[i] for i < Buckets are those in (UpperBound(i-1),
	// UpperBound(i)], and Counts[Buckets] those above the last bound.
	Counts [Buckets + 1]uint64
	// Sum is the total of every duration observed.
	Sum time.Duration
}

// Count returns the number of observations.
func (s Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Snapshot returns the counts. Each counter is read atomically, but not
// all at one instant: with observations in flight, Sum may include one
// that Counts does not yet, or the reverse.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = time.Duration(h.sum.Load())
	return s
}
