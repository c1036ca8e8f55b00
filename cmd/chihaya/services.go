package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chihaya/chihaya/admin"
	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/private"
	"github.com/chihaya/chihaya/tracker"
)

// This file wires the optional services: the cache that mirrors swarms
// between processes ([cache], conncache) and the storage that receives
// statistics ([storage], flush), with private mode on top of it
// ([private]). None of them is ever waited on by a request.

// CacheConfig is the [cache] section: Redis shared by several processes.
type CacheConfig struct {
	// Driver is "" (or "none") for a single process, or "redis".
	Driver     string   `toml:"driver"`
	Addrs      []string `toml:"addrs"`
	MasterName string   `toml:"master_name"`
	Cluster    bool     `toml:"cluster"`
	Username   string   `toml:"username"`
	Password   Secret   `toml:"password"`
	DB         int      `toml:"db"`
	KeyPrefix  string   `toml:"key_prefix"`
	// SyncInterval is how often changes are published; zero means 100ms.
	SyncInterval Duration `toml:"sync_interval"`
	MaxPending   int      `toml:"max_pending"`
	Timeout      Duration `toml:"timeout"`
}

// StorageConfig is the [storage] section: statistics to PostgreSQL.
type StorageConfig struct {
	// Driver is "" (or "none") for no storage, or "postgres".
	Driver         string   `toml:"driver"`
	DSN            Secret   `toml:"dsn"`
	FlushInterval  Duration `toml:"flush_interval"`
	FlushTimeout   Duration `toml:"flush_timeout"`
	MaxBackoff     Duration `toml:"max_backoff"`
	StaleAfter     Duration `toml:"stale_after"`
	MigrateAtStart bool     `toml:"migrate_at_start"`
}

func (c *Config) cacheOn() bool   { return c.Cache.Driver != "" && c.Cache.Driver != "none" }
func (c *Config) storageOn() bool { return c.Storage.Driver != "" && c.Storage.Driver != "none" }

// checkServices checks [cache], [storage] and [private] without
// connecting to anything.
func (c *Config) checkServices() error {
	if c.cacheOn() {
		if !slices.Contains(conncache.Drivers(), c.Cache.Driver) {
			return fmt.Errorf("key cache.driver: unknown driver %q; use one of %s, or leave it empty for a single process", c.Cache.Driver, strings.Join(conncache.Drivers(), ", "))
		}
		if len(c.Cache.Addrs) == 0 {
			return fmt.Errorf("key cache.addrs: the %s driver needs at least one address, such as [\"127.0.0.1:6379\"]", c.Cache.Driver)
		}
		if c.Cache.SyncInterval < 0 || time.Duration(c.Cache.SyncInterval) > time.Minute {
			return fmt.Errorf("key cache.sync_interval: %v out of range (0 means 100ms, at most 1m)", time.Duration(c.Cache.SyncInterval))
		}
		if c.Cache.MaxPending < 0 {
			return fmt.Errorf("key cache.max_pending: must not be negative (0 means 1,000,000)")
		}
		if c.Cache.Timeout < 0 {
			return fmt.Errorf("key cache.timeout: must not be negative (0 means 5s)")
		}
	}
	if c.storageOn() {
		if !slices.Contains(flush.Drivers(), c.Storage.Driver) {
			return fmt.Errorf("key storage.driver: unknown driver %q; use one of %s, or leave it empty for no storage", c.Storage.Driver, strings.Join(flush.Drivers(), ", "))
		}
		if c.Storage.DSN == "" {
			return fmt.Errorf("key storage.dsn: the %s driver needs a connection string, such as \"postgres://chihaya@127.0.0.1:5432/site\"", c.Storage.Driver)
		}
		for key, d := range map[string]Duration{
			"flush_interval": c.Storage.FlushInterval, "flush_timeout": c.Storage.FlushTimeout,
			"max_backoff": c.Storage.MaxBackoff, "stale_after": c.Storage.StaleAfter,
		} {
			if d < 0 {
				return fmt.Errorf("key storage.%s: must not be negative (0 means the default)", key)
			}
		}
		if s, i := time.Duration(c.Storage.StaleAfter), c.flushInterval(); s != 0 && s < 2*i {
			return fmt.Errorf("key storage.stale_after: %v is less than twice storage.flush_interval (%v); other processes would take this one for dead between flushes", s, i)
		}
	}
	return c.checkPrivate()
}

