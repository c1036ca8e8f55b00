package backoff

import (
	"context"
	"time"
)

// An Outage tracks one run of consecutive failed attempts, so that the run
// is logged when it starts and when it ends, never once per attempt. Its
// owner guards it.
type Outage struct {
	since    time.Time // first failure of the run; zero when not failing
	attempts int       // failed attempts in the run
}

// Failing reports whether a run is under way.
func (o *Outage) Failing() bool { return !o.since.IsZero() }

// Since returns when the run began; zero when not failing.
func (o *Outage) Since() time.Time { return o.since }

// Fail records a failed attempt at now and reports whether it started a
// run.
func (o *Outage) Fail(now time.Time) (started bool) {
	o.attempts++
	if o.since.IsZero() {
		o.since = now
		return true
	}
	return false
}

// End ends the run, if any, and returns how long it lasted and how many
// attempts failed in it; ok is false if there was no run.
func (o *Outage) End(now time.Time) (lasted time.Duration, attempts int, ok bool) {
	if o.since.IsZero() {
		return 0, 0, false
	}
	lasted, attempts = now.Sub(o.since), o.attempts
	*o = Outage{}
	return lasted, attempts, true
}

// Rounds calls fn until it has succeeded rounds times, waiting b's
// backoff between failures, until ctx is done; it then returns the last
// failure. A graceful stop uses it: a batch in flight must commit before
// one more batch takes what was collected since.
func Rounds(ctx context.Context, b Backoff, rounds int, fn func(context.Context) error) error {
	for rounds > 0 {
		err := fn(ctx)
		if err == nil {
			rounds--
			b.Reset()
			continue
		}
		t := time.NewTimer(b.Next())
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return nil
}
