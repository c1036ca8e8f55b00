package flush

import (
	"context"
	"log/slog"
	"time"
)

// failures tracks a run of failed flush attempts, so that the run is
// logged when it starts and when it ends, never once per attempt. Its
// owner guards it.
type failures struct {
	since    time.Time // first failure of the run; zero when not failing
	attempts int       // failed attempts in the run
}

// failing reports whether a run is under way.
func (r *failures) failing() bool { return !r.since.IsZero() }

// fail records a failed attempt at now and reports whether it started a
// run.
func (r *failures) fail(now time.Time) (started bool) {
	r.attempts++
	if r.since.IsZero() {
		r.since = now
		return true
	}
	return false
}

// succeed ends the run, if any, and returns how long it lasted and how
// many attempts failed in it; ok is false if there was no run.
func (r *failures) succeed(now time.Time) (lasted time.Duration, attempts int, ok bool) {
	if r.since.IsZero() {
		return 0, 0, false
	}
	lasted, attempts = now.Sub(r.since), r.attempts
	*r = failures{}
	return lasted, attempts, true
}

// logFailing and logRecovered write the two records of a run of failures
// of what ("swarm flush", "accounting flush"). Callers log outside their
// locks: a handler may block.
func logFailing(l *slog.Logger, what string, err error) {
	l.Error("flush: "+what+" failing; retrying with backoff", "err", err)
}

func logRecovered(l *slog.Logger, what string, lasted time.Duration, attempts int) {
	l.Info("flush: "+what+" recovered", "failed_for", lasted, "failed_attempts", attempts)
}

// flushRounds calls flush until it has succeeded rounds times, backing
// off between failures as Run does, until ctx is done; it then returns
// the last failure. A graceful stop uses it: a frozen batch in flight must
// commit before one more batch takes what was collected since.
func (c *Config) flushRounds(ctx context.Context, rounds int, flush func(context.Context) error) error {
	var backoff time.Duration
	for rounds > 0 {
		err := flush(ctx)
		if err == nil {
			rounds--
			backoff = 0
			continue
		}
		backoff = c.nextBackoff(backoff)
		t := time.NewTimer(jitter(backoff))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
	return nil
}