func (c *Config) flushInterval() time.Duration {
	if c.Storage.FlushInterval == 0 {
		return 5 * time.Second
	}
	return time.Duration(c.Storage.FlushInterval)
}

func (c *Config) conncache(log *slog.Logger) conncache.Config {
	pt := c.peertable()
	return conncache.Config{
		Addrs:        c.Cache.Addrs,
		MasterName:   c.Cache.MasterName,
		Cluster:      c.Cache.Cluster,
		Username:     c.Cache.Username,
		Password:     string(c.Cache.Password),
		DB:           c.Cache.DB,
		KeyPrefix:    c.Cache.KeyPrefix,
		SyncInterval: time.Duration(c.Cache.SyncInterval),
		MaxPending:   c.Cache.MaxPending,
		PeerLifetime: pt.PeerLifetime,
		RefreshEvery: pt.RefreshEvery,
		Timeout:      time.Duration(c.Cache.Timeout),
		Logger:       log,
	}
}

func (c *Config) store() flush.StoreConfig {
	return flush.StoreConfig{DSN: string(c.Storage.DSN), MigrateAtStart: c.Storage.MigrateAtStart}
}

func (c *Config) flusher(log *slog.Logger) flush.FlusherConfig {
	return flush.FlusherConfig{
		Interval:        time.Duration(c.Storage.FlushInterval),
		Timeout:         time.Duration(c.Storage.FlushTimeout),
		ShutdownTimeout: c.shutdownTimeout() / 2,
		MaxBackoff:      time.Duration(c.Storage.MaxBackoff),
		StaleAfter:      time.Duration(c.Storage.StaleAfter),
		Logger:          log,
	}
}

// accountant takes the [storage] flush keys: private mode's statistics
// go to the same database, at the same pace, as the swarm counts.
func (c *Config) accountant(log *slog.Logger) private.AccountantConfig {
	return private.AccountantConfig{
		Interval:        time.Duration(c.Storage.FlushInterval),
		Timeout:         time.Duration(c.Storage.FlushTimeout),
		ShutdownTimeout: c.shutdownTimeout() / 2,
		MaxBackoff:      time.Duration(c.Storage.MaxBackoff),
		PeerLifetime:    c.peertable().PeerLifetime,
		Logger:          log,
	}
}

