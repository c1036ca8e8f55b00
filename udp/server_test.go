package udp

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// haveIPv6 reports whether [::1] can be bound here.
func haveIPv6() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// loopbacks returns the listen addresses for a test: 127.0.0.1:0, and
// [::1]:0 where IPv6 loopback works.
func loopbacks(t *testing.T) []string {
	if haveIPv6() {
		return []string{"127.0.0.1:0", "[::1]:0"}
	}
	t.Log("IPv6 loopback unavailable; testing IPv4 only")
	return []string{"127.0.0.1:0"}
}

// serve starts a Server for cfg over c and stops it at cleanup, checking
// that Serve returns nil promptly and that its goroutines are gone.
func serve(t *testing.T, cfg Config, c core) *Server {
	t.Helper()
	before := runtime.NumGoroutine()
	if cfg.Addrs == nil {
		cfg.Addrs = loopbacks(t)
	}
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Batch == 0 {
		cfg.Batch = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	s, err := listen(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	// Wait for every worker to be running, so that the goroutine count
	// taken by a later call includes them.
	for deadline := time.Now().Add(5 * time.Second); int(s.running.Load()) < len(s.wrk); {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d workers running 5s after Serve", s.running.Load(), len(s.wrk))
		}
		time.Sleep(time.Millisecond)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return 5s after its context was cancelled")
		}
		// A goroutine that has returned may take a moment to be reaped.
		for deadline := time.Now().Add(2 * time.Second); runtime.NumGoroutine() > before; {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines after Serve returned, want %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				break
			}
			time.Sleep(time.Millisecond)
		}
	})
	return s
}

// A client talks to one server address from a socket of the same
// family on loopback.
type client struct {
	t   *testing.T
	c   *net.UDPConn
	srv netip.AddrPort
	tx  uint32
}

func newClient(t *testing.T, srv netip.AddrPort) *client {
	t.Helper()
	network, ip := "udp4", net.IPv4(127, 0, 0, 1)
	if srv.Addr().Is6() {
		network, ip = "udp6", net.IPv6loopback
	}
	c, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, srv: srv, tx: 1000}
}

func (c *client) addr() netip.AddrPort { return c.c.LocalAddr().(*net.UDPAddr).AddrPort() }

// dialClient returns a client whose socket is connected to srv, so it
// drops any datagram that does not come from srv exactly.
func dialClient(t *testing.T, srv netip.AddrPort) *client {
	t.Helper()
	network := "udp4"
	if srv.Addr().Is6() {
		network = "udp6"
	}
	c, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, srv: srv, tx: 1000}
}

