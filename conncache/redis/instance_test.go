package redis

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/udp"
)

// An instance is one tracker process as the daemon wires it: a local
// table, the core, a Mirror over its own Pool, and UDP and HTTP servers on
// loopback.
type instance struct {
	name   string
	local  *peertable.Table
	pool   *Pool
	mirror *conncache.Mirror
	udp    *udp.Server
	http   *httpcompat.Server
	tr     *tracker.Tracker

	stopMirror context.CancelFunc
	mirrorDone chan struct{}
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func haveIPv6() bool {
	c, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func startInstance(t *testing.T, name string, cfg conncache.Config) *instance {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t, name}, nil))
	}
	in := &instance{name: name}
	local, err := peertable.New(peertable.Config{
		PeerLifetime: cfg.PeerLifetime,
		RefreshEvery: cfg.RefreshEvery,
		OnExpire:     func(ih peertable.InfoHash, p peertable.Peer) { in.mirror.Expired(ih, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	in.local = local
	p, err := conncache.Open("redis", cfg)
	if err != nil {
		t.Fatal(err)
	}
	in.pool = p.(*Pool)
	in.mirror = conncache.NewMirror(in.pool, local, cfg)
	in.tr, err = tracker.New(tracker.Config{Interval: time.Minute}, local)
	if err != nil {
		t.Fatal(err)
	}
	in.tr.SetHooks(tracker.Hooks{Remote: in.mirror.Remote(), Mirror: in.mirror})

	addrs := []string{"127.0.0.1:0"}
	if haveIPv6() {
		addrs = append(addrs, "[::1]:0")
	}
	in.udp, err = udp.Listen(udp.Config{Addrs: addrs, Workers: 1, Logger: discard()}, in.tr)
	if err != nil {
		t.Fatal(err)
	}
	in.http, err = httpcompat.Listen(httpcompat.Config{Addrs: addrs, Logger: discard()}, in.tr)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	mctx, mcancel := context.WithCancel(ctx)
	in.stopMirror = mcancel
	in.mirrorDone = make(chan struct{})
	done := make(chan struct{}, 3)
	go func() { local.Run(ctx); done <- struct{}{} }()
	go func() { in.udp.Serve(ctx); done <- struct{}{} }()
	go func() { in.http.Serve(ctx); done <- struct{}{} }()
	go func() { in.mirror.Run(mctx); close(in.mirrorDone) }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: a server did not stop", name)
				return
			}
		}
		in.kill(t)
	})
	return in
}

// kill stops the Mirror as a crash would: it deletes nothing.
func (in *instance) kill(t *testing.T) {
	in.stopMirror()
	select {
	case <-in.mirrorDone:
	case <-time.After(10 * time.Second):
		t.Errorf("%s: Mirror.Run did not return", in.name)
	}
	in.pool.Close()
}

type testWriter struct {
	t    *testing.T
	name string
}

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s: %s", w.name, b)
	return len(b), nil
}

// addr returns the instance's UDP or HTTP address of the family of v6.
func (in *instance) udpAddr(v6 bool) netip.AddrPort {
	for _, a := range in.udp.Addrs() {
		if a.Addr().Is6() == v6 {
			return a
		}
	}
	panic("no UDP address of that family")
}

func (in *instance) httpAddr(v6 bool) netip.AddrPort {
	for _, a := range in.http.Addrs() {
		if a.Addr().Is6() == v6 {
			return a
		}
	}
	panic("no HTTP address of that family")
}

// A udpClient speaks BEP 15 from one loopback socket.
type udpClient struct {
	t   *testing.T
	c   *net.UDPConn
	srv netip.AddrPort
	cid uint64
}

func newUDPClient(t *testing.T, srv netip.AddrPort) *udpClient {
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
	return &udpClient{t: t, c: c, srv: srv}
}

// roundTrip sends pkt and returns the reply to transaction tx, retrying a
// few times (UDP may drop); ok is false if none came.
func (c *udpClient) roundTrip(pkt []byte, tx uint32) ([]byte, bool) {
	buf := make([]byte, 2048)
	for range 5 {
		if _, err := c.c.WriteToUDPAddrPort(pkt, c.srv); err != nil {
			c.t.Fatal(err)
		}
		c.c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := c.c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if n >= 8 && binary.BigEndian.Uint32(buf[4:]) == tx {
				return buf[:n], true
			}
		}
	}
	return nil, false
}

func randTx() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

func (c *udpClient) connect() {
	tx := randTx()
	r, ok := c.roundTrip(udp.AppendConnect(nil, udp.ConnectRequest{TxID: tx}), tx)
	if !ok || len(r) < 16 || binary.BigEndian.Uint32(r) != 0 {
		c.t.Fatalf("connect to %v: no valid reply (%x)", c.srv, r)
	}
	c.cid = binary.BigEndian.Uint64(r[8:])
}

