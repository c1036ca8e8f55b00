package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/internal/testenv"
)

// The fault matrix of the README ("Fault matrix" under Operations): each
// test runs daemons in private mode over the sample web application
// schema, with [cache] redis, and their Redis and PostgreSQL behind
// testenv proxies that the test cuts or slows. Scripted clients report
// known totals, and a model of the Accountant's rules (flush's doc.go)
// says exactly which rows the database must end with.

// faultIH is the one registered torrent (id 10) of every fault test.
var faultIH = [20]byte{0xfa, 0x17, 0x5e}

// faultEnv is one test's database, Redis key prefix and the proxies its
// daemons reach them through.
type faultEnv struct {
	t     *testing.T
	db    *pgx.Conn // direct, never through the proxy
	redis *testenv.Proxy
	pg    *testenv.Proxy
	cfg   Config
}

func newFaultEnv(t *testing.T) *faultEnv {
	t.Helper()
	redisAddr := testenv.RedisAddr(t)
	dsn, db := privateDB(t, faultIH)
	mustExec(t, db, "INSERT INTO users (id, passkey) VALUES (2, $1)", passkey2)

	pcfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pg := testenv.NewProxy(t, net.JoinHostPort(pcfg.Host, fmt.Sprint(pcfg.Port)))
	proxied, err := viaProxy(dsn, pg.Addr())
	if err != nil {
		t.Fatal(err)
	}
	rp := testenv.NewProxy(t, redisAddr)
	prefix := randomPrefix(t)
	t.Cleanup(func() { dropRedisPrefix(t, redisAddr, prefix) })

	var cfg Config
	cfg.UDP.Addrs = []string{"127.0.0.1:0"}
	cfg.UDP.Workers = 1
	cfg.HTTP.Addrs = []string{"127.0.0.1:0"}
	cfg.Admin.Disabled = true
	cfg.Tracker.ShutdownTimeout = Duration(20 * time.Second)
	cfg.Cache.Driver = "redis"
	cfg.Cache.Addrs = []string{rp.Addr()}
	cfg.Cache.KeyPrefix = prefix
	cfg.Cache.Timeout = Duration(time.Second)
	cfg.Storage.Driver = "postgres"
	cfg.Storage.DSN = Secret(proxied)
	cfg.Storage.FlushInterval = Duration(200 * time.Millisecond)
	cfg.Storage.MaxBackoff = Duration(500 * time.Millisecond)
	// Long enough that a process's counts stay in chihaya_torrent_stats
	// through the outages below, so the view can be compared as a whole.
	cfg.Storage.StaleAfter = Duration(time.Minute)
	cfg.Storage.MigrateAtStart = true
	cfg.Private.Enabled = true
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	return &faultEnv{t: t, db: db, redis: rp, pg: pg, cfg: cfg}
}

// viaProxy returns dsn with its host and port replaced by addr's.
func viaProxy(dsn, addr string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Host = addr
		return u.String(), nil
	}
	return dsn + " host=" + host + " port=" + port, nil // the last setting wins
}

// dropRedisPrefix deletes the keys of one test.
func dropRedisPrefix(t *testing.T, addr, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scanning Redis keys %s*: %v", prefix, err)
		return
	}
	if len(keys) > 0 {
		if err := c.Del(ctx, keys...).Err(); err != nil {
			t.Errorf("deleting Redis keys %s*: %v", prefix, err)
		}
	}
}

// faultDaemon is one running daemon of a fault test.
type faultDaemon struct {
	d    *daemon
	http string // host:port
	udp  string // host:port
	stop func() error
}

// start starts a daemon; Cleanup stops it if the test has not.
func (e *faultEnv) start() *faultDaemon {
	t := e.t
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	d, err := start(e.cfg, log)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	stop := runDaemon(t, d)
	return &faultDaemon{d: d, http: d.httpAddrs()[0].String(), udp: d.udpAddrs()[0].String(), stop: stop}
}

