package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/chihaya/chihaya/admin"
	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/udp"
)

// Config is the daemon's TOML file. Every key is optional; a zero value
// means the default that chihaya.example.toml documents. The file is read
// strictly: an unknown key or a value of the wrong type stops start-up.
type Config struct {
	Log      LogConfig      `toml:"log"`
	Tracker  TrackerConfig  `toml:"tracker"`
	UDP      UDPConfig      `toml:"udp"`
	HTTP     HTTPConfig     `toml:"http"`
	Admin    AdminConfig    `toml:"admin"`
	Snapshot SnapshotConfig `toml:"snapshot"`
	Cache    CacheConfig    `toml:"cache"`
	Storage  StorageConfig  `toml:"storage"`
	Private  PrivateConfig  `toml:"private"`
}

// LogConfig selects how much the daemon says and in which format.
type LogConfig struct {
	Level  string `toml:"level"`  // debug, info, warn, error; "" means info
	Format string `toml:"format"` // text or json; "" means text
}

// TrackerConfig is the announce policy shared by every frontend.
type TrackerConfig struct {
	Interval       Duration `toml:"interval"`
	MinInterval    Duration `toml:"min_interval"`
	DefaultNumWant int      `toml:"default_numwant"`
	MaxNumWant     int      `toml:"max_numwant"`
	PeerLifetime   Duration `toml:"peer_lifetime"`
	// ShutdownTimeout bounds a graceful stop. Zero means 10 seconds.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
}

// UDPConfig is the BEP 15 frontend.
type UDPConfig struct {
	// Disabled switches the UDP frontend off.
	Disabled        bool     `toml:"disabled"`
	Addrs           []string `toml:"addrs"`
	Workers         int      `toml:"workers"`
	Secret          Secret   `toml:"secret"`
	ConnIDGrace     Duration `toml:"conn_id_grace"`
	MaxPacket       int      `toml:"max_packet"`
	AllowIPOverride bool     `toml:"allow_ip_override"`
	Batch           int      `toml:"batch"`
	ConnectRate     float64  `toml:"connect_rate"`
	ConnectBurst    int      `toml:"connect_burst"`
	AnnounceRate    float64  `toml:"announce_rate"`
	AnnounceBurst   int      `toml:"announce_burst"`
}

// limits are the [udp] rate limits.
func (u *UDPConfig) limits() tracker.Limits {
	return tracker.Limits{ConnectRate: u.ConnectRate, ConnectBurst: u.ConnectBurst, AnnounceRate: u.AnnounceRate, AnnounceBurst: u.AnnounceBurst}
}

// HTTPConfig is the HTTP announce and scrape frontend (httpcompat).
type HTTPConfig struct {
	// Disabled switches the HTTP frontend off.
	Disabled          bool     `toml:"disabled"`
	Addrs             []string `toml:"addrs"`
	ReadHeaderTimeout Duration `toml:"read_header_timeout"`
	ReadTimeout       Duration `toml:"read_timeout"`
	WriteTimeout      Duration `toml:"write_timeout"`
	IdleTimeout       Duration `toml:"idle_timeout"`
	MaxHeaderBytes    int      `toml:"max_header_bytes"`
	MaxConns          int      `toml:"max_conns"`
	// TrustedProxies are prefixes ("10.0.0.0/8") or single addresses.
	TrustedProxies []string `toml:"trusted_proxies"`
	RealIPHeader   string   `toml:"real_ip_header"`
	AllowIPParam   bool     `toml:"allow_ip_param"`
	AnnounceRate   float64  `toml:"announce_rate"`
	AnnounceBurst  int      `toml:"announce_burst"`
	// ExternalIP sends BEP 24's "external ip"; unset means true.
	ExternalIP *bool `toml:"external_ip"`
	MaxScrape  int   `toml:"max_scrape"`
	FullScrape bool  `toml:"full_scrape"`
	// FullScrapeCache and FullScrapeEvery matter only with FullScrape.
	FullScrapeCache Duration `toml:"full_scrape_cache"`
	FullScrapeEvery Duration `toml:"full_scrape_every"`
}