type udpReply struct {
	leechers, seeders uint32
	peers             []netip.AddrPort
}

// announce announces ih with the given port and event; left 0 is a seeder.
func (c *udpClient) announce(ih peertable.InfoHash, port uint16, left uint64, event peertable.Event) (udpReply, bool) {
	if c.cid == 0 {
		c.connect()
	}
	tx := randTx()
	req := udp.AnnounceRequest{ConnID: c.cid, TxID: tx, InfoHash: ih, Left: left, Event: event, NumWant: 200, Port: port}
	binary.BigEndian.PutUint16(req.PeerID[:], port)
	r, ok := c.roundTrip(udp.AppendAnnounce(nil, &req), tx)
	if !ok {
		return udpReply{}, false
	}
	if len(r) < 20 || binary.BigEndian.Uint32(r) != 1 {
		c.t.Fatalf("announce to %v: bad reply %x", c.srv, r)
	}
	rep := udpReply{leechers: binary.BigEndian.Uint32(r[12:]), seeders: binary.BigEndian.Uint32(r[16:])}
	size := peertable.PeerLenV4
	if c.srv.Addr().Is6() {
		size = peertable.PeerLenV6
	}
	for b := r[20:]; len(b) >= size; b = b[size:] {
		ap, _ := parsePeer(b[:size])
		rep.peers = append(rep.peers, ap)
	}
	return rep, true
}

func (c *udpClient) scrape(ih peertable.InfoHash) (seeders, completed, leechers uint32, ok bool) {
	if c.cid == 0 {
		c.connect()
	}
	tx := randTx()
	r, ok := c.roundTrip(udp.AppendScrape(nil, &udp.ScrapeRequest{ConnID: c.cid, TxID: tx, InfoHashes: []peertable.InfoHash{ih}}), tx)
	if !ok || len(r) < 20 {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(r[8:]), binary.BigEndian.Uint32(r[12:]), binary.BigEndian.Uint32(r[16:]), true
}

// httpGet fetches path from in's HTTP server of the given family and
// decodes the bencoded dictionary.
func httpGet(t *testing.T, srv netip.AddrPort, path string) map[string]any {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + srv.String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	v, err := bencodetest.Decode(b)
	if err != nil {
		t.Fatalf("GET %s: %v in %q", path, err, b)
	}
	d, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("GET %s: not a dictionary: %q", path, b)
	}
	return d
}

// httpAnnounce announces ih over HTTP from port and returns the compact
// peers of both keys.
func httpAnnounce(t *testing.T, srv netip.AddrPort, ih peertable.InfoHash, port uint16) (peers, peers6 []netip.AddrPort) {
	t.Helper()
	var id [20]byte
	binary.BigEndian.PutUint16(id[:], port)
	q := fmt.Sprintf("/announce?info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=1&compact=1&numwant=200",
		url.QueryEscape(string(ih[:])), url.QueryEscape(string(id[:])), port)
	d := httpGet(t, srv, q)
	if f, ok := d["failure reason"]; ok {
		t.Fatalf("HTTP announce failed: %v", f)
	}
	split := func(v any, size int) []netip.AddrPort {
		s, _ := v.(string)
		var out []netip.AddrPort
		for b := []byte(s); len(b) >= size; b = b[size:] {
			ap, _ := parsePeer(b[:size])
			out = append(out, ap)
		}
		return out
	}
	return split(d["peers"], peertable.PeerLenV4), split(d["peers6"], peertable.PeerLenV6)
}

// httpScrape returns the complete (seeders) and incomplete counts of ih.
func httpScrape(t *testing.T, srv netip.AddrPort, ih peertable.InfoHash) (complete, incomplete int64) {
	t.Helper()
	d := httpGet(t, srv, "/scrape?info_hash="+url.QueryEscape(string(ih[:])))
	files, _ := d["files"].(map[string]any)
	f, _ := files[string(ih[:])].(map[string]any)
	c, _ := f["complete"].(int64)
	i, _ := f["incomplete"].(int64)
	return c, i
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sortedAddrs(a []netip.AddrPort) []netip.AddrPort {
	a = slices.Clone(a)
	slices.SortFunc(a, netip.AddrPort.Compare)
	return a
}

func randomHash() peertable.InfoHash {
	var ih peertable.InfoHash
	rand.Read(ih[:])
	return ih
}

// peersOf returns every live peer of ih in t, sorted.
func peersOf(t *peertable.Table, ih peertable.InfoHash) []netip.AddrPort {
	var out []netip.AddrPort
	for _, p := range t.AppendPeers(ih, nil) {
		out = append(out, p.Addr)
	}
	return sortedAddrs(out)
}