// faultClient is one BitTorrent client session on one daemon, over HTTP
// or UDP, with a model of what the Accountant and the peer table make of
// the announces the daemon acknowledged.
type faultClient struct {
	d      *faultDaemon
	user   int
	key    string // passkey
	port   int    // announced port; also identifies the peer in replies
	udp    bool
	peerID [20]byte

	// Reported totals for the next announce.
	up, down, left uint64

	// The model, updated by acknowledged announces only.
	base             bool   // the Accountant holds a baseline
	baseUp, baseDown uint64 // the totals of the last acknowledged announce
	snatched         bool
	credUp, credDown uint64 // bytes the database must have for this session
	snatches         int
	live, seeder     bool // in the daemon's table
	completed        int  // completed downloads the table counted

	// What the last reply said.
	lastSeeders, lastLeechers int
	lastPeers                 []int // ports, sorted

	httpc  *http.Client
	conn   net.Conn // UDP, once connected
	connID uint64
	tx     uint32
}

func (e *faultEnv) client(d *faultDaemon, user, port int, udp bool, left uint64) *faultClient {
	key := passkey1
	if user == 2 {
		key = passkey2
	}
	c := &faultClient{d: d, user: user, key: key, port: port, udp: udp, left: left,
		httpc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	copy(c.peerID[:], fmt.Sprintf("-TE0001-%012d", port))
	e.t.Cleanup(func() {
		if c.conn != nil {
			c.conn.Close()
		}
	})
	return c
}

// do announces with the client's current totals; event is "", "started",
// "completed" or "stopped". The model follows only if the daemon
// answered without a failure.
func (c *faultClient) do(event string) error {
	var err error
	if c.udp {
		err = c.announceUDP(event)
	} else {
		err = c.announceHTTP(event)
	}
	if err != nil {
		return err
	}
	c.acked(event)
	return nil
}

// must announces and fails the test if the daemon does not answer.
func (c *faultClient) must(t *testing.T, event string) {
	t.Helper()
	if err := c.do(event); err != nil {
		proto := "HTTP"
		if c.udp {
			proto = "UDP"
		}
		t.Fatalf("%s announce (port %d, event %q): %v", proto, c.port, event, err)
	}
}

// acked applies the Accountant's rules (flush's doc.go) and the peer
// table's to an acknowledged announce.
func (c *faultClient) acked(event string) {
	started := event == "started"
	credit := func(last, reported uint64) uint64 {
		switch {
		case reported >= last:
			return reported - last
		case started:
			return reported
		}
		return 0
	}
	switch {
	case c.base:
		c.credUp += credit(c.baseUp, c.up)
		c.credDown += credit(c.baseDown, c.down)
	case started:
		c.credUp += c.up
		c.credDown += c.down
	}
	if event == "completed" && c.left == 0 && !c.snatched {
		c.snatched = true
		c.snatches++
	}
	c.base, c.baseUp, c.baseDown = event != "stopped", c.up, c.down
	if event == "completed" && c.left == 0 && !(c.live && c.seeder) {
		c.completed++
	}
	c.live, c.seeder = event != "stopped", c.left == 0
}

func (c *faultClient) announceHTTP(event string) error {
	q := fmt.Sprintf("http://%s/%s/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=%d&downloaded=%d&left=%d&key=7&compact=1&numwant=50",
		c.d.http, c.key, url.QueryEscape(string(faultIH[:])), url.QueryEscape(string(c.peerID[:])), c.port, c.up, c.down, c.left)
	if event != "" {
		q += "&event=" + event
	}
	resp, err := c.httpc.Get(q)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d: %q", resp.StatusCode, b)
	}
	v, err := bencodetest.Decode(b)
	if err != nil {
		return fmt.Errorf("reply %q: %v", b, err)
	}
	d, _ := v.(map[string]any)
	if reason, ok := d["failure reason"].(string); ok || d == nil {
		return fmt.Errorf("failure %q", reason)
	}
	seeders, _ := d["complete"].(int64)
	leechers, _ := d["incomplete"].(int64)
	peers, _ := d["peers"].(string)
	c.lastSeeders, c.lastLeechers = int(seeders), int(leechers)
	c.lastPeers = peerPorts([]byte(peers))
	return nil
}

var errUDPTimeout = errors.New("no UDP reply")