// runMigrate is "chihaya -config FILE migrate": it brings the storage's
// tables to the schema this binary needs and exits. It is safe to run
// while other processes serve, and a second run changes nothing.
func runMigrate(cfg Config, stdout io.Writer) error {
	if !cfg.storageOn() {
		return errors.New("migrate: no storage configured; set storage.driver and storage.dsn in the -config file")
	}
	sc := cfg.store()
	sc.MigrateAtStart = false
	store, err := flush.Open(cfg.Storage.Driver, sc)
	if err != nil {
		return fmt.Errorf("migrate: [storage]: %w", err)
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := store.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	fmt.Fprintln(stdout, "migrate: the schema is up to date")
	return nil
}

// services are the optional parts a daemon runs beside its frontends.
type services struct {
	pool       conncache.Pool
	mirror     *conncache.Mirror
	store      flush.Store
	flusher    *flush.Flusher
	accountant *private.Accountant
	rules      *private.Source // private mode; nil when public
}

// openServices connects what cfg configures and returns the table the
// daemon serves (with the mirror's expiry hook when there is a cache) and
// the hooks for its core. Only private mode waits for its database here:
// it cannot admit anyone before it has loaded the rules.
func openServices(ctx context.Context, cfg Config, log *slog.Logger) (*peertable.Table, tracker.Hooks, *services, error) {
	s := &services{}
	var h tracker.Hooks
	tcfg := cfg.peertable()
	var mirror *conncache.Mirror // set below, before the table sweeps
	if cfg.cacheOn() {
		tcfg.OnExpire = func(ih peertable.InfoHash, p peertable.Peer) { mirror.Expired(ih, p) }
	}
	table, err := peertable.New(tcfg)
	if err != nil {
		return nil, h, nil, err
	}
	if cfg.cacheOn() {
		s.pool, err = conncache.Open(cfg.Cache.Driver, cfg.conncache(log))
		if err != nil {
			return nil, h, nil, fmt.Errorf("[cache]: %w", err)
		}
		mirror = conncache.NewMirror(s.pool, table, cfg.conncache(log))
		s.mirror = mirror
		h.Mirror, h.Remote = mirror, mirror.Remote()
	}
	if cfg.storageOn() {
		s.store, err = flush.Open(cfg.Storage.Driver, cfg.store())
		if err != nil {
			s.close()
			return nil, h, nil, fmt.Errorf("[storage]: %w", err)
		}
	}
	if cfg.Private.Enabled {
		if s.rules, err = openRules(ctx, s.store, cfg, log); err == nil {
			s.accountant, err = private.NewAccountant(s.store, cfg.accountant(log))
		}
		if err != nil {
			s.close()
			return nil, h, nil, fmt.Errorf("[private]: %w", err)
		}
		h.Auth, h.Accountant = s.rules, s.accountant
	}
	return table, h, s, nil
}

// afterRestore starts what must see the table as the snapshot left it:
// the Flusher takes the restored completed counts as already stored.
func (s *services) afterRestore(cfg Config, table *peertable.Table, log *slog.Logger) error {
	if s.store == nil {
		return nil
	}
	f, err := flush.NewFlusher(s.store, table, cfg.flusher(log))
	if err != nil {
		return fmt.Errorf("[storage]: %w", err)
	}
	s.flusher = f
	return nil
}

// run runs every service until ctx is done; each then sends what it holds
// a last time (bounded by its own timeout) before run returns.
func (s *services) run(ctx context.Context, errc chan<- error) (wait func()) {
	var fns []func(context.Context) error
	if s.mirror != nil {
		fns = append(fns, s.mirror.Run)
	}
	if s.flusher != nil {
		fns = append(fns, s.flusher.Run)
	}
	if s.accountant != nil {
		fns = append(fns, s.accountant.Run)
	}
	if s.rules != nil {
		fns = append(fns, s.rules.Run)
	}
	var wg sync.WaitGroup
	for _, f := range fns {
		wg.Go(func() { errc <- f(ctx) })
	}
	return wg.Wait
}

// sources adds what the services report to the admin listener's.
func (s *services) sources(src *admin.Sources) {
	cache := admin.Check{Name: "Redis"}
	if m := s.mirror; m != nil {
		src.Cache = m.Stats
		cache.Probe = func(context.Context) error {
			st := m.Stats()
			if !st.Healthy {
				return fmt.Errorf("failing (%d errors); last sync %v ago, %d changes pending", st.Errors, st.Lag.Round(time.Millisecond), st.Pending)
			}
			return nil
		}
	}
	storage := admin.Check{Name: "PostgreSQL"}
	if s.store != nil {
		// The Flusher is made after the snapshot is restored, later
		// than the admin listener, but before anything is served.
		src.Flush = func() flush.Stats { return s.flusher.Stats() }
		storage.Probe = func(context.Context) error {
			if err := flushHealth(s.flusher.Stats()); err != nil {
				return err
			}
			if s.accountant != nil {
				if err := flushHealth(s.accountant.Stats()); err != nil {
					return fmt.Errorf("accounting: %w", err)
				}
			}
			if s.rules != nil {
				if err := s.rules.Health(); err != nil {
					return fmt.Errorf("private rules: %w", err)
				}
			}
			return nil
		}
	}
	if s.accountant != nil {
		src.Accounting = s.accountant.Stats
	}
	if s.rules != nil {
		src.Rules = s.rules.Stats
	}
	src.Health = []admin.Check{cache, storage}
}

// flushHealth reports a flusher whose writes are failing.
func flushHealth(st flush.Stats) error {
	if st.Failing {
		return fmt.Errorf("flushes failing: oldest unwritten data %v old, %d errors so far", st.Backlog.Round(time.Second), st.Errors)
	}
	return nil
}

// close releases the connections of the services.
func (s *services) close() {
	if s.rules != nil {
		s.rules.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
}