// limits are the [http] rate limits; HTTP has no connect step.
func (h *HTTPConfig) limits() tracker.Limits {
	return tracker.Limits{AnnounceRate: h.AnnounceRate, AnnounceBurst: h.AnnounceBurst}
}

// AdminConfig is the operations listener: metrics, health, profiles.
type AdminConfig struct {
	// Disabled switches the admin listener off; it is on by default, on
	// loopback only.
	Disabled bool `toml:"disabled"`
	// Addr is an IP literal and port; "" means 127.0.0.1:6880.
	Addr  string `toml:"addr"`
	Pprof bool   `toml:"pprof"`
}

// SnapshotConfig keeps completed counts (and optionally peers) across
// graceful restarts in a file.
type SnapshotConfig struct {
	// Path is the snapshot file, read at start and written at a graceful
	// stop; "" means no snapshot. Its directory must exist.
	Path string `toml:"path"`
	// Peers also keeps the live peers, not only completed counts.
	Peers bool `toml:"peers"`
}

// Duration is a time.Duration written as a Go duration string ("30m").
type Duration time.Duration

// UnmarshalText parses a duration such as "90s" or "30m".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"90s\" or \"30m\", got %q", b)
	}
	*d = Duration(v)
	return nil
}

// Secret is key material that must never reach a log.
type Secret string

// LogValue redacts the secret.
func (s Secret) LogValue() slog.Value {
	if s == "" {
		return slog.StringValue("")
	}
	return slog.StringValue("[redacted]")
}

// String redacts the secret so that fmt never prints it either.
func (s Secret) String() string { return s.LogValue().String() }

