package private

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/chihaya/chihaya/internal/backoff"
)

// AccountantConfig configures an Accountant; the daemon maps its
// [storage] flush settings and the peer table's lifetime onto it. Zero
// values mean "use the default"; NewAccountant fills them in and rejects
// out-of-range values with an error naming the field.
type AccountantConfig struct {
	// Interval is how often a batch of deltas is applied. Zero means
	// 5 seconds.
	Interval time.Duration

	// Timeout bounds one attempt (one transaction). Zero means 30
	// seconds.
	Timeout time.Duration

	// ShutdownTimeout bounds the final flush when Run's context is
	// cancelled. Zero means 10 seconds.
	ShutdownTimeout time.Duration

	// MaxBackoff caps the wait between retries of a failed batch: the
	// backoff starts at min(Interval, 1s) and doubles, and each wait is
	// jittered down by up to a half (internal/backoff). Zero means 1
	// minute.
	MaxBackoff time.Duration

	// PeerLifetime is how long a client's last reported totals are kept
	// after its last announce; pass the peer table's lifetime. Zero means
	// 31 minutes.
	PeerLifetime time.Duration

	// Logger receives one record when flushes start failing and one when
	// they recover. Nil means slog.Default().
	Logger *slog.Logger
}

func (c *AccountantConfig) setDefaults() error {
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
	if c.PeerLifetime == 0 {
		c.PeerLifetime = 31 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.Interval < 10*time.Millisecond || c.Interval > time.Hour:
		return fmt.Errorf("private: AccountantConfig.Interval %v out of range (10ms to 1h)", c.Interval)
	case c.Timeout < 0:
		return fmt.Errorf("private: AccountantConfig.Timeout %v is negative", c.Timeout)
	case c.ShutdownTimeout < 0:
		return fmt.Errorf("private: AccountantConfig.ShutdownTimeout %v is negative", c.ShutdownTimeout)
	case c.MaxBackoff < 0:
		return fmt.Errorf("private: AccountantConfig.MaxBackoff %v is negative", c.MaxBackoff)
	case c.PeerLifetime < time.Second:
		return fmt.Errorf("private: AccountantConfig.PeerLifetime %v is under a second", c.PeerLifetime)
	}
	return nil
}

// backoff is the retry rule of a failed batch.
func (c *AccountantConfig) backoff() backoff.Backoff {
	return backoff.Backoff{Initial: min(c.Interval, time.Second), Max: c.MaxBackoff}
}