// announceUDP connects once per client (connection IDs outlive the test)
// and announces with the passkey as BEP 41 URL data.
func (c *faultClient) announceUDP(event string) error {
	if c.conn == nil {
		conn, err := net.Dial("udp", c.d.udp)
		if err != nil {
			return err
		}
		c.conn = conn
		c.tx++
		req := binary.BigEndian.AppendUint64(nil, 0x41727101980)
		req = binary.BigEndian.AppendUint32(req, 0)
		req = binary.BigEndian.AppendUint32(req, c.tx)
		rep, err := c.roundTrip(req)
		if err != nil {
			c.conn.Close()
			c.conn = nil
			return fmt.Errorf("connect: %w", err)
		}
		if len(rep) < 16 {
			c.conn.Close()
			c.conn = nil
			return fmt.Errorf("connect reply of %d bytes", len(rep))
		}
		c.connID = binary.BigEndian.Uint64(rep[8:16])
	}
	ev := map[string]uint32{"": 0, "completed": 1, "started": 2, "stopped": 3}[event]
	c.tx++
	a := binary.BigEndian.AppendUint64(nil, c.connID)
	a = binary.BigEndian.AppendUint32(a, 1)
	a = binary.BigEndian.AppendUint32(a, c.tx)
	a = append(a, faultIH[:]...)
	a = append(a, c.peerID[:]...)
	a = binary.BigEndian.AppendUint64(a, c.down)
	a = binary.BigEndian.AppendUint64(a, c.left)
	a = binary.BigEndian.AppendUint64(a, c.up)
	a = binary.BigEndian.AppendUint32(a, ev)
	a = binary.BigEndian.AppendUint32(a, 0)  // ip
	a = binary.BigEndian.AppendUint32(a, 7)  // key
	a = binary.BigEndian.AppendUint32(a, 50) // numwant
	a = binary.BigEndian.AppendUint16(a, uint16(c.port))
	urlData := "/" + c.key + "/announce"
	a = append(a, 2, byte(len(urlData)))
	a = append(a, urlData...)
	rep, err := c.roundTrip(a)
	if err != nil {
		return err
	}
	switch {
	case len(rep) >= 8 && binary.BigEndian.Uint32(rep) == 3:
		return fmt.Errorf("error reply %q", rep[8:])
	case len(rep) < 20 || binary.BigEndian.Uint32(rep) != 1:
		return fmt.Errorf("announce reply %x", rep)
	}
	c.lastLeechers = int(binary.BigEndian.Uint32(rep[12:]))
	c.lastSeeders = int(binary.BigEndian.Uint32(rep[16:]))
	c.lastPeers = peerPorts(rep[20:])
	return nil
}

// roundTrip sends req and returns the reply with the same transaction
// ID, skipping late replies to earlier requests.
func (c *faultClient) roundTrip(req []byte) ([]byte, error) {
	c.conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.conn.Write(req); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	for {
		n, err := c.conn.Read(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil, errUDPTimeout
		} else if err != nil {
			return nil, err
		}
		if n >= 8 && binary.BigEndian.Uint32(buf[4:]) == c.tx {
			return buf[:n], nil
		}
	}
}

// peerPorts returns the ports of compact IPv4 peers, sorted.
func peerPorts(b []byte) []int {
	var ports []int
	for ; len(b) >= 6; b = b[6:] {
		ports = append(ports, int(binary.BigEndian.Uint16(b[4:])))
	}
	slices.Sort(ports)
	return ports
}

// wantRows is what the database must hold for the sessions in cs; live
// says whether their daemons still run (stopped daemons have taken their
// seeders and leechers out).
func wantRows(cs []*faultClient, live bool) string {
	type sums struct {
		up, down uint64
		snatches int
	}
	users := map[int]*sums{}
	var seeders, leechers, completed int
	for _, c := range cs {
		s := users[c.user]
		if s == nil {
			s = new(sums)
			users[c.user] = s
		}
		s.up += c.credUp
		s.down += c.credDown
		s.snatches += c.snatches
		completed += c.completed
		if live && c.live {
			if c.seeder {
				seeders++
			} else {
				leechers++
			}
		}
	}
	var b strings.Builder
	for _, u := range []int{1, 2} {
		if s := users[u]; s != nil && (s.up != 0 || s.down != 0 || s.snatches != 0) {
			fmt.Fprintf(&b, "user %d torrent 10: up %d down %d snatches %d; ", u, s.up, s.down, s.snatches)
			fmt.Fprintf(&b, "user %d: up %d down %d snatches %d; ", u, s.up, s.down, s.snatches)
		}
	}
	fmt.Fprintf(&b, "swarm: seeders %d leechers %d completed %d", seeders, leechers, completed)
	return b.String()
}