func (c *client) send(pkt []byte) {
	c.t.Helper()
	var err error
	if c.c.RemoteAddr() != nil {
		_, err = c.c.Write(pkt)
	} else {
		_, err = c.c.WriteToUDPAddrPort(pkt, c.srv)
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next datagram, failing after 5 seconds.
func (c *client) recv() []byte {
	c.t.Helper()
	buf := make([]byte, 65536)
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.c.ReadFromUDPAddrPort(buf)
	if err != nil {
		c.t.Fatalf("no reply from %v: %v", c.srv, err)
	}
	return buf[:n]
}

func (c *client) roundTrip(pkt []byte) []byte {
	c.t.Helper()
	c.send(pkt)
	return c.recv()
}

func (c *client) nextTx() uint32 { c.tx++; return c.tx }

func (c *client) connect() uint64 {
	c.t.Helper()
	tx := c.nextTx()
	reply := c.roundTrip(AppendConnect(nil, ConnectRequest{TxID: tx}))
	if len(reply) != connectReplyLen || binary.BigEndian.Uint32(reply) != actionConnect || binary.BigEndian.Uint32(reply[4:]) != tx {
		c.t.Fatalf("connect reply %x", reply)
	}
	return binary.BigEndian.Uint64(reply[8:])
}

type announceReply struct {
	interval, leechers, seeders uint32
	peers                       []byte
}

// announce sends r with a fresh transaction ID and fails unless the
// reply is an announce reply for it.
func (c *client) announce(r AnnounceRequest, trailer ...byte) announceReply {
	c.t.Helper()
	r.TxID = c.nextTx()
	reply := c.roundTrip(append(AppendAnnounce(nil, &r), trailer...))
	if len(reply) < announceReplyLen || binary.BigEndian.Uint32(reply) != actionAnnounce || binary.BigEndian.Uint32(reply[4:]) != r.TxID {
		c.t.Fatalf("announce reply %x (%q)", reply, reply)
	}
	return announceReply{
		interval: binary.BigEndian.Uint32(reply[8:]),
		leechers: binary.BigEndian.Uint32(reply[12:]),
		seeders:  binary.BigEndian.Uint32(reply[16:]),
		peers:    reply[announceReplyLen:],
	}
}

func compactPeer(ap netip.AddrPort) []byte {
	return binary.BigEndian.AppendUint16(ap.Addr().AsSlice(), ap.Port())
}

func TestServeAnnounceFamilies(t *testing.T) {
	tr := newTracker(t)
	s := serve(t, Config{}, tr)
	addrs := s.Addrs()
	ih := peertable.InfoHash{0xfa, 0x01}
	ann := func(c *client, port uint16) announceReply {
		return c.announce(AnnounceRequest{ConnID: c.connect(), InfoHash: ih, PeerID: [20]byte{byte(port)}, Left: 1, NumWant: -1, Port: port})
	}

	a4, b4 := newClient(t, addrs[0]), newClient(t, addrs[0])
	if got := ann(a4, 1001); len(got.peers) != 0 || got.leechers != 1 {
		t.Errorf("first IPv4 announce: %+v, want no peers and 1 leecher", got)
	}
	if len(addrs) == 1 {
		got := ann(b4, 1003)
		if want := compactPeer(netip.MustParseAddrPort("127.0.0.1:1001")); !bytes.Equal(got.peers, want) {
			t.Errorf("second IPv4 announce got peers %x, want %x", got.peers, want)
		}
		return
	}
	a6, b6 := newClient(t, addrs[1]), newClient(t, addrs[1])
	if got := ann(a6, 1002); len(got.peers) != 0 || got.leechers != 2 {
		t.Errorf("first IPv6 announce: %+v, want no (IPv4) peers and 2 leechers", got)
	}
	got := ann(b4, 1003)
	if want := compactPeer(netip.MustParseAddrPort("127.0.0.1:1001")); !bytes.Equal(got.peers, want) {
		t.Errorf("IPv4 client got peers %x, want only %x", got.peers, want)
	}
	got = ann(b6, 1004)
	if want := compactPeer(netip.MustParseAddrPort("[::1]:1002")); !bytes.Equal(got.peers, want) {
		t.Errorf("IPv6 client got peers %x, want only %x", got.peers, want)
	}
	if got.leechers != 4 || got.seeders != 0 || got.interval != 1800 {
		t.Errorf("IPv6 reply: %d leechers, %d seeders, interval %d; want 4, 0, 1800", got.leechers, got.seeders, got.interval)
	}
}

func TestServeScrape(t *testing.T) {
	tr := newTracker(t)
	s := serve(t, Config{}, tr)
	ih := peertable.InfoHash{0x5c}
	for _, a := range s.Addrs() {
		c := newClient(t, a)
		id := c.connect()
		c.announce(AnnounceRequest{ConnID: id, InfoHash: ih, Left: 0, Port: 2000, Event: peertable.EventCompleted})
		c.announce(AnnounceRequest{ConnID: id, InfoHash: ih, Left: 9, Port: 2001})
		req := AppendScrape(nil, &ScrapeRequest{ConnID: id, TxID: 77, InfoHashes: []peertable.InfoHash{{0x99}, ih}})
		reply := c.roundTrip(append(req, 1, 2, 3)) // a partial hash is ignored
		want := appendScrapeReply(nil, 77)
		want = appendScrapeCounts(want, peertable.Counts{})
		want = appendScrapeCounts(want, tr.Scrape(ih))
		if !bytes.Equal(reply, want) {
			t.Errorf("scrape over %v: reply %x, want %x", a, reply, want)
		}
	}
	if c := tr.Scrape(ih); c.Seeders == 0 || c.Leechers == 0 {
		t.Errorf("swarm counts %+v: announces did not reach the tracker", c)
	}
}

func TestServeNoReplyWithoutConnID(t *testing.T) {
	s := serve(t, Config{}, newTracker(t))
	for _, a := range s.Addrs() {
		c := newClient(t, a)
		before := s.Stats()
		// Unproven requests of every kind, then a connect: the same
		// socket pair always lands on the same worker, which answers in
		// order, so the first reply must be the connect's.
		c.send(AppendAnnounce(nil, &AnnounceRequest{ConnID: 0xdeadbeef, TxID: 1, Port: 1}))
		c.send(AppendScrape(nil, &ScrapeRequest{ConnID: 0xdeadbeef, TxID: 2, InfoHashes: make([]peertable.InfoHash, 1)}))
		c.send([]byte("GET / HTTP/1.1\r\n\r\n"))
		c.send(nil)
		id := c.connect()
		if id == 0 {
			t.Error("connect returned ID 0")
		}
		after := s.Stats()
		if after.BadConnIDs-before.BadConnIDs != 3 || after.Malformed-before.Malformed != 1 {
			t.Errorf("over %v: %d bad IDs and %d malformed, want 3 and 1", a, after.BadConnIDs-before.BadConnIDs, after.Malformed-before.Malformed)
		}
	}
}

func TestServeMalformedWithConnID(t *testing.T) {
	s := serve(t, Config{}, newTracker(t))
	for _, a := range s.Addrs() {
		c := newClient(t, a)
		r := AnnounceRequest{ConnID: c.connect(), TxID: 5, Port: 1}
		for _, tc := range []struct {
			name string
			pkt  []byte
			want string
		}{
			{"short announce", AppendAnnounce(nil, &r)[:60], "announce: shorter than 98 bytes"},
			{"port 0", AppendAnnounce(nil, &AnnounceRequest{ConnID: r.ConnID, TxID: 5}), "invalid port: 0"},
			{"event 9", func() []byte { b := AppendAnnounce(nil, &r); b[83] = 9; return b }(), "announce: event out of range 0-3"},
			{"unknown action", func() []byte { b := AppendAnnounce(nil, &r); b[11] = 42; return b }(), "request: unknown action"},
		} {
			if got := errorText(t, c.roundTrip(tc.pkt), 5); got != tc.want {
				t.Errorf("%s over %v: error %q, want %q", tc.name, a, got, tc.want)
			}
		}
	}
}

func TestServeTrailingBytes(t *testing.T) {
	s := serve(t, Config{}, newTracker(t))
	for _, a := range s.Addrs() {
		c := newClient(t, a)
		id := c.connect()
		r := AnnounceRequest{ConnID: id, InfoHash: peertable.InfoHash{7}, Port: 3000, NumWant: -1}
		c.announce(r, 0, 0)                          // the old two-byte extensions field
		c.announce(r, optEnd, 0xff, 0xfe, 2, 200, 1) // anything after the end marker
		c.announce(r, optNOP, optURLData, 200, 'x')  // an option cut short
		c.announce(r, make([]byte, 500)...)
	}
}

// urlRecorder passes announces to a tracker and remembers their URL
// data.
type urlRecorder struct {
	*tracker.Tracker
	mu   sync.Mutex
	seen []string
}

func (u *urlRecorder) Announce(req *tracker.AnnounceRequest, peers []byte) (tracker.AnnounceResponse, error) {
	u.mu.Lock()
	u.seen = append(u.seen, string(req.URLData))
	u.mu.Unlock()
	return u.Tracker.Announce(req, peers)
}

func TestServeURLData(t *testing.T) {
	rec := &urlRecorder{Tracker: newTracker(t)}
	s := serve(t, Config{}, rec)
	long := "/announce/" + strings.Repeat("0123456789abcdef", 20) + "?a=1" // 334 bytes: two options
	var want []string
	for _, a := range s.Addrs() {
		c := newClient(t, a)
		r := AnnounceRequest{ConnID: c.connect(), Port: 4000, URLData: []byte("/announce/passkey")}
		c.announce(r)
		r.URLData = []byte(long)
		c.announce(r)
		r.URLData = nil
		c.announce(r, optNOP, optURLData, 3, '/', 'a', 'b', optNOP, optURLData, 2, 'c', 'd', optEnd, optURLData, 1, 'x')
		want = append(want, "/announce/passkey", long, "/abcd")
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slicesEqual(rec.seen, want) {
		t.Errorf("tracker saw URL data %q, want %q", rec.seen, want)
	}
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, "\x00") == strings.Join(b, "\x00") && len(a) == len(b)
}

func TestServeNumWantClamp(t *testing.T) {
	pt, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{MaxNumWant: 1000}, pt)
	if err != nil {
		t.Fatal(err)
	}
	ih := peertable.InfoHash{0xc1}
	swarm(t, tr, ih, 120)
	const maxPacket = 576
	s := serve(t, Config{MaxPacket: maxPacket}, tr)
	for _, a := range s.Addrs() {
		c := newClient(t, a)
		got := c.announce(AnnounceRequest{ConnID: c.connect(), InfoHash: ih, Port: 5000, NumWant: 1000})
		hdr, peerLen := ipv4HeaderLen+udpHeaderLen, peertable.PeerLenV4
		if a.Addr().Is6() {
			hdr, peerLen = ipv6HeaderLen+udpHeaderLen, peertable.PeerLenV6
		}
		wantPeers := (maxPacket - hdr - announceReplyLen) / peerLen // 88 and 28
		if n := len(got.peers) / peerLen; n != wantPeers || len(got.peers)%peerLen != 0 {
			t.Errorf("over %v: %d bytes of peers, want %d peers of %d bytes", a, len(got.peers), wantPeers, peerLen)
		}
		if size := hdr + announceReplyLen + len(got.peers); size > maxPacket {
			t.Errorf("over %v: reply makes a %d-byte packet, more than MaxPacket %d", a, size, maxPacket)
		}
	}
}

func TestServeSharedSecret(t *testing.T) {
	secret := []byte("a secret both servers were given")
	tr := newTracker(t)
	one := serve(t, Config{Addrs: []string{"127.0.0.1:0"}, Secret: secret}, tr)
	two := serve(t, Config{Addrs: []string{"127.0.0.1:0"}, Secret: secret}, tr)
	other := serve(t, Config{Addrs: []string{"127.0.0.1:0"}}, tr)

	c := newClient(t, one.Addrs()[0])
	id := c.connect()
	// The same client socket then talks to the other servers.
	c.srv = two.Addrs()[0]
	c.announce(AnnounceRequest{ConnID: id, Port: 6000})

	c.srv = other.Addrs()[0]
	c.send(AppendAnnounce(nil, &AnnounceRequest{ConnID: id, TxID: 1, Port: 6000}))
	if id2 := c.connect(); id2 == id {
		t.Error("servers with different secrets issued the same ID")
	}
	if st := other.Stats(); st.BadConnIDs != 1 || st.Announces != 0 {
		t.Errorf("server with another secret: %+v, want the announce dropped", st)
	}
}

func TestListenPortZero(t *testing.T) {
	s, err := Listen(Config{Addrs: []string{"127.0.0.1:0"}, Workers: 3, Logger: discardLogger()}, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	port := s.Addrs()[0].Port()
	if port == 0 {
		t.Fatal("Addrs reports port 0")
	}
	if len(s.socks) != 3 {
		t.Fatalf("%d sockets, want 3", len(s.socks))
	}
	for i, c := range s.socks {
		if got := c.LocalAddr().(*net.UDPAddr).AddrPort(); got != s.Addrs()[0] {
			t.Errorf("socket %d bound to %v, want %v", i, got, s.Addrs()[0])
		}
	}
	// A second server on port 0 must not join the first one's port.
	s2, err := Listen(Config{Addrs: []string{"127.0.0.1:0"}, Workers: 2, Logger: discardLogger()}, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Addrs()[0].Port() == port {
		t.Errorf("two servers share port %d", port)
	}
	// Nor may anyone else take it while it is held.
	if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(s.Addrs()[0])); err == nil {
		c.Close()
		t.Errorf("a plain socket could bind %v too", s.Addrs()[0])
	}
}

// TestServeWildcardSource checks that a server listening on a wildcard
// address answers from the address each request was sent to, which a
// client with a connected socket insists on. All of 127.0.0.0/8 is
// local on Linux, and a reply to 127.0.0.1 leaves from 127.0.0.1 unless
// the server says otherwise, so a request sent to 127.0.0.2 shows which.
func TestServeWildcardSource(t *testing.T) {
	tr := newTracker(t)
	ih := peertable.InfoHash{0xc1}
	tests := []struct {
		listen, dial string
		linuxOnly    bool // only Linux sets the source; elsewhere routing picks
	}{
		{"0.0.0.0:0", "127.0.0.2", true},
		{"[::]:0", "::1", false},
	}
	for _, tc := range tests {
		t.Run(tc.dial, func(t *testing.T) {
			if tc.linuxOnly && runtime.GOOS != "linux" {
				t.Skipf("the reply's source is left to routing on %s", runtime.GOOS)
			}
			dial := netip.MustParseAddr(tc.dial)
			if l, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(dial, 0))); err != nil {
				t.Skipf("%v is not usable here: %v", dial, err)
			} else {
				l.Close()
			}
			s := serve(t, Config{Addrs: []string{tc.listen}}, tr)
			srv := netip.AddrPortFrom(dial, s.Addrs()[0].Port())
			// A new client each time, so the kernel spreads them over
			// both workers' sockets.
			for i := range 4 {
				c := dialClient(t, srv)
				id := c.connect()
				c.announce(AnnounceRequest{ConnID: id, InfoHash: ih, Port: uint16(7000 + i), NumWant: 10})
			}
		})
	}
}

