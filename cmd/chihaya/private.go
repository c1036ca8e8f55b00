package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/private"
)

// PrivateConfig is the [private] section: passkeys, registered torrents
// and allowed clients from the web application's database (the same one
// as [storage]), and per-user statistics back into it.
type PrivateConfig struct {
	// Enabled turns private mode on; it needs a storage driver that can
	// serve private mode, such as "postgres".
	Enabled bool `toml:"enabled"`
	// UsersTable, TorrentsTable and ClientsTable name the relations the
	// tracker reads (tables or views, optionally schema-qualified).
	UsersTable    string `toml:"users_table"`
	TorrentsTable string `toml:"torrents_table"`
	ClientsTable  string `toml:"clients_table"`
	// Channel is what the web application's triggers NOTIFY.
	Channel string `toml:"channel"`
	// ReloadEvery is the full reload that backs up notifications.
	ReloadEvery Duration `toml:"reload_every"`
}

func (c *Config) checkPrivate() error {
	p := &c.Private
	if !p.Enabled {
		return nil
	}
	if !c.storageOn() {
		return errors.New("key private.enabled: private mode reads users and torrents from the storage; set storage.driver (such as \"postgres\") and storage.dsn")
	}
	if d := time.Duration(p.ReloadEvery); d != 0 && d < time.Second {
		return fmt.Errorf("key private.reload_every: %v is too short (at least 1s; 0 means 5m)", d)
	}
	return nil
}

func (c *Config) rules(log *slog.Logger) private.RulesConfig {
	p := &c.Private
	return private.RulesConfig{
		UsersTable:    p.UsersTable,
		TorrentsTable: p.TorrentsTable,
		ClientsTable:  p.ClientsTable,
		Channel:       p.Channel,
		ReloadEvery:   time.Duration(p.ReloadEvery),
		Logger:        log,
	}
}

// openRules loads every user, torrent and client rule from store before
// the daemon serves: private mode cannot admit anyone it has not read. A
// driver that cannot serve private mode, a database that does not answer
// within a minute, or one that lacks the relations of the contract stops
// start-up with the reason.
func openRules(ctx context.Context, store flush.Store, cfg Config, log *slog.Logger) (*private.Source, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	r, err := private.LoadRules(ctx, store, cfg.rules(log))
	if errors.Is(err, private.ErrNoRules) {
		return nil, fmt.Errorf("key storage.driver: driver %q cannot serve private mode's users, torrents and clients; use one that can, such as \"postgres\", or set private.enabled = false", cfg.Storage.Driver)
	}
	if err != nil {
		return nil, fmt.Errorf("loading users, torrents and clients: %w", err)
	}
	s := r.Stats()
	log.Info("private mode", "users", s.Users, "torrents", s.Torrents, "clients", s.Clients)
	return r, nil
}