// rows reads what wantRows describes from the database.
func (e *faultEnv) rows() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	for _, u := range []int{1, 2} {
		var up, down, snatches, userUp, userDown, userSnatches int64
		err := e.db.QueryRow(ctx, `SELECT uploaded, downloaded,
			(SELECT count(*) FROM chihaya_snatches WHERE user_id = $1 AND torrent_id = 10)
			FROM chihaya_user_torrents WHERE user_id = $1 AND torrent_id = 10`, u).Scan(&up, &down, &snatches)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		} else if err != nil {
			return "error: " + err.Error()
		}
		if err := e.db.QueryRow(ctx, "SELECT uploaded, downloaded, snatches FROM chihaya_users_stats WHERE user_id = $1", u).
			Scan(&userUp, &userDown, &userSnatches); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return "error: " + err.Error()
		}
		fmt.Fprintf(&b, "user %d torrent 10: up %d down %d snatches %d; ", u, up, down, snatches)
		fmt.Fprintf(&b, "user %d: up %d down %d snatches %d; ", u, userUp, userDown, userSnatches)
	}
	var seeders, leechers, completed int64
	err := e.db.QueryRow(ctx, "SELECT seeders, leechers, completed FROM chihaya_torrent_stats WHERE info_hash = $1", faultIH[:]).
		Scan(&seeders, &leechers, &completed)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "error: " + err.Error()
	}
	fmt.Fprintf(&b, "swarm: seeders %d leechers %d completed %d", seeders, leechers, completed)
	return b.String()
}

// converges waits until the database holds what the model says.
func (e *faultEnv) converges(what string, cs []*faultClient, live bool) {
	e.t.Helper()
	want := wantRows(cs, live)
	eventually(e.t, 20*time.Second, what, func() (bool, string) {
		got := e.rows()
		return got == want, fmt.Sprintf("\n got %s\nwant %s", got, want)
	})
}

// stopAll stops the daemons gracefully and checks that the database then
// holds exactly the model's totals, with the swarm counts gone.
func (e *faultEnv) stopAll(cs []*faultClient, ds ...*faultDaemon) {
	e.t.Helper()
	for _, d := range ds {
		if err := d.stop(); err != nil {
			e.t.Fatalf("graceful stop: %v", err)
		}
	}
	if got, want := e.rows(), wantRows(cs, false); got != want {
		e.t.Errorf("after a graceful stop:\n got %s\nwant %s", got, want)
	}
}

// sees waits until obs, a leecher, is given exactly the peers of ports
// and counts every live session of cs: local and mirrored alike.
func sees(t *testing.T, obs *faultClient, cs []*faultClient) {
	t.Helper()
	var ports []int
	seeders, leechers := 0, 0
	for _, c := range cs {
		if !c.live {
			continue
		}
		if c.seeder {
			seeders++
		} else {
			leechers++
		}
		if c != obs {
			ports = append(ports, c.port)
		}
	}
	slices.Sort(ports)
	eventually(t, 15*time.Second, fmt.Sprintf("the daemon of port %d returns every peer", obs.port), func() (bool, string) {
		if err := obs.do(""); err != nil {
			return false, err.Error()
		}
		ok := slices.Equal(obs.lastPeers, ports) && obs.lastSeeders == seeders && obs.lastLeechers == leechers
		return ok, fmt.Sprintf("peers %v seeders %d leechers %d; want %v, %d, %d",
			obs.lastPeers, obs.lastSeeders, obs.lastLeechers, ports, seeders, leechers)
	})
}