// LoadConfig reads and checks the TOML file at path. An empty path means
// no file: every default.
func LoadConfig(path string) (Config, error) {
	var c Config
	if path == "" {
		return c, c.check()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if err := decodeConfig(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

func decodeConfig(b []byte, c *Config) error {
	d := toml.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(c); err != nil {
		var strict *toml.StrictMissingError
		var derr *toml.DecodeError
		switch {
		case errors.As(err, &strict):
			keys := make([]string, len(strict.Errors))
			for i := range strict.Errors {
				keys[i] = strings.Join(strict.Errors[i].Key(), ".")
			}
			return fmt.Errorf("unknown key %s: remove it or check its spelling against chihaya.example.toml", strings.Join(keys, ", "))
		case errors.As(err, &derr):
			row, col := derr.Position()
			key := strings.Join(derr.Key(), ".")
			if key == "" {
				return fmt.Errorf("line %d column %d: %s", row, col, derr.Error())
			}
			return fmt.Errorf("key %s (line %d): %s", key, row, derr.Error())
		}
		return err
	}
	return c.check()
}

// check builds every package's config once, so that a bad value is
// reported at start-up with its key rather than when a server starts.
func (c *Config) check() error {
	if _, err := c.logHandlerOptions(); err != nil {
		return err
	}
	if c.Tracker.ShutdownTimeout < 0 {
		return fmt.Errorf("key tracker.shutdown_timeout: must not be negative")
	}
	table, err := peertable.New(c.peertable())
	if err != nil {
		return fmt.Errorf("key tracker.peer_lifetime: %w", err)
	}
	if l := time.Duration(c.Tracker.PeerLifetime); l != 0 && l < c.interval() {
		return fmt.Errorf("key tracker.peer_lifetime: %v is shorter than tracker.interval (%v), so peers would be dropped between announces; make it a little longer than the interval, or leave it out (interval plus a minute)", l, c.interval())
	}
	if _, err := tracker.New(c.tracker(), table); err != nil {
		return fmt.Errorf("key %s: %w", trackerKey(err), err)
	}
	if c.UDP.Workers < 0 {
		return fmt.Errorf("key udp.workers: must not be negative (0 means one per CPU)")
	}
	if c.UDP.Batch < 0 || c.UDP.Batch > 1024 {
		return fmt.Errorf("key udp.batch: %d out of range (0 means 16, at most 1024)", c.UDP.Batch)
	}
	if c.UDP.MaxPacket != 0 && (c.UDP.MaxPacket < 576 || c.UDP.MaxPacket > 65507) {
		return fmt.Errorf("key udp.max_packet: %d out of range (576 to 65507; 0 means 1500)", c.UDP.MaxPacket)
	}
	if n := len(c.UDP.Secret); n != 0 && n < 16 {
		return fmt.Errorf("key udp.secret: %d bytes is too short; use at least 16 random characters, or leave it empty for a random secret per start", n)
	}
	if err := checkLimits("udp", reflect.TypeFor[UDPConfig](), c.UDP.limits()); err != nil {
		return err
	}
	if err := checkLimits("http", reflect.TypeFor[HTTPConfig](), c.HTTP.limits()); err != nil {
		return err
	}
	if _, err := c.http(nil); err != nil {
		return err
	}
	if _, err := c.admin(nil); err != nil {
		return err
	}
	if err := c.checkServices(); err != nil {
		return err
	}
	return c.checkSnapshot()
}

// checkLimits checks a section's per-source rate limits as the frontends
// will (tracker.Limits.Check) and names the key at fault: the field of
// section's struct with the same Go name as the Limits field.
func checkLimits(section string, fields reflect.Type, l tracker.Limits) error {
	var le *tracker.LimitError
	if err := l.Check(); !errors.As(err, &le) {
		return err // nil, or not a field's fault
	}
	key := section
	if f, ok := fields.FieldByName(le.Field); ok {
		key += "." + f.Tag.Get("toml")
	}
	return fmt.Errorf("key %s: %s", key, le.Reason)
}

// checkSnapshot makes sure that the snapshot can be written where
// snapshot.path says: its directory exists, and it is not a directory.
func (c *Config) checkSnapshot() error {
	p := c.Snapshot.Path
	if p == "" {
		return nil
	}
	dir := filepath.Dir(p)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("key snapshot.path: directory %s: %w", dir, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("key snapshot.path: %s is not a directory", dir)
	}
	if fi, err := os.Stat(p); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("key snapshot.path: %s exists and is not a regular file", p)
	}
	return nil
}

// trackerKey names the [tracker] key behind an error from tracker.New,
// which names the field of tracker.Config (the same Go name as here).
func trackerKey(err error) string {
	for f := range reflect.TypeFor[TrackerConfig]().Fields() {
		if strings.HasPrefix(err.Error(), "tracker: "+f.Name+" ") {
			return "tracker." + f.Tag.Get("toml")
		}
	}
	return "in [tracker]"
}

func (c *Config) logHandlerOptions() (*slog.HandlerOptions, error) {
	var lvl slog.Level
	switch strings.ToLower(c.Log.Level) {
	case "", "info":
		lvl = slog.LevelInfo
	case "debug":
		lvl = slog.LevelDebug
	case "warn":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		return nil, fmt.Errorf("key log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return nil, fmt.Errorf("key log.format: %q is not text or json", c.Log.Format)
	}
	return &slog.HandlerOptions{Level: lvl}, nil
}

// peertable derives the table's config. An unset peer lifetime follows
// the interval (plus a minute of slack), so that raising the interval
// alone never drops clients that announce on time.
func (c *Config) peertable() peertable.Config {
	lifetime := time.Duration(c.Tracker.PeerLifetime)
	if lifetime == 0 {
		lifetime = c.interval() + time.Minute
	}
	return peertable.Config{PeerLifetime: lifetime}
}

// interval is tracker.interval with its default filled in.
func (c *Config) interval() time.Duration {
	if c.Tracker.Interval == 0 {
		return 30 * time.Minute
	}
	return time.Duration(c.Tracker.Interval)
}

func (c *Config) tracker() tracker.Config {
	return tracker.Config{
		Interval:       time.Duration(c.Tracker.Interval),
		MinInterval:    time.Duration(c.Tracker.MinInterval),
		DefaultNumWant: c.Tracker.DefaultNumWant,
		MaxNumWant:     c.Tracker.MaxNumWant,
	}
}

func (c *Config) udp(log *slog.Logger) udp.Config {
	return udp.Config{
		Addrs:           c.UDP.Addrs,
		Workers:         c.UDP.Workers,
		Secret:          []byte(c.UDP.Secret),
		ConnIDGrace:     time.Duration(c.UDP.ConnIDGrace),
		MaxPacket:       c.UDP.MaxPacket,
		AllowIPOverride: c.UDP.AllowIPOverride,
		Batch:           c.UDP.Batch,
		ConnectRate:     c.UDP.ConnectRate,
		ConnectBurst:    c.UDP.ConnectBurst,
		AnnounceRate:    c.UDP.AnnounceRate,
		AnnounceBurst:   c.UDP.AnnounceBurst,
		Logger:          log,
	}
}

// http builds the HTTP frontend's config, or an error naming the [http]
// key at fault.
func (c *Config) http(log *slog.Logger) (httpcompat.Config, error) {
	h := &c.HTTP
	cfg := httpcompat.Config{
		Addrs:             h.Addrs,
		ReadHeaderTimeout: time.Duration(h.ReadHeaderTimeout),
		ReadTimeout:       time.Duration(h.ReadTimeout),
		WriteTimeout:      time.Duration(h.WriteTimeout),
		IdleTimeout:       time.Duration(h.IdleTimeout),
		// Half the daemon's bound: the rest is for the other parts.
		ShutdownTimeout: c.shutdownTimeout() / 2,
		MaxHeaderBytes:  h.MaxHeaderBytes,
		MaxConns:        h.MaxConns,
		RealIPHeader:    h.RealIPHeader,
		AllowIPParam:    h.AllowIPParam,
		AnnounceRate:    h.AnnounceRate,
		AnnounceBurst:   h.AnnounceBurst,
		NoExternalIP:    h.ExternalIP != nil && !*h.ExternalIP,
		MaxScrape:       h.MaxScrape,
		FullScrape:      h.FullScrape,
		FullScrapeCache: time.Duration(h.FullScrapeCache),
		FullScrapeEvery: time.Duration(h.FullScrapeEvery),
		Logger:          log,
	}
	for _, s := range h.TrustedProxies {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return cfg, fmt.Errorf("key http.trusted_proxies: %q is not a prefix such as \"10.0.0.0/8\" or an address", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, p.Masked())
	}
	if err := cfg.Check(); err != nil {
		return cfg, fmt.Errorf("key %s: %w", httpKey(err), err)
	}
	return cfg, nil
}

// httpKey names the [http] key behind an error from httpcompat.Config.Check,
// which names the field of httpcompat.Config (the same Go name as here).
func httpKey(err error) string {
	for f := range reflect.TypeFor[HTTPConfig]().Fields() {
		rest, ok := strings.CutPrefix(err.Error(), "httpcompat: "+f.Name)
		if ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "[")) {
			return "http." + f.Tag.Get("toml")
		}
	}
	return "in [http]"
}

// admin builds the admin listener's config, or an error naming the
// [admin] key at fault.
func (c *Config) admin(log *slog.Logger) (admin.Config, error) {
	cfg := admin.Config{Addr: c.Admin.Addr, Pprof: c.Admin.Pprof, Logger: log}
	if err := cfg.Check(); err != nil {
		return cfg, fmt.Errorf("key admin.addr: %w", err)
	}
	return cfg, nil
}

func (c *Config) shutdownTimeout() time.Duration {
	if c.Tracker.ShutdownTimeout == 0 {
		return 10 * time.Second
	}
	return time.Duration(c.Tracker.ShutdownTimeout)
}
