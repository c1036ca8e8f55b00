package ratelimit

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

const sec = int64(time.Second)

func mustNew(tb testing.TB, rate float64, burst, buckets int) *Limiter {
	tb.Helper()
	l, err := New(rate, burst, buckets)
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

func key(s string) [16]byte { return Key(netip.MustParseAddr(s)) }

func TestAllowRateAndBurst(t *testing.T) {
	l := mustNew(t, 2, 5, 64)
	a, b := key("192.0.2.1"), key("192.0.2.2")
	now := 1_700_000_000 * sec
	for i := range 5 {
		if ok, _ := l.Allow(a, now); !ok {
			t.Fatalf("request %d of a burst of 5 refused", i+1)
		}
	}
	ok, wait := l.Allow(a, now)
	if ok || wait != time.Second/2 {
		t.Errorf("6th request at once = %v, wait %v; want refused, wait 500ms", ok, wait)
	}
	if ok, _ := l.Allow(b, now); !ok {
		t.Error("another source was refused")
	}
	// Two a second come back.
	now += sec
	for i := range 2 {
		if ok, _ := l.Allow(a, now); !ok {
			t.Errorf("request %d a second later refused", i+1)
		}
	}
	if ok, _ := l.Allow(a, now); ok {
		t.Error("3rd request a second later allowed, want refused")
	}
	// An idle source gets its whole burst back, no more.
	now += 100 * sec
	n := 0
	for range 20 {
		if ok, _ := l.Allow(a, now); ok {
			n++
		}
	}
	if n != 5 {
		t.Errorf("after idling, %d requests allowed at once, want the burst of 5", n)
	}
}

func TestAllowDefaultBurst(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		want int
	}{{0.1, 1}, {1, 1}, {2.5, 3}, {10, 10}} {
		l := mustNew(t, tc.rate, 0, 16)
		n := 0
		for range 100 {
			if ok, _ := l.Allow(key("192.0.2.1"), 0); ok {
				n++
			}
		}
		if n != tc.want {
			t.Errorf("rate %v, burst 0: %d allowed at once, want %d", tc.rate, n, tc.want)
		}
	}
}

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "::ffff:192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true},
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"::ffff:0:0", "::", false},
		{"0.0.0.0", "::", false},
	} {
		if got := key(tc.a) == key(tc.b); got != tc.same {
			t.Errorf("Key(%s) == Key(%s) is %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

// TestCollisionsOnlyStricter fills a tiny table with many sources and
// checks that none gets more than its own budget.
func TestCollisionsOnlyStricter(t *testing.T) {
	l := mustNew(t, 1, 3, 4)
	for i := range 1000 {
		k := key(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		n := 0
		for range 10 {
			if ok, _ := l.Allow(k, 0); ok {
				n++
			}
		}
		if n > 3 {
			t.Fatalf("source %d allowed %d requests at once, want at most 3", i, n)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		rate           float64
		burst, buckets int
	}{{0, 1, 1}, {-1, 1, 1}, {2e9, 1, 1}, {1, -1, 1}, {1, 1, 0}, {1, 1, 1 << 25}} {
		if _, err := New(tc.rate, tc.burst, tc.buckets); err == nil {
			t.Errorf("New(%v, %d, %d) = nil error", tc.rate, tc.burst, tc.buckets)
		}
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l := mustNew(t, 10, 10, 1024)
	k := key("2001:db8::1")
	var now int64
	if n := testing.AllocsPerRun(100, func() { now += sec; l.Allow(k, now) }); n != 0 {
		t.Errorf("Allow allocated %v times per call, want 0", n)
	}
}

func BenchmarkAllow(b *testing.B) {
	l := mustNew(b, 1e6, 1e6, 4096)
	k := key("192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		l.Allow(k, 0)
	}
}