// step reports more bytes for each client and announces over its
// protocol; every announce must be answered.
func step(t *testing.T, cs ...*faultClient) {
	t.Helper()
	for _, c := range cs {
		c.up += 1000 + uint64(c.port)
		c.down += 10
		c.must(t, "")
	}
}

// TestFaultRedisDown: with Redis cut, both daemons keep answering over
// HTTP and UDP and accounting is unaffected; once it is back, each
// returns the other's peers as they are now, changes made during the
// outage included.
func TestFaultRedisDown(t *testing.T) {
	e := newFaultEnv(t)
	a, b := e.start(), e.start()
	obsA, obsB := e.client(a, 1, 8001, false, 100), e.client(b, 2, 8002, true, 100)
	a1, a2 := e.client(a, 1, 8011, false, 100), e.client(a, 2, 8012, true, 0)
	b1, b2 := e.client(b, 2, 8021, true, 100), e.client(b, 1, 8022, false, 100)
	cs := []*faultClient{obsA, obsB, a1, a2, b1, b2}
	for _, c := range []*faultClient{obsA, obsB, a1, b1} {
		c.must(t, "started")
	}
	sees(t, obsA, cs)
	sees(t, obsB, cs)

	e.redis.Cut()
	eventually(t, 10*time.Second, "the mirror notices the outage", func() (bool, string) {
		st := a.d.svc.mirror.Stats()
		return !st.Healthy, fmt.Sprintf("%+v", st)
	})
	step(t, a1, b1)
	a1.must(t, "stopped") // leaves during the outage
	a2.must(t, "started") // a seeder arrives during it
	b2.must(t, "started")
	b1.left = 0
	b1.must(t, "completed")
	step(t, a2, b1, b2)
	obsA.must(t, "")
	obsB.must(t, "")
	time.Sleep(time.Second) // an outage of a few seconds in all
	e.redis.Restore()

	sees(t, obsA, cs)
	sees(t, obsB, cs)
	e.converges("the database has every announce", cs, true)
	e.stopAll(cs, a, b)
}

// TestFaultPostgresDown: with PostgreSQL cut, announces are answered and
// accounted; once it is back the rows equal the totals exactly, and the
// rules follow a change the web application made during the outage.
func TestFaultPostgresDown(t *testing.T) {
	e := newFaultEnv(t)
	a := e.start()
	h, u := e.client(a, 1, 8101, false, 100), e.client(a, 2, 8102, true, 100)
	cs := []*faultClient{h, u}
	h.must(t, "started")
	u.must(t, "started")
	step(t, h, u)
	e.converges("the first announces are flushed", cs, true)

	e.pg.Cut()
	step(t, h, u)
	eventually(t, 10*time.Second, "flushes fail during the outage", func() (bool, string) {
		st := a.d.svc.accountant.Stats()
		return st.Errors > 0, fmt.Sprintf("%+v", st)
	})
	eventually(t, 10*time.Second, "the rules' listener notices the outage", func() (bool, string) {
		err := a.d.svc.rules.Health()
		return err != nil, fmt.Sprint(err)
	})
	// The web application keeps working: a new user is added, and its
	// notification is lost with the listener's connection.
	mustExec(t, e.db, "INSERT INTO users (id, passkey) VALUES (3, $1)", strings.Repeat("3", 32))
	step(t, h, u)
	u.left = 0
	u.must(t, "completed")
	step(t, h, u)
	h.must(t, "stopped")
	h.up, h.down = 0, 0 // a new session of the same client
	h.must(t, "started")
	step(t, h, u)
	e.pg.Restore()

	e.converges("the database has every announce", cs, true)
	u3 := e.client(a, 3, 8103, false, 100)
	u3.key = strings.Repeat("3", 32)
	eventually(t, 15*time.Second, "the user added during the outage is admitted", func() (bool, string) {
		err := u3.do("started")
		return err == nil, fmt.Sprint(err)
	})
	cs = append(cs, u3) // no bytes: no rows of its own
	e.stopAll(cs, a)
}

