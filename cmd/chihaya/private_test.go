package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/udp"
)

const (
	passkey1 = "0123456789abcdef0123456789abcdef"
	passkey2 = "fedcba9876543210fedcba9876543210"
)

// privateDB is a test database with the sample web application schema,
// one user (1, passkey1) and one torrent (10, ih).
func privateDB(t *testing.T, ih [20]byte) (dsn string, db *pgx.Conn) {
	t.Helper()
	dsn = testenv.Database(t)
	ctx := context.Background()
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	schema, err := os.ReadFile("../../flush/schema/webapp.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, string(schema)); err != nil {
		t.Fatalf("webapp.sql: %v", err)
	}
	mustExec(t, db, "INSERT INTO users (id, passkey) VALUES (1, $1)", passkey1)
	mustExec(t, db, "INSERT INTO torrents (id, info_hash) VALUES (10, $1)", ih[:])
	return dsn, db
}

func mustExec(t *testing.T, db *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := db.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// privateAnnounce announces over HTTP with a passkey and returns the
// failure reason ("" when admitted).
func privateAnnounce(t *testing.T, base, key string, ih [20]byte, port, uploaded int, event string) string {
	t.Helper()
	path := "/" + key + "/announce"
	if key == "" {
		path = "/announce"
	}
	q := fmt.Sprintf("%s?info_hash=%s&peer_id=-TE0001-%012d&port=%d&uploaded=%d&downloaded=0&left=100&key=7&event=%s",
		path, url.QueryEscape(string(ih[:])), port, port, uploaded, event)
	v, err := bencodetest.Decode([]byte(get(t, base+q)))
	if err != nil {
		t.Fatalf("announce reply: %v", err)
	}
	d, _ := v.(map[string]any)
	reason, _ := d["failure reason"].(string)
	return reason
}

// udpAnnounce sends one BEP 15 announce carrying urlData as BEP 41 URL
// data and returns the error message of an error reply, or "".
func udpAnnounce(t *testing.T, addr string, ih [20]byte, urlData string) string {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	c.Write(udp.AppendConnect(nil, udp.ConnectRequest{TxID: 1}))
	n, err := c.Read(buf)
	if err != nil || n < 16 {
		t.Fatalf("connect reply: %d bytes, %v", n, err)
	}
	req := udp.AnnounceRequest{
		ConnID:   binary.BigEndian.Uint64(buf[8:16]),
		TxID:     2,
		InfoHash: ih,
		PeerID:   [20]byte([]byte("-TE0001-udp000000001")),
		Event:    peertable.EventStarted,
		Key:      9,
		NumWant:  -1,
		Port:     7999,
		URLData:  []byte(urlData),
	}
	c.Write(udp.AppendAnnounce(nil, &req))
	n, err = c.Read(buf)
	if err != nil || n < 8 {
		t.Fatalf("announce reply: %d bytes, %v", n, err)
	}
	if binary.BigEndian.Uint32(buf[:4]) == 3 {
		return string(buf[8:n])
	}
	return ""
}

// TestPrivateMode runs the daemon in private mode against the sample web
// application schema: refusals over HTTP and UDP name their reason, a
// user inserted while it runs may announce at once, a disabled one is
// refused, and uploaded bytes reach the user's row as deltas of the
// reported totals, the last ones in the final flush of a graceful stop.
// (The Accountant's own tests cover a client announcing once per address
// family and a hybrid torrent under both hashes.)
func TestPrivateMode(t *testing.T) {
	ih := [20]byte{0xab, 0xcd}
	dsn, db := privateDB(t, ih)
	var cfg Config
	cfg.UDP.Addrs = []string{"127.0.0.1:0"}
	cfg.UDP.Workers = 1
	cfg.HTTP.Addrs = []string{"127.0.0.1:0"}
	cfg.Admin.Disabled = true
	cfg.Storage.Driver = "postgres"
	cfg.Storage.DSN = Secret(dsn)
	cfg.Storage.FlushInterval = Duration(200 * time.Millisecond)
	cfg.Storage.MigrateAtStart = true
	cfg.Private.Enabled = true
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	d, err := start(cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	stop := runDaemon(t, d)
	base := "http://" + d.httpAddrs()[0].String()
	udpAddr := d.udpAddrs()[0].String()

	unknown := [20]byte{0xee}
	for _, tc := range []struct {
		name, key string
		ih        [20]byte
		want      string
	}{
		{"admitted", passkey1, ih, ""},
		{"unknown passkey", passkey2, ih, "unknown passkey"},
		{"unregistered torrent", passkey1, unknown, "torrent not registered"},
	} {
		if got := privateAnnounce(t, base, tc.key, tc.ih, 7001, 0, "started"); got != tc.want {
			t.Errorf("HTTP %s: failure %q, want %q", tc.name, got, tc.want)
		}
		if got := udpAnnounce(t, udpAddr, tc.ih, "/"+tc.key+"/announce"); got != tc.want {
			t.Errorf("UDP %s: error %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := privateAnnounce(t, base, "", ih, 7001, 0, "started"); !strings.Contains(got, "passkey") {
		t.Errorf("HTTP without passkey: failure %q, want one about the passkey", got)
	}

	// The web application adds a user: admitted within a second.
	mustExec(t, db, "INSERT INTO users (id, passkey) VALUES (2, $1)", passkey2)
	eventually(t, time.Second, "a new user is admitted", func() (bool, string) {
		got := privateAnnounce(t, base, passkey2, ih, 7002, 0, "started")
		return got == "", got
	})
	mustExec(t, db, "UPDATE users SET enabled = false WHERE id = 2")
	eventually(t, time.Second, "a disabled user is refused", func() (bool, string) {
		got := privateAnnounce(t, base, passkey2, ih, 7002, 0, "")
		return got == "account disabled", got
	})

	// User 1 reports a total of 1000 bytes uploaded, twice: credited once.
	privateAnnounce(t, base, passkey1, ih, 7001, 1000, "")
	privateAnnounce(t, base, passkey1, ih, 7001, 1000, "")
	uploaded := func() (n int64) {
		db.QueryRow(context.Background(), "SELECT uploaded FROM chihaya_user_torrents WHERE user_id = 1 AND torrent_id = 10").Scan(&n)
		return n
	}
	eventually(t, 5*time.Second, "uploaded bytes are flushed", func() (bool, string) {
		n := uploaded()
		return n == 1000, fmt.Sprint(n)
	})
	privateAnnounce(t, base, passkey1, ih, 7001, 1500, "")
	if err := stop(); err != nil { // the last 500 bytes go out in the final flush
		t.Errorf("run: %v", err)
	}
	if n := uploaded(); n != 1500 {
		t.Errorf("after a graceful stop, user 1 uploaded %d bytes, want 1500", n)
	}
}

// publicOnlyStore is the Store of a driver that can keep statistics but
// cannot serve private mode: it is not a private.RulesLoader.
type publicOnlyStore struct{ flush.Store }

func (publicOnlyStore) Close() error { return nil }

type publicOnlyDriver struct{}

func (publicOnlyDriver) Open(flush.StoreConfig) (flush.Store, error) { return publicOnlyStore{}, nil }

// TestPrivateModeNeedsARulesDriver: private mode on a storage driver that
// cannot serve rules stops start-up with a message naming the key and the
// driver, before anything is served.
func TestPrivateModeNeedsARulesDriver(t *testing.T) {
	if !slices.Contains(flush.Drivers(), "public-only-test") { // -count > 1 runs this again
		flush.Register("public-only-test", publicOnlyDriver{})
	}
	var cfg Config
	cfg.UDP.Addrs = []string{"127.0.0.1:0"}
	cfg.HTTP.Addrs = []string{"127.0.0.1:0"}
	cfg.Admin.Disabled = true
	cfg.Storage.Driver = "public-only-test"
	cfg.Storage.DSN = "unused"
	cfg.Private.Enabled = true
	if err := cfg.check(); err != nil {
		t.Fatalf("check: %v (the capability is known only once the store is open)", err)
	}
	d, err := start(cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		d.close()
		t.Fatal("start succeeded in private mode on a driver that cannot serve rules")
	}
	if msg := err.Error(); !strings.Contains(msg, "storage.driver") || !strings.Contains(msg, `"public-only-test"`) || !strings.Contains(msg, "private mode") {
		t.Errorf("start = %v, want an error naming storage.driver, the driver and private mode", err)
	}
}