func TestListenV6Only(t *testing.T) {
	if !haveIPv6() {
		t.Skip("IPv6 loopback unavailable")
	}
	s, err := Listen(Config{Addrs: []string{"[::]:0"}, Workers: 1, Logger: discardLogger()}, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// With IPV6_V6ONLY the IPv4 wildcard on the same port is still free.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: int(s.Addrs()[0].Port())})
	if err != nil {
		t.Fatalf("IPv6 socket also holds IPv4: %v", err)
	}
	c.Close()
}

func TestListenConfigErrors(t *testing.T) {
	tr := newTracker(t)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Workers: -1}, "Workers"},
		{Config{Workers: 5000}, "Workers"},
		{Config{Batch: -1}, "Batch"},
		{Config{Batch: 2000}, "Batch"},
		{Config{MaxPacket: 100}, "MaxPacket"},
		{Config{MaxPacket: 70000}, "MaxPacket"},
		{Config{ConnIDGrace: 2 * time.Hour}, "ConnIDGrace"},
		{Config{Secret: []byte("short")}, "Secret"},
		{Config{Addrs: []string{"127.0.0.1:0", "localhost:6969"}}, "Addrs[1]"},
		{Config{Addrs: []string{":6969"}}, "Addrs[0]"},
		{Config{Addrs: []string{"192.0.2.1:0"}}, "192.0.2.1:0"}, // not an address of this host
	} {
		tc.cfg.Logger = discardLogger()
		s, err := Listen(tc.cfg, tr)
		if err == nil {
			s.Close()
			t.Errorf("Listen(%+v) succeeded, want an error naming %s", tc.cfg, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Listen(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

func TestListenLogs(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	h := slog.NewJSONHandler(&lockedWriter{w: &buf, mu: &mu}, nil)
	secret := []byte("never-log-this-secret-0123456789")
	cfg := Config{Addrs: loopbacks(t), Workers: 2, Secret: secret, Logger: slog.New(h)}
	s, err := Listen(cfg, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	slog.New(h).Info("config", "udp", cfg)

	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(buf.String(), string(secret)) || strings.Contains(buf.String(), fmt.Sprintf("%x", secret)) {
		t.Errorf("the secret was logged:\n%s", buf.String())
	}
	var got []string
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var rec struct {
			Level, Msg, Proto, Addr string
			Workers                 int
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Msg == "listening" {
			if rec.Level != "INFO" || rec.Proto != "udp" || rec.Workers != 2 {
				t.Errorf("log line %s: want level INFO, proto udp, workers 2", line)
			}
			got = append(got, rec.Addr)
		}
	}
	var want []string
	for _, a := range s.Addrs() {
		want = append(want, a.String())
	}
	if !slicesEqual(got, want) {
		t.Errorf("logged listening on %q, want %q", got, want)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestServeLifecycle(t *testing.T) {
	tr := newTracker(t)
	cfg := Config{Addrs: []string{"127.0.0.1:0"}, Workers: 1, Logger: discardLogger()}

	s, err := Listen(cfg, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Error("Serve after Close returned nil")
	}

	// Close stops a Server being served.
	s, err = Listen(cfg, tr)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	newClient(t, s.Addrs()[0]).connect()
	if err := s.Serve(context.Background()); err == nil {
		t.Error("second Serve returned nil")
	}
	s.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}

// TestServeDoesNotAllocate measures whole round trips over loopback:
// the client side (WriteToUDPAddrPort, ReadFromUDPAddrPort) does not
// allocate, so whatever is counted is the server's.
func TestServeDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	tr := newTracker(t)
	ih := peertable.InfoHash{0xa1}
	swarm(t, tr, ih, 60)
	wildcards := []string{"0.0.0.0:0"}
	if haveIPv6() {
		wildcards = append(wildcards, "[::]:0")
	}
	type target struct{ bound, a netip.AddrPort }
	var targets []target
	for _, bind := range [][]string{loopbacks(t), wildcards} {
		for _, bound := range serve(t, Config{Addrs: bind, Workers: 1}, tr).Addrs() {
			a := bound
			if a.Addr().IsUnspecified() { // replies carry PKTINFO
				lo := netip.MustParseAddr("127.0.0.1")
				if a.Addr().Is6() {
					lo = netip.IPv6Loopback()
				}
				a = netip.AddrPortFrom(lo, a.Port())
			}
			targets = append(targets, target{bound, a})
		}
	}
	for _, tg := range targets {
		a := tg.a
		c := newClient(t, a)
		id := c.connect()
		for name, pkt := range map[string][]byte{
			"connect":  AppendConnect(nil, ConnectRequest{TxID: 1}),
			"announce": AppendAnnounce(nil, &AnnounceRequest{ConnID: id, InfoHash: ih, Port: 7000, NumWant: 50, URLData: []byte("/announce")}),
			"scrape":   AppendScrape(nil, &ScrapeRequest{ConnID: id, InfoHashes: []peertable.InfoHash{ih}}),
		} {
			buf := make([]byte, 2048)
			c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			roundTrip := func() {
				if _, err := c.c.WriteToUDPAddrPort(pkt, a); err != nil {
					t.Fatal(err)
				}
				if _, _, err := c.c.ReadFromUDPAddrPort(buf); err != nil {
					t.Fatal(err)
				}
			}
			roundTrip()
			if n := testing.AllocsPerRun(200, roundTrip); n != 0 {
				t.Errorf("%s round trip to %v (listening on %v): %v allocations, want 0", name, a, tg.bound, n)
			}
		}
	}
}

// BenchmarkServe sends batches of announces over loopback and waits for
// every reply: the whole path, system calls included.
func BenchmarkServe(b *testing.B) {
	tr := newTracker(b)
	ih := peertable.InfoHash{0xb1}
	swarm(b, tr, ih, 60)
	// bind=any listens on the wildcard address, where every datagram
	// carries its destination in and its source out as control messages.
	for _, tc := range []struct{ fam, bind, addr string }{
		{"v4", "addr", "127.0.0.1:0"},
		{"v4", "any", "0.0.0.0:0"},
		{"v6", "addr", "[::1]:0"},
		{"v6", "any", "[::]:0"},
	} {
		fam := tc.fam
		if fam == "v6" && !haveIPv6() {
			continue
		}
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("family=%s/bind=%s/batch=%d", fam, tc.bind, batch), func(b *testing.B) {
				s, err := Listen(Config{Addrs: []string{tc.addr}, Workers: 1, Batch: batch, Logger: discardLogger()}, tr)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- s.Serve(ctx) }()
				defer func() { cancel(); <-done }()

				network := "udp4"
				if fam == "v6" {
					network = "udp6"
				}
				lo := netip.MustParseAddr("127.0.0.1")
				if fam == "v6" {
					lo = netip.IPv6Loopback()
				}
				cl, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, 0)))
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				cl.SetReadBuffer(1 << 20)
				srv := netip.AddrPortFrom(lo, s.Addrs()[0].Port())
				// Connect once to get an ID.
				buf := make([]byte, 2048)
				cl.WriteToUDPAddrPort(AppendConnect(nil, ConnectRequest{}), srv)
				cl.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := cl.ReadFromUDPAddrPort(buf); err != nil {
					b.Fatal(err)
				}
				id := binary.BigEndian.Uint64(buf[8:])
				pkt := AppendAnnounce(nil, &AnnounceRequest{ConnID: id, InfoHash: ih, Port: 7001, NumWant: 50})
				const perOp = 32 // requests in flight per iteration
				b.SetBytes(int64(len(pkt) * perOp))
				b.ReportAllocs()
				for b.Loop() {
					for range perOp {
						cl.WriteToUDPAddrPort(pkt, srv)
					}
					cl.SetReadDeadline(time.Now().Add(5 * time.Second))
					for range perOp {
						if _, _, err := cl.ReadFromUDPAddrPort(buf); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perOp), "ns/request")
			})
		}
	}
}

// Answered requests are timed into Stats' histograms, one observation per
// request, by action.
func TestServeLatency(t *testing.T) {
	s := serve(t, Config{}, newTracker(t))
	c := newClient(t, s.Addrs()[0])
	for port := range uint16(3) {
		c.announce(AnnounceRequest{ConnID: c.connect(), InfoHash: peertable.InfoHash{9}, Left: 1, NumWant: -1, Port: 2000 + port})
	}
	// A batch is timed after its replies are sent: the client may read
	// the last reply before the worker has counted it.
	st := s.Stats()
	for deadline := time.Now().Add(5 * time.Second); st.AnnounceLatency.Count() < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
		st = s.Stats()
	}
	if st.ConnectLatency.Count() != 3 || st.AnnounceLatency.Count() != 3 || st.ScrapeLatency.Count() != 0 {
		t.Errorf("latency counts: connect %d, announce %d, scrape %d; want 3, 3, 0",
			st.ConnectLatency.Count(), st.AnnounceLatency.Count(), st.ScrapeLatency.Count())
	}
	if st.AnnounceLatency.Sum <= 0 {
		t.Errorf("announce latency sum %v, want positive", st.AnnounceLatency.Sum)
	}
}
