package main

import (
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigLoads(t *testing.T) {
	c, err := LoadConfig("../../chihaya.example.toml")
	if err != nil {
		t.Fatalf("LoadConfig(example) = %v", err)
	}
	if got := time.Duration(c.Tracker.Interval); got != 30*time.Minute {
		t.Errorf("example tracker.interval = %v, want 30m", got)
	}
	if got := c.UDP.Addrs; len(got) != 2 || got[0] != "0.0.0.0:6969" || got[1] != "[::]:6969" {
		t.Errorf("example udp.addrs = %q", got)
	}
	if got := c.HTTP.Addrs; len(got) != 2 || got[0] != "0.0.0.0:6969" || got[1] != "[::]:6969" {
		t.Errorf("example http.addrs = %q", got)
	}
	if c.HTTP.ExternalIP == nil || !*c.HTTP.ExternalIP {
		t.Errorf("example http.external_ip = %v, want true", c.HTTP.ExternalIP)
	}
}

func TestHTTPConfig(t *testing.T) {
	var c Config
	if err := decodeConfig([]byte(`[http]
trusted_proxies = ["10.1.2.3/8", "192.0.2.7", "fd00::/8"]
real_ip_header = "X-Real-IP"
external_ip = false
max_scrape = 10
full_scrape = true
full_scrape_cache = "2m"
full_scrape_every = "10m"
`), &c); err != nil {
		t.Fatal(err)
	}
	h, err := c.http(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(h.TrustedProxies, want) {
		t.Errorf("trusted proxies %v, want %v", h.TrustedProxies, want)
	}
	if !h.NoExternalIP || h.RealIPHeader != "X-Real-IP" || h.MaxScrape != 10 ||
		!h.FullScrape || h.FullScrapeCache != 2*time.Minute || h.FullScrapeEvery != 10*time.Minute {
		t.Errorf("http config %+v", h)
	}
	var zero Config
	if h, err := zero.http(nil); err != nil || h.NoExternalIP || zero.HTTP.Disabled {
		t.Errorf("zero config: http enabled %v, external ip %v, err %v; want HTTP with external ip", !zero.HTTP.Disabled, !h.NoExternalIP, err)
	}
}

// TestExampleConfigDocumentsEveryKey keeps chihaya.example.toml complete:
// a key added to Config without documenting it fails here.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../chihaya.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	example := string(b)
	var walk func(prefix string, typ reflect.Type)
	walk = func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			key := f.Tag.Get("toml")
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
				if !strings.Contains(example, "\n["+key+"]\n") {
					t.Errorf("example config lacks section [%s]", key)
				}
				walk(key+".", f.Type)
				continue
			}
			if !strings.Contains(example, "\n"+key+" = ") {
				t.Errorf("example config does not document key %s%s", prefix, key)
			}
		}
	}
	walk("", reflect.TypeFor[Config]())
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"unknown key", "[udp]\nworkerz = 2\n", "unknown key udp.workerz"},
		{"unknown section", "[htttp]\naddr = \"x\"\n", "unknown key htttp"},
		{"wrong type", "[udp]\nworkers = \"two\"\n", "udp.workers"},
		{"bad duration", "[tracker]\ninterval = \"soon\"\n", "tracker.interval"},
		{"negative workers", "[udp]\nworkers = -1\n", "udp.workers"},
		{"interval too short", "[tracker]\ninterval = \"10ms\"\n", "key tracker.interval"},
		{"min above interval", "[tracker]\ninterval = \"1m\"\nmin_interval = \"2m\"\n", "key tracker.min_interval"},
		{"lifetime too long", "[tracker]\npeer_lifetime = \"48h\"\n", "tracker.peer_lifetime"},
		{"short secret", "[udp]\nsecret = \"abc\"\n", "udp.secret"},
		{"bad level", "[log]\nlevel = \"loud\"\n", "log.level"},
		{"bad format", "[log]\nformat = \"xml\"\n", "log.format"},
		{"max packet", "[udp]\nmax_packet = 100\n", "udp.max_packet"},
		{"batch", "[udp]\nbatch = 5000\n", "udp.batch"},
		{"syntax", "[udp\n", "line 1"},
		{"lifetime below interval", "[tracker]\ninterval = \"1h\"\npeer_lifetime = \"31m\"\n", "key tracker.peer_lifetime"},
		{"udp connect rate", "[udp]\nconnect_rate = -1.0\n", "key udp.connect_rate"},
		{"udp announce burst", "[udp]\nannounce_burst = -5\n", "key udp.announce_burst"},
		{"http announce rate", "[http]\nannounce_rate = nan\n", "key http.announce_rate"},
		{"http addr", "[http]\naddrs = [\"localhost:80\"]\n", "key http.addrs"},
		{"http timeout", "[http]\nread_timeout = \"-1s\"\n", "key http.read_timeout"},
		{"http header timeout", "[http]\nread_header_timeout = \"-1s\"\n", "key http.read_header_timeout"},
		{"http header bytes", "[http]\nmax_header_bytes = 10\n", "key http.max_header_bytes"},
		{"http conns", "[http]\nmax_conns = -1\n", "key http.max_conns"},
		{"http proxies", "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n", "key http.trusted_proxies"},
		{"http header", "[http]\nreal_ip_header = \"X Real\"\n", "key http.real_ip_header"},
		{"http scrape", "[http]\nmax_scrape = 5000\n", "key http.max_scrape"},
		{"http full scrape cache", "[http]\nfull_scrape = true\nfull_scrape_cache = \"-1s\"\n", "key http.full_scrape_cache"},
		{"http full scrape every", "[http]\nfull_scrape_every = \"-1m\"\n", "key http.full_scrape_every"},
		{"http full scrape duration", "[http]\nfull_scrape_every = \"often\"\n", "http.full_scrape_every"},
		{"http external ip", "[http]\nexternal_ip = \"yes\"\n", "http.external_ip"},
		{"admin addr", "[admin]\naddr = \"localhost:6880\"\n", "key admin.addr"},
		{"snapshot dir missing", "[snapshot]\npath = \"/nonexistent-chihaya-dir/snapshot\"\n", "key snapshot.path: directory /nonexistent-chihaya-dir"},
		{"snapshot path is a directory", "[snapshot]\npath = \"/\"\n", "key snapshot.path"},
		{"admin pprof", "[admin]\npprof = 1\n", "admin.pprof"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			err := decodeConfig([]byte(tt.toml), &c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decodeConfig(%q) = %v, want an error mentioning %q", tt.toml, err, tt.want)
			}
		})
	}
}

