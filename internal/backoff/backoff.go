// Package backoff is the one rule every retry loop of the tracker follows
// after a failure: the first wait is Initial, each further failure doubles
// it up to Max, and every wait is jittered into [d/2, d] so that processes
// (or workers) that failed together do not all retry at the same instant.
// A success resets the sequence.
//
// A Backoff is a value owned by its retry loop; it is not safe for
// concurrent use.
package backoff

import (
	"math/rand/v2"
	"time"
)

// A Backoff yields the waits of one retry loop.
type Backoff struct {
	// Initial is the wait after the first failure. It must be positive.
	Initial time.Duration
	// Max caps the wait. It must be at least Initial; a smaller Max wins.
	Max time.Duration

	cur time.Duration // the last unjittered wait; zero while not failing
}

// Next records one more failure and returns how long to wait before the
// next attempt.
func (b *Backoff) Next() time.Duration {
	b.cur = min(max(2*b.cur, b.Initial), b.Max)
	return Jitter(b.cur)
}

// Reset records a success: the next failure waits about Initial again.
func (b *Backoff) Reset() { b.cur = 0 }

// Failing reports whether a failure was recorded since the last Reset.
func (b *Backoff) Failing() bool { return b.cur != 0 }

// Jitter returns a wait drawn uniformly from [d/2, d]; zero for d <= 0.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d-d/2+1)
}
