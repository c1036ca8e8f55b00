package main

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	if p := newPacer(0, 8); p != nil || !p.take(0) || p.wait(0) != 0 {
		t.Fatal("rate 0 must not limit")
	}
	p := newPacer(1000, 4) // a token every millisecond, at most 4 saved
	n := 0
	for p.take(0) {
		n++
	}
	if n != 4 {
		t.Fatalf("full bucket gave %d requests, want the burst of 4", n)
	}
	if w := p.wait(0); w != time.Millisecond {
		t.Fatalf("wait on an empty bucket %v, want 1ms", w)
	}
	if w := p.wait(400 * time.Microsecond); w != 600*time.Microsecond {
		t.Fatalf("wait after 0.4ms %v, want 0.6ms", w)
	}
	// Over a second of steady polling the pacer lets through the rate,
	// plus the initial burst, and no more.
	n = 0
	for now := time.Duration(0); now <= time.Second; now += 50 * time.Microsecond {
		for p.take(now) {
			n++
		}
	}
	if n < 999 || n > 1001 {
		t.Fatalf("one second at 1000/s let %d requests through", n)
	}
	// A long pause saves no more than the burst.
	n = 0
	for p.take(time.Hour) {
		n++
	}
	if n != 4 {
		t.Fatalf("after a pause %d requests, want the burst of 4", n)
	}
}
