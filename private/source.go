package private

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/chihaya/chihaya/flush"
)

// A RulesLoader is a flush.Store whose storage also holds the web
// application's users, torrents and allowed clients, so it can serve
// private mode. It is an optional capability of a storage driver, found by
// interface assertion on the opened Store, as database/sql finds
// driver.Pinger on a connection: a driver that cannot serve private mode
// simply does not implement it, and LoadRules says so.
type RulesLoader interface {
	// LoadRules fills into with every user, torrent and client prefix
	// before it returns, so that nothing is refused for having been read
	// late, and returns the feed that keeps into equal to the storage.
	// cfg has its defaults filled in and is checked. It fails, naming the
	// relation or column, when the storage does not meet the contract of
	// RulesConfig.
	LoadRules(ctx context.Context, into *Rules, cfg RulesConfig) (RulesFeed, error)
}

// A RulesFeed keeps the Rules it was loaded into equal to the storage,
// following changes while Run runs. Its methods other than Run are safe to
// call concurrently with Run.
type RulesFeed interface {
	// Run follows changes until ctx is done, then returns nil; it
	// returns an error only if called twice.
	Run(ctx context.Context) error
	// Health returns nil while changes reach the Rules as they are made,
	// and otherwise an error saying since when they do not and why.
	Health() error
	// FeedStats returns the feed's counters.
	FeedStats() FeedStats
	// Close releases what the feed holds of its own (not the Store's
	// connections). Call it after Run has returned.
	Close()
}

// FeedStats count a RulesFeed's work since LoadRules.
type FeedStats struct {
	Reloads       uint64    // full reloads that succeeded
	Notifications uint64    // change notifications received
	Errors        uint64    // failed queries, connections and malformed rows
	LastReload    time.Time // when the last full reload succeeded
}

// RulesConfig says where the storage keeps private mode's rules. The
// relations must have the columns of flush/schema/webapp.sql:
//
//	users(id integer, passkey text, enabled boolean, can_download boolean)
//	torrents(id integer, info_hash bytea, info_hash_v2 bytea, allowed boolean)
//	allowed_clients(peer_id_prefix bytea)
//
// Column names are fixed; relation names are configurable so that they
// may be views over the web application's own tables. NULL booleans read
// as false. Rows that break the contract (a passkey that is not 32
// bytes, a negative id, a hash of the wrong length) are skipped, logged
// and counted in Errors.
type RulesConfig struct {
	// UsersTable, TorrentsTable and ClientsTable name the relations,
	// optionally schema-qualified ("app.users"). Zero values mean
	// "users", "torrents" and "allowed_clients".
	UsersTable    string
	TorrentsTable string
	ClientsTable  string

	// Channel is the notification channel the web application's
	// triggers notify (LISTEN/NOTIFY in PostgreSQL). Zero means
	// "chihaya_rules".
	Channel string

	// ReloadEvery is how often everything is reloaded, as a backstop for
	// lost notifications. Zero means 5 minutes; it must be at least a
	// second.
	ReloadEvery time.Duration

	// Timeout bounds one load: a full reload or one batch of rows. Zero
	// means 1 minute.
	Timeout time.Duration

	// MaxBackoff caps the wait between attempts to reconnect the listener
	// or to repeat a failed load; the wait starts at 100ms and doubles,
	// jittered as internal/backoff does. Zero means 30 seconds.
	MaxBackoff time.Duration

	// Logger receives a line per state change (listener lost and back,
	// loads failing and recovered) and per skipped row. Nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c *RulesConfig) setDefaults() error {
	if c.UsersTable == "" {
		c.UsersTable = "users"
	}
	if c.TorrentsTable == "" {
		c.TorrentsTable = "torrents"
	}
	if c.ClientsTable == "" {
		c.ClientsTable = "allowed_clients"
	}
	if c.Channel == "" {
		c.Channel = "chihaya_rules"
	}
	if c.ReloadEvery == 0 {
		c.ReloadEvery = 5 * time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = time.Minute
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.ReloadEvery < time.Second:
		return fmt.Errorf("private: RulesConfig.ReloadEvery %v is under a second", c.ReloadEvery)
	case c.Timeout < 0:
		return fmt.Errorf("private: RulesConfig.Timeout %v is negative", c.Timeout)
	case c.MaxBackoff < 0:
		return fmt.Errorf("private: RulesConfig.MaxBackoff %v is negative", c.MaxBackoff)
	}
	return nil
}

// ErrNoRules is returned by LoadRules for a Store that is not a
// RulesLoader.
var ErrNoRules = errors.New("private: the storage driver cannot serve private mode's users, torrents and clients")

// A Source is private mode's rules as the daemon runs them: Rules loaded
// from the storage, the tracker's Authorizer, and the feed that keeps them
// fresh. Authorize, Stats and Health are safe for concurrent use.
type Source struct {
	*Rules
	feed RulesFeed
}

// LoadRules reads every rule from store, which must be a RulesLoader, and
// returns them with their feed. Call Run to keep them fresh and Close when
// done (before closing store).
func LoadRules(ctx context.Context, store flush.Store, cfg RulesConfig) (*Source, error) {
	l, ok := store.(RulesLoader)
	if !ok {
		return nil, ErrNoRules
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := NewRules()
	feed, err := l.LoadRules(ctx, r, cfg)
	if err != nil {
		return nil, err
	}
	return &Source{Rules: r, feed: feed}, nil
}

// Run keeps the rules fresh until ctx is done.
func (s *Source) Run(ctx context.Context) error { return s.feed.Run(ctx) }

// Health returns nil while changes in the storage reach the rules.
func (s *Source) Health() error { return s.feed.Health() }

// Close releases the feed. Call it after Run has returned.
func (s *Source) Close() { s.feed.Close() }

// Stats returns the rows held and the feed's counters.
func (s *Source) Stats() RulesStats {
	st := s.Rules.Stats()
	f := s.feed.FeedStats()
	st.Reloads, st.Notifications, st.Errors, st.LastReload = f.Reloads, f.Notifications, f.Errors, f.LastReload
	return st
}