func TestSecretIsRedacted(t *testing.T) {
	s := Secret("0123456789abcdef-very-secret")
	for _, out := range []string{s.String(), s.LogValue().String()} {
		if strings.Contains(out, "very-secret") {
			t.Errorf("secret leaked: %q", out)
		}
	}
}

// TestProductionConfigLoads keeps dist/chihaya.production.toml loading as
// the daemon's configuration changes, and its shutdown timeout inside the
// stop timeout of dist/chihaya.service.
func TestProductionConfigLoads(t *testing.T) {
	c, err := LoadConfig("../../dist/chihaya.production.toml")
	if err != nil {
		t.Fatalf("LoadConfig(production) = %v", err)
	}
	if c.Admin.Disabled || c.Admin.Addr != "127.0.0.1:6880" {
		t.Errorf("production admin = %+v, want it on loopback", c.Admin)
	}
	unit, err := os.ReadFile("../../dist/chihaya.service")
	if err != nil {
		t.Fatal(err)
	}
	var stop time.Duration
	for line := range strings.Lines(string(unit)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "TimeoutStopSec="); ok {
			if stop, err = time.ParseDuration(v); err != nil {
				t.Fatalf("TimeoutStopSec=%s: want a value with a unit, such as 30s", v)
			}
		}
	}
	if got := c.shutdownTimeout(); stop <= got {
		t.Errorf("chihaya.service TimeoutStopSec %v, want more than tracker.shutdown_timeout %v", stop, got)
	}
}

// TestRateLimitKeysReachTheServers checks the wiring of the per-source
// limits from the file to the frontends' configs.
func TestRateLimitKeysReachTheServers(t *testing.T) {
	var c Config
	src := "[udp]\nconnect_rate = 2.5\nconnect_burst = 4\nannounce_rate = 1\nannounce_burst = 3\n" +
		"[http]\nannounce_rate = 0.5\nannounce_burst = 2\n"
	if err := decodeConfig([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	u := c.udp(nil)
	if u.ConnectRate != 2.5 || u.ConnectBurst != 4 || u.AnnounceRate != 1 || u.AnnounceBurst != 3 {
		t.Errorf("udp config limits = %v/%d, %v/%d; want 2.5/4, 1/3", u.ConnectRate, u.ConnectBurst, u.AnnounceRate, u.AnnounceBurst)
	}
	h, err := c.http(nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.AnnounceRate != 0.5 || h.AnnounceBurst != 2 {
		t.Errorf("http config limit = %v/%d, want 0.5/2", h.AnnounceRate, h.AnnounceBurst)
	}
}

func TestPeerLifetimeFollowsInterval(t *testing.T) {
	var c Config
	if err := decodeConfig([]byte("[tracker]\ninterval = \"2h\"\n"), &c); err != nil {
		t.Fatal(err)
	}
	if got := c.peertable().PeerLifetime; got != 2*time.Hour+time.Minute {
		t.Errorf("peer lifetime with interval 2h = %v, want 2h1m", got)
	}
}
