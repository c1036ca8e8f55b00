package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/internal/testenv"
)

// servicesConfig is an HTTP-only daemon on loopback with the cache and
// the storage pointed at the test's Redis prefix and database.
func servicesConfig(redisAddr, prefix, dsn string) Config {
	var cfg Config
	cfg.UDP.Disabled = true
	cfg.HTTP.Addrs = []string{"127.0.0.1:0"}
	cfg.Admin.Disabled = true
	cfg.Tracker.ShutdownTimeout = Duration(10 * time.Second)
	cfg.Cache.Driver = "redis"
	cfg.Cache.Addrs = []string{redisAddr}
	cfg.Cache.KeyPrefix = prefix
	cfg.Storage.Driver = "postgres"
	cfg.Storage.DSN = Secret(dsn)
	cfg.Storage.FlushInterval = Duration(200 * time.Millisecond)
	cfg.Storage.MigrateAtStart = true
	return cfg
}

// freeLoopbackAddr returns a TCP address on 127.0.0.1 that was free a
// moment ago, for a listener whose address the test must know.
func freeLoopbackAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomPrefix(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "chihaya-test-" + hex.EncodeToString(b) + ":"
}

// announceHTTP announces ih for the peer at port (left 0 makes it a
// seeder) and returns the decoded reply.
func announceHTTP(t *testing.T, base string, ih [20]byte, port int, left int, event string) map[string]any {
	t.Helper()
	q := fmt.Sprintf("/announce?info_hash=%s&peer_id=-TE0001-%012d&port=%d&uploaded=0&downloaded=0&left=%d&compact=1&numwant=50",
		url.QueryEscape(string(ih[:])), port, port, left)
	if event != "" {
		q += "&event=" + event
	}
	v, err := bencodetest.Decode([]byte(get(t, base+q)))
	if err != nil {
		t.Fatalf("announce reply: %v", err)
	}
	d, ok := v.(map[string]any)
	if !ok || d["failure reason"] != nil {
		t.Fatalf("announce reply %v", v)
	}
	return d
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last state: %s", what, within, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTwoDaemonsShareSwarms runs two daemons over one Redis and one
// PostgreSQL: a peer announced to one is returned and counted by the
// other, the database counts both, and a graceful stop takes a daemon's
// counts out of the database.
func TestTwoDaemonsShareSwarms(t *testing.T) {
	redisAddr := testenv.RedisAddr(t)
	dsn := testenv.Database(t)
	prefix := randomPrefix(t)
	t.Cleanup(func() { dropRedisPrefix(t, redisAddr, prefix) }) // after the daemons stop
	cfg := servicesConfig(redisAddr, prefix, dsn)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	baseA, stopA := startDaemon(t, cfg, log)
	cfgB := cfg
	cfgB.Admin.Disabled = false
	cfgB.Admin.Addr = freeLoopbackAddr(t)
	adminB := cfgB.Admin.Addr
	baseB, stopB := startDaemon(t, cfgB, log)
	stoppedA := false
	defer func() {
		if !stoppedA {
			stopA()
		}
		stopB()
	}()

	ih := [20]byte{0xc0, 0xff, 0xee}
	announceHTTP(t, baseA, ih, 7001, 0, "started") // a seeder on A
	eventually(t, time.Second, "B returns A's seeder", func() (bool, string) {
		d := announceHTTP(t, baseB, ih, 7002, 100, "started") // a leecher on B
		peers, _ := d["peers"].(string)
		return d["complete"] == int64(1) && len(peers) == 6, fmt.Sprint(d)
	})
	eventually(t, time.Second, "A counts B's leecher", func() (bool, string) {
		d := announceHTTP(t, baseA, ih, 7001, 0, "")
		return d["incomplete"] == int64(1), fmt.Sprint(d)
	})

	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	stats := func() (seeders, leechers int64, found bool) {
		err := conn.QueryRow(context.Background(),
			"SELECT seeders, leechers FROM chihaya_torrent_stats WHERE info_hash = $1", ih[:]).Scan(&seeders, &leechers)
		return seeders, leechers, err == nil
	}
	// Each process writes the peers announced to it; the view sums them.
	eventually(t, 5*time.Second, "chihaya_torrent_stats counts both processes", func() (bool, string) {
		s, l, ok := stats()
		return ok && s == 1 && l == 1, fmt.Sprint(s, l, ok)
	})

	// B's admin listener reports the services: metrics and health.
	admin := "http://" + adminB + "/"
	eventually(t, 5*time.Second, "B's metrics show a healthy cache and a swarm flush", func() (bool, string) {
		m := get(t, admin+"metrics")
		ok := strings.Contains(m, "chihaya_cache_healthy 1") &&
			strings.Contains(m, `chihaya_flush_flushes_total{kind="swarms"}`) &&
			!strings.Contains(m, `chihaya_flush_flushes_total{kind="swarms"} 0`)
		return ok, "metrics lack chihaya_cache_healthy 1 or a swarm flush"
	})
	if page := get(t, admin); !strings.Contains(page, "Redis") || !strings.Contains(page, "PostgreSQL") {
		t.Errorf("status page lacks the Redis and PostgreSQL rows")
	}

	if err := stopA(); err != nil {
		t.Fatalf("stopping A: %v", err)
	}
	stoppedA = true
	eventually(t, 5*time.Second, "A's seeder leaves the database at its graceful stop", func() (bool, string) {
		s, l, ok := stats()
		return ok && s == 0 && l == 1, fmt.Sprint(s, l, ok)
	})
}

// TestMigrateCommand runs "chihaya -config FILE migrate" twice against a
// fresh database: the first run creates the tracker's tables, the second
// changes nothing. Without storage it says what to configure.
func TestMigrateCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run([]string{"migrate"}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "storage.driver") {
		t.Fatalf("migrate without storage = %v, want an error naming storage.driver", err)
	}
	dsn := testenv.Database(t)
	path := filepath.Join(t.TempDir(), "chihaya.toml")
	if err := os.WriteFile(path, fmt.Appendf(nil, "[storage]\ndriver = \"postgres\"\ndsn = %q\n", dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		stdout.Reset()
		if err := run([]string{"-config", path, "migrate"}, &stdout, &stderr); err != nil {
			t.Fatalf("migrate run %d: %v", i+1, err)
		}
		if !strings.Contains(stdout.String(), "up to date") {
			t.Errorf("migrate run %d printed %q", i+1, stdout.String())
		}
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM chihaya_torrent_stats").Scan(&n); err != nil {
		t.Fatalf("after migrate, chihaya_torrent_stats: %v", err)
	}
}
