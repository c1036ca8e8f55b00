package latency

import (
	"sync"
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0},
		{1, 0},
		{50 * time.Microsecond, 0},
		{50*time.Microsecond + 1, 1},
		{100 * time.Microsecond, 1},
		{100*time.Microsecond + 1, 2},
		{150 * time.Microsecond, 2},
		{200 * time.Microsecond, 2},
		{time.Millisecond, 5}, // (800µs, 1.6ms]
		{time.Second, 15},     // (819.2ms, 1.6384s]
		{1638400 * time.Microsecond, 15},
		{1638400*time.Microsecond + 1, Buckets},
		{time.Hour, Buckets},
		{1<<63 - 1, Buckets},
	} {
		if got := bucket(tt.d); got != tt.want {
			t.Errorf("bucket(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
	// Every bound is in its own bucket and the next nanosecond is not.
	for i := range Buckets {
		b := UpperBound(i)
		if got := bucket(b); got != i {
			t.Errorf("bucket(UpperBound(%d) = %v) = %d, want %d", i, b, got, i)
		}
		if got := bucket(b + 1); got != i+1 {
			t.Errorf("bucket(UpperBound(%d)+1) = %d, want %d", i, got, i+1)
		}
	}
}

func TestObserve(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{
		10 * time.Microsecond, 40 * time.Microsecond, // bucket 0
		-time.Second,           // negative: bucket 0, adds nothing to Sum
		300 * time.Microsecond, // bucket 3
		5 * time.Second,        // above every bound
	} {
		h.Observe(d)
	}
	var want Snapshot
	want.Counts[0], want.Counts[3], want.Counts[Buckets] = 3, 1, 1
	want.Sum = 5*time.Second + 350*time.Microsecond
	if got := h.Snapshot(); got != want {
		t.Errorf("Snapshot() = %+v, want %+v", got, want)
	}
	if n := h.Snapshot().Count(); n != 5 {
		t.Errorf("Count() = %d, want 5", n)
	}
}

// TestConcurrentObserve checks that no observation is lost when many
// goroutines record at once (and, under -race, that none races).
func TestConcurrentObserve(t *testing.T) {
	const goroutines, each = 8, 1000
	var h Histogram
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				h.Observe(UpperBound(g))
			}
		})
	}
	wg.Wait()
	s := h.Snapshot()
	for g := range goroutines {
		if s.Counts[g] != each {
			t.Errorf("Counts[%d] = %d, want %d", g, s.Counts[g], each)
		}
	}
	var sum time.Duration
	for g := range goroutines {
		sum += each * UpperBound(g)
	}
	if s.Sum != sum || s.Count() != goroutines*each {
		t.Errorf("Sum, Count() = %v, %d; want %v, %d", s.Sum, s.Count(), sum, goroutines*each)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	var h Histogram
	if n := testing.AllocsPerRun(100, func() { h.Observe(3 * time.Millisecond) }); n != 0 {
		t.Errorf("Observe allocated %v times per call, want 0", n)
	}
}

func BenchmarkObserve(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	d := 700 * time.Microsecond
	for b.Loop() {
		h.Observe(d)
	}
}

func BenchmarkObserveParallel(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		d := 700 * time.Microsecond
		for pb.Next() {
			h.Observe(d)
		}
	})
}

func TestObserveN(t *testing.T) {
	var h Histogram
	h.ObserveN(120*time.Microsecond, 3)
	h.ObserveN(time.Second, 0)
	s := h.Snapshot()
	if s.Count() != 3 || s.Counts[bucket(120*time.Microsecond)] != 3 || s.Sum != 360*time.Microsecond {
		t.Fatalf("after ObserveN(120µs, 3): %+v", s)
	}
}