// TestFaultBothDown: Redis and PostgreSQL cut at once, then both back.
func TestFaultBothDown(t *testing.T) {
	e := newFaultEnv(t)
	a, b := e.start(), e.start()
	obsA, obsB := e.client(a, 1, 8201, true, 100), e.client(b, 2, 8202, false, 100)
	a1, b1 := e.client(a, 2, 8211, false, 100), e.client(b, 1, 8221, true, 100)
	b2 := e.client(b, 2, 8222, false, 0)
	cs := []*faultClient{obsA, obsB, a1, b1, b2}
	for _, c := range []*faultClient{obsA, obsB, a1, b1} {
		c.must(t, "started")
	}
	step(t, a1, b1)
	sees(t, obsA, cs)
	e.converges("the first announces are flushed", cs, true)

	e.redis.Cut()
	e.pg.Cut()
	step(t, a1, b1)
	eventually(t, 10*time.Second, "both outages are noticed", func() (bool, string) {
		ms, as := a.d.svc.mirror.Stats(), a.d.svc.accountant.Stats()
		return !ms.Healthy && as.Errors > 0, fmt.Sprintf("mirror %+v; accountant %+v", ms, as)
	})
	b2.must(t, "started")
	a1.left = 0
	a1.must(t, "completed")
	step(t, a1, b1, b2)
	b1.must(t, "stopped")
	obsA.must(t, "")
	obsB.must(t, "")
	e.redis.Restore()
	e.pg.Restore()

	sees(t, obsA, cs)
	sees(t, obsB, cs)
	e.converges("the database has every announce", cs, true)
	e.stopAll(cs, a, b)
}

// TestFaultPostgresSlow: with every chunk to and from PostgreSQL delayed,
// announces are still answered (nothing waits for the database), and
// the slow database still ends up with the exact totals.
func TestFaultPostgresSlow(t *testing.T) {
	e := newFaultEnv(t)
	a := e.start()
	h, u := e.client(a, 1, 8301, false, 100), e.client(a, 2, 8302, true, 100)
	cs := []*faultClient{h, u}
	h.must(t, "started")
	u.must(t, "started")

	e.pg.SetDelay(300 * time.Millisecond)
	for i := range 20 {
		step(t, h, u)
		if i == 10 {
			h.left = 0
			h.must(t, "completed")
		}
	}
	e.converges("the slow database has every announce", cs, true)

	// Cut it while it is slow: a flush is likely in flight, and the cut
	// may find it before or after its COMMIT reached the server. Either
	// way the batch is applied once.
	for _, wait := range []time.Duration{300 * time.Millisecond, 700 * time.Millisecond, 1100 * time.Millisecond} {
		step(t, h, u)
		time.Sleep(wait)
		e.pg.Cut()
		step(t, h, u)
		e.pg.Restore()
	}
	step(t, h, u) // the final flush of the stop goes through the delay too
	e.stopAll(cs, a)
}

// TestFaultRedisFlapping: Redis cut and restored again and again while
// both daemons announce. The mirrors' logs stay bounded, no goroutines
// pile up, and at the end each daemon returns the other's peers.
func TestFaultRedisFlapping(t *testing.T) {
	e := newFaultEnv(t)
	a, b := e.start(), e.start()
	obsA, obsB := e.client(a, 1, 8401, false, 100), e.client(b, 2, 8402, true, 100)
	var cs []*faultClient
	cs = append(cs, obsA, obsB)
	for i := range 4 {
		d := a
		if i%2 == 1 {
			d = b
		}
		cs = append(cs, e.client(d, 1+i%2, 8410+i, i < 2, 100))
	}
	for _, c := range cs {
		c.must(t, "started")
	}
	sees(t, obsA, cs)
	goroutines := runtime.NumGoroutine()

	for round := range 6 {
		e.redis.Cut()
		for i, c := range cs[2:] {
			if (round+i)%3 == 0 && c.live {
				c.must(t, "stopped")
			} else if !c.live {
				c.up, c.down = 0, 0
				c.must(t, "started")
			} else {
				step(t, c)
			}
		}
		time.Sleep(250 * time.Millisecond)
		e.redis.Restore()
		step(t, cs[2:]...)
		time.Sleep(250 * time.Millisecond)
		for _, d := range []*faultDaemon{a, b} {
			// One entry per peer at most, whatever the number of outages.
			if st := d.d.svc.mirror.Stats(); st.Pending > len(cs) || st.Dropped != 0 {
				t.Errorf("round %d: mirror pending %d, dropped %d; want at most %d and 0", round, st.Pending, st.Dropped, len(cs))
			}
		}
	}
	for _, d := range []*faultDaemon{a, b} {
		if st := d.d.svc.mirror.Stats(); st.Errors == 0 {
			t.Errorf("mirror %+v: no failed operation, so the outages were not seen", st)
		}
	}
	sees(t, obsA, cs)
	sees(t, obsB, cs)
	eventually(t, 10*time.Second, "goroutines come back to where they were", func() (bool, string) {
		n := runtime.NumGoroutine()
		return n <= goroutines+10, fmt.Sprintf("%d goroutines, %d before the outages", n, goroutines)
	})
	e.converges("the database has every announce", cs, true)
	e.stopAll(cs, a, b)
}

