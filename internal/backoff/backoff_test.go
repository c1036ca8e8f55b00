package backoff

import (
	"testing"
	"time"
)

func TestBackoffDoublesToMaxAndResets(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	if b.Failing() {
		t.Fatal("a new Backoff reports failing")
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		w *= time.Millisecond
		got := b.Next()
		if got < w/2 || got > w {
			t.Fatalf("failure %d: wait %v, want within [%v, %v]", i+1, got, w/2, w)
		}
		if b.cur != w {
			t.Fatalf("failure %d: unjittered wait %v, want %v", i+1, b.cur, w)
		}
	}
	if !b.Failing() {
		t.Fatal("Failing is false after failures")
	}
	b.Reset()
	if b.Failing() {
		t.Fatal("Failing is true after Reset")
	}
	if got := b.Next(); got > 100*time.Millisecond {
		t.Fatalf("first wait after Reset %v, want at most Initial", got)
	}
}

func TestBackoffMaxBelowInitial(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Millisecond}
	for range 3 {
		if got := b.Next(); got > 10*time.Millisecond {
			t.Fatalf("wait %v exceeds Max", got)
		}
	}
}

func TestJitterRange(t *testing.T) {
	for _, d := range []time.Duration{1, 2, 3, 1000, time.Minute} {
		lo, hi := d, time.Duration(0)
		for range 2000 {
			j := Jitter(d)
			if j < d/2 || j > d {
				t.Fatalf("Jitter(%v) = %v, outside [%v, %v]", d, j, d/2, d)
			}
			lo, hi = min(lo, j), max(hi, j)
		}
		if d >= 1000 && (lo == hi) {
			t.Errorf("Jitter(%v) always %v: not jittered", d, lo)
		}
	}
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Error("Jitter of a non-positive duration is not zero")
	}
}
