package flush

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/chihaya/chihaya/internal/backoff"
)

// StoreConfig configures a Store (Open); the daemon maps its [storage]
// section's connection keys onto it.
type StoreConfig struct {
	// DSN is the driver's connection string; for postgres a URL or
	// keyword=value string as libpq takes it (pool_max_conns and the
	// other pgxpool settings included). Required.
	DSN string

	// MigrateAtStart makes Open run Store.Migrate (bounded by one
	// minute) before returning. False means the schema is expected to be
	// migrated already ("chihaya migrate").
	MigrateAtStart bool
}

// FlusherConfig configures a Flusher; the daemon maps its [storage]
// flush keys onto it. Zero values mean "use the default"; NewFlusher
// fills them in and rejects out-of-range values with an error naming the
// field.
type FlusherConfig struct {
	// Interval is how often swarm counts are flushed. Zero means 5
	// seconds.
	Interval time.Duration

	// Timeout bounds one flush attempt (one transaction). Zero means
	// 30 seconds.
	Timeout time.Duration

	// ShutdownTimeout bounds the final flush when Run's context is
	// cancelled. Zero means 10 seconds.
	ShutdownTimeout time.Duration

	// MaxBackoff caps the wait between retries of a failed flush: the
	// backoff starts at min(Interval, 1s) and doubles, and each wait is
	// jittered down by up to a half (internal/backoff). Zero means 1
	// minute.
	MaxBackoff time.Duration

	// StaleAfter is how long after its last successful flush a process's
	// swarm rows still count in chihaya_torrent_stats; each process
	// writes its own value beside its heartbeat. Rows of a process silent
	// for twice as long are deleted by the other processes. Zero means
	// 6 × Interval. It must be at least 2 × Interval.
	StaleAfter time.Duration

	// Logger receives one record when flushes start failing and one when
	// they recover. Nil means slog.Default().
	Logger *slog.Logger
}

func (c *FlusherConfig) setDefaults() error {
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
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Interval < 10*time.Millisecond || c.Interval > time.Hour:
		return fmt.Errorf("flush: FlusherConfig.Interval %v out of range (10ms to 1h)", c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("flush: FlusherConfig.Timeout %v is negative", c.Timeout)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("flush: FlusherConfig.ShutdownTimeout %v is negative", c.ShutdownTimeout)
	case c.MaxBackoff < 0:
		return fmt.Errorf("flush: FlusherConfig.MaxBackoff %v is negative", c.MaxBackoff)
	case c.StaleAfter < 2*c.Interval:
		return fmt.Errorf("flush: FlusherConfig.StaleAfter %v must be at least 2 × Interval (%v)", c.StaleAfter, 2*c.Interval)
	}
	return nil
}

// backoff is the retry rule of a failed flush.
func (c *FlusherConfig) backoff() backoff.Backoff {
	return backoff.Backoff{Initial: min(c.Interval, time.Second), Max: c.MaxBackoff}
}