// TestFaultSIGTERMUnderLoad cancels the daemon's context, as SIGTERM
// does, while clients announce as fast as they are answered over HTTP
// and UDP. The database then holds exactly the totals the daemon
// acknowledged (the last acknowledged announce's bytes included), the
// process's seeders and leechers are gone, and its completed downloads
// remain.
func TestFaultSIGTERMUnderLoad(t *testing.T) {
	e := newFaultEnv(t)
	a := e.start()
	seed := e.client(a, 2, 8501, true, 100)
	seed.must(t, "started")
	seed.left = 0
	seed.must(t, "completed")
	load := []*faultClient{e.client(a, 1, 8511, false, 100), e.client(a, 2, 8512, true, 100), e.client(a, 1, 8513, true, 0)}
	cs := append([]*faultClient{seed}, load...)

	stopped := make(chan struct{})
	var stopping atomic.Bool // set just before the stop begins
	var wg sync.WaitGroup
	var mu sync.Mutex // guards the fields below
	acks := make([]int, len(load))
	var failures []string
	for i, c := range load {
		wg.Go(func() {
			event := "started"
			for {
				select {
				case <-stopped:
					return
				default:
				}
				c.up += 1<<20 + uint64(i)
				c.down += 1 << 10
				err := c.do(event)
				mu.Lock()
				if err == nil {
					acks[i]++
					event = ""
				} else if !stopping.Load() {
					failures = append(failures, fmt.Sprintf("port %d after %d replies: %v", c.port, acks[i], err))
				}
				mu.Unlock()
				if err != nil {
					// Refused or unanswered: the daemon is going away.
					select {
					case <-stopped:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
			}
		})
	}
	eventually(t, 10*time.Second, "the load is flushed while it runs", func() (bool, string) {
		mu.Lock()
		n, state := slices.Min(acks), fmt.Sprint(acks)
		mu.Unlock()
		st := a.d.svc.accountant.Stats()
		return n >= 30 && st.Flushes >= 2, fmt.Sprintf("replies %s, accountant %+v", state, st)
	})
	stopping.Store(true)
	err := a.stop() // what SIGTERM does: cancel run's context
	close(stopped)
	wg.Wait()
	if err != nil {
		t.Fatalf("run after the stop: %v", err)
	}
	for _, f := range failures {
		t.Errorf("announce failed before the stop: %s", f)
	}
	t.Logf("acknowledged announces before the stop: %v", acks)
	for _, c := range load {
		// One session from zero: its credit is its last acknowledged totals.
		if c.credUp != c.baseUp || c.credDown != c.baseDown {
			t.Errorf("port %d: model credits %d/%d, last acknowledged totals %d/%d", c.port, c.credUp, c.credDown, c.baseUp, c.baseDown)
		}
	}
	if got, want := e.rows(), wantRows(cs, false); got != want {
		t.Errorf("after SIGTERM under load:\n got %s\nwant %s", got, want)
	}
	var n int
	if err := e.db.QueryRow(context.Background(), "SELECT count(*) FROM chihaya_swarms").Scan(&n); err != nil || n != 0 {
		t.Errorf("chihaya_swarms holds %d rows after a graceful stop (%v), want 0", n, err)
	}
}
