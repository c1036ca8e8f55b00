package flush

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"
)

// Config configures a Store (Open), a Flusher and an Accountant; the
// daemon maps its [storage] section onto it. Zero values mean "use the
// default"; the defaults are filled in by Open, NewFlusher and
// NewAccountant, which reject out-of-range values with an error naming
// the field.
type Config struct {
	// DSN is the driver's connection string; for postgres a URL or
	// keyword=value string as libpq takes it (pool_max_conns and the
	// other pgxpool settings included). Required by Open.
	DSN string

	// Interval is how often batches are flushed. Zero means 5 seconds.
	Interval time.Duration

	// Timeout bounds one flush attempt (one transaction). Zero means
	// 30 seconds.
	Timeout time.Duration

	// ShutdownTimeout bounds the final flush when Run's context is
	// cancelled. Zero means 10 seconds.
	ShutdownTimeout time.Duration

	// MaxBackoff caps the wait between retries of a failed flush, by the
	// Flusher and the Accountant alike: the backoff starts at
	// min(Interval, 1s) and doubles, and each wait is jittered down by up
	// to a half. Zero means 1 minute.
	MaxBackoff time.Duration

	// MigrateAtStart makes Open run Store.Migrate (bounded by one
	// minute) before returning. False means the schema is expected to be
	// migrated already ("chihaya migrate").
	MigrateAtStart bool

	// StaleAfter is how long after its last successful flush a process's
	// swarm rows still count in chihaya_torrent_stats; each process
	// writes its own value beside its heartbeat. Rows of a process silent
	// for twice as long are deleted by the other processes. Zero means
	// 6 × Interval. It must be at least 2 × Interval.
	StaleAfter time.Duration

	// PeerLifetime is how long the Accountant keeps a client's last
	// reported totals after its last announce; pass the peer table's
	// lifetime. Zero means 31 minutes.
	PeerLifetime time.Duration

	// Logger receives one record when flushes start failing and one when
	// they recover. Nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = time.Minute
	}
	if c.StaleAfter == 0 {
		c.StaleAfter = 6 * c.Interval
	}
	if c.PeerLifetime == 0 {
		c.PeerLifetime = 31 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Interval < 10*time.Millisecond || c.Interval > time.Hour:
		return fmt.Errorf("flush: Interval %v out of range (10ms to 1h)", c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("flush: Timeout %v is negative", c.Timeout)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("flush: ShutdownTimeout %v is negative", c.ShutdownTimeout)
	case c.MaxBackoff < 0:
		return fmt.Errorf("flush: MaxBackoff %v is negative", c.MaxBackoff)
	case c.StaleAfter < 2*c.Interval:
		return fmt.Errorf("flush: StaleAfter %v must be at least 2 × Interval (%v)", c.StaleAfter, 2*c.Interval)
	case c.PeerLifetime < time.Second:
		return fmt.Errorf("flush: PeerLifetime %v is under a second", c.PeerLifetime)
	}
	return nil
}

// initialBackoff is the first wait after a failed attempt.
func (c *Config) initialBackoff() time.Duration { return min(c.Interval, time.Second, c.MaxBackoff) }

// nextBackoff doubles prev within [initialBackoff, MaxBackoff]. Callers
// keep the result for the next failure and wait jitter(result).
func (c *Config) nextBackoff(prev time.Duration) time.Duration {
	return min(max(2*prev, c.initialBackoff()), c.MaxBackoff)
}

// jitter returns a wait between d/2 and d, so processes that failed
// together do not retry together.
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }
