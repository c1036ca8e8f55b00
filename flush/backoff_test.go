package flush

import (
	"testing"
	"time"
)

func TestFlusherBackoff(t *testing.T) {
	// The flush rule: the first retry waits about min(Interval, 1s),
	// doubling to MaxBackoff, each wait jittered into [d/2, d].
	c := FlusherConfig{Interval: 5 * time.Second, MaxBackoff: 10 * time.Second}
	if err := c.setDefaults(); err != nil {
		t.Fatal(err)
	}
	b := c.backoff()
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := b.Next(); got < w/2 || got > w {
			t.Errorf("retry %d waits %v, want %v to %v", i+1, got, w/2, w)
		}
	}
}
