package udp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

const testNow = 1_700_000_000

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTracker(tb testing.TB) *tracker.Tracker {
	tb.Helper()
	pt, err := peertable.New(peertable.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{}, pt)
	if err != nil {
		tb.Fatal(err)
	}
	return tr
}

// newTestWorker returns a worker without a socket, for calling handle.
func newTestWorker(tb testing.TB, cfg Config, c core) *worker {
	tb.Helper()
	if cfg.Secret == nil {
		cfg.Secret = testSecret
	}
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	cfg.Batch = 1
	s, err := newServer(cfg, c)
	if err != nil {
		tb.Fatal(err)
	}
	w, err := newWorker(s, nil)
	if err != nil {
		tb.Fatal(err)
	}
	s.wrk = []*worker{w}
	return w
}

// deliver hands pkt from src to w as its socket would, and returns the
// reply (nil if none). The reply aliases the worker's buffer.
func (w *worker) deliver(src netip.AddrPort, pkt []byte) []byte {
	m := &w.msgs[0]
	m.n = copy(m.buf, pkt)
	m.src = src
	w.handle(m, testNow)
	if len(m.out) == 0 {
		return nil
	}
	return m.out
}

func (w *worker) connID(src netip.AddrPort) uint64 {
	return w.s.ids.issue(src.Addr(), testNow)
}

var (
	srcV4 = netip.MustParseAddrPort("192.0.2.1:40000")
	srcV6 = netip.MustParseAddrPort("[2001:db8::1]:40000")
)

// errorText returns the message of an error reply, or fails.
func errorText(tb testing.TB, reply []byte, txID uint32) string {
	tb.Helper()
	if len(reply) < errorReplyLen || binary.BigEndian.Uint32(reply) != actionError {
		tb.Fatalf("reply %x is not an error", reply)
	}
	if got := binary.BigEndian.Uint32(reply[4:]); got != txID {
		tb.Errorf("error reply txID = %#x, want %#x", got, txID)
	}
	return string(reply[errorReplyLen:])
}

// recorder is a core that remembers the last announce and the requests
// of the last Prefetch, and answers with made-up peers, NumWant of them
// within MaxPeers as the tracker would (-1 taken as 50), or with err.
type recorder struct {
	last       tracker.AnnounceRequest
	urlData    []byte
	err        error
	prefetched []peertable.Prefetch
}

func (r *recorder) Prefetch(reqs []peertable.Prefetch) {
	r.prefetched = append(r.prefetched[:0], reqs...)
}

func (r *recorder) Announce(req *tracker.AnnounceRequest, peers []byte) (tracker.AnnounceResponse, error) {
	r.last = *req
	r.urlData = append(r.urlData[:0], req.URLData...)
	r.last.URLData = nil
	if r.err != nil {
		return tracker.AnnounceResponse{}, r.err
	}
	start := len(peers)
	n := peertable.PeerLenV6
	if req.Addr.Addr().Is4() {
		n = peertable.PeerLenV4
	}
	want := req.NumWant
	if want < 0 {
		want = 50
	}
	if req.MaxPeers > 0 {
		want = min(want, req.MaxPeers)
	}
	for i := range want * n {
		peers = append(peers, byte(i))
	}
	return tracker.AnnounceResponse{Interval: 1800, MinInterval: 300, Peers: peers[start:]}, nil
}

func (r *recorder) Scrape(ih peertable.InfoHash) peertable.Counts {
	return peertable.Counts{Seeders: uint32(ih[0]), Completed: uint32(ih[1]), Leechers: uint32(ih[2])}
}

func TestHandleConnect(t *testing.T) {
	w := newTestWorker(t, Config{}, &recorder{})
	req := AppendConnect(nil, ConnectRequest{TxID: 0x11223344})
	for _, src := range []netip.AddrPort{srcV4, srcV6} {
		reply := w.deliver(src, req)
		if len(reply) != connectReplyLen {
			t.Fatalf("connect from %v: reply %x, want 16 bytes", src, reply)
		}
		if binary.BigEndian.Uint32(reply) != actionConnect || binary.BigEndian.Uint32(reply[4:]) != 0x11223344 {
			t.Errorf("connect reply %x: wrong action or txID", reply)
		}
		if id := binary.BigEndian.Uint64(reply[8:]); !w.s.ids.valid(id, src.Addr(), testNow) {
			t.Errorf("connect reply carries an invalid ID %#x", id)
		}
	}
	golden(t, "connect_reply.hex", "reply to connect TxID 0x11223344 from [2001:db8::1]:40000 at 1700000000, testSecret",
		w.deliver(srcV6, req))

	for _, tc := range []struct {
		name string
		src  netip.AddrPort
		pkt  []byte
	}{
		{"wrong protocol", srcV4, append([]byte{1, 2, 3, 4, 5, 6, 7, 8}, req[8:]...)},
		{"short", srcV4, req[:15]},
		{"source port 0", netip.AddrPortFrom(srcV4.Addr(), 0), req},
	} {
		if reply := w.deliver(tc.src, tc.pkt); reply != nil {
			t.Errorf("%s: got reply %x, want none", tc.name, reply)
		}
	}
	if st := w.s.Stats(); st.Connects != 3 || st.Malformed != 3 {
		t.Errorf("Stats = %+v, want 3 connects and 3 malformed", st)
	}
}

func TestHandleBadConnID(t *testing.T) {
	w := newTestWorker(t, Config{}, &recorder{})
	r := testAnnounce()
	r.ConnID = w.connID(srcV4)
	good := AppendAnnounce(nil, &r)
	if w.deliver(srcV4, good) == nil {
		t.Fatal("valid announce got no reply")
	}
	other := w.s.ids.issue(srcV4.Addr(), testNow-1000)
	for _, tc := range []struct {
		name string
		src  netip.AddrPort
		id   uint64
		pkt  func([]byte) []byte
	}{
		{"random ID", srcV4, 0x0102030405060708, nil},
		{"other address's ID", srcV6, r.ConnID, nil},
		{"expired ID", srcV4, other, nil},
		{"malformed", srcV4, 0x0102030405060708, func(b []byte) []byte { return b[:20] }},
		{"unknown action", srcV4, 0x0102030405060708, func(b []byte) []byte { b[11] = 9; return b }},
		{"too large", srcV4, 0x0102030405060708, func(b []byte) []byte { return append(b, make([]byte, 3000)...) }},
	} {
		pkt := bytes.Clone(good)
		binary.BigEndian.PutUint64(pkt, tc.id)
		if tc.pkt != nil {
			pkt = tc.pkt(pkt)
		}
		if reply := w.deliver(tc.src, pkt); reply != nil {
			t.Errorf("%s: got reply %x, want none", tc.name, reply)
		}
	}
	if st := w.s.Stats(); st.BadConnIDs != 6 || st.Announces != 1 {
		t.Errorf("Stats = %+v, want 6 bad IDs and 1 announce", st)
	}
}

func TestHandleRefusals(t *testing.T) {
	rec := &recorder{}
	w := newTestWorker(t, Config{}, rec)
	id := w.connID(srcV4)
	ann := testAnnounce()
	ann.ConnID = id
	announce := func(edit func([]byte) []byte) []byte {
		b := AppendAnnounce(nil, &ann)
		if edit != nil {
			b = edit(b)
		}
		return b
	}
	tests := []struct {
		name     string
		pkt      []byte
		coreErr  error
		want     string
		internal bool
	}{
		{"short announce", announce(func(b []byte) []byte { return b[:60] }), nil, "announce: shorter than 98 bytes", false},
		{"event 4", announce(func(b []byte) []byte { b[83] = 4; return b }), nil, "announce: event out of range 0-3", false},
		{"event 2^32-1", announce(func(b []byte) []byte { copy(b[80:], []byte{255, 255, 255, 255}); return b }), nil, "announce: event out of range 0-3", false},
		{"url data too long", announce(func(b []byte) []byte {
			for range 5 {
				b = append(b, optURLData, 255)
				b = append(b, make([]byte, 255)...)
			}
			return b
		}), nil, "announce: BEP 41 URL data longer than 1024 bytes", false},
		{"unknown action", announce(func(b []byte) []byte { b[11] = 7; return b }), nil, "request: unknown action", false},
		{"error action", announce(func(b []byte) []byte { b[11] = actionError; return b }), nil, "request: unknown action", false},
		{"too large", announce(func(b []byte) []byte { return append(b, make([]byte, maxRequestLen)...) }), nil, "request: longer than 2048 bytes", false},
		{"empty scrape", AppendScrape(nil, &ScrapeRequest{ConnID: id, TxID: ann.TxID}), nil, "scrape: no info hash", false},
		{"scrape too many", AppendScrape(nil, &ScrapeRequest{ConnID: id, TxID: ann.TxID, InfoHashes: make([]peertable.InfoHash, 75)}), nil, "scrape: more than 74 info hashes", false},
		{"tracker refusal", announce(nil), tracker.ErrInvalidPort, "invalid port: 0", false},
		{"wrapped tracker refusal", announce(nil), fmt.Errorf("wrapped: %w", tracker.ErrInvalidEvent), "invalid event", false},
		{"internal error", announce(nil), errors.New("db password is hunter2"), "internal error", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec.err = tc.coreErr
			before := w.s.Stats()
			got := errorText(t, w.deliver(srcV4, tc.pkt), ann.TxID)
			if got != tc.want {
				t.Errorf("error text %q, want %q", got, tc.want)
			}
			after := w.s.Stats()
			if after.ErrorReplies != before.ErrorReplies+1 {
				t.Errorf("ErrorReplies went from %d to %d", before.ErrorReplies, after.ErrorReplies)
			}
			if d := after.InternalErrors - before.InternalErrors; (d == 1) != tc.internal {
				t.Errorf("InternalErrors grew by %d", d)
			}
		})
	}
	rec.err = nil
	golden(t, "error_reply.hex", "reply to an announce with event 4", w.deliver(srcV4, tests[1].pkt))
}

func TestHandleRealTrackerPort0(t *testing.T) {
	w := newTestWorker(t, Config{}, newTracker(t))
	r := testAnnounce()
	r.ConnID, r.Port = w.connID(srcV4), 0
	if got := errorText(t, w.deliver(srcV4, AppendAnnounce(nil, &r)), r.TxID); got != tracker.ErrInvalidPort.Error() {
		t.Errorf("port 0: error %q, want %q", got, tracker.ErrInvalidPort.Error())
	}
}

func TestHandleAnnounceRequest(t *testing.T) {
	tests := []struct {
		name     string
		override bool
		src      netip.AddrPort
		ip       [4]byte
		numWant  int32
		urlData  []byte
		wantAddr netip.AddrPort
		wantWant int
	}{
		{"v4", false, srcV4, [4]byte{}, 10, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10},
		{"v6", false, srcV6, [4]byte{}, 10, nil, netip.MustParseAddrPort("[2001:db8::1]:6881"), 10},
		{"ip field ignored", false, srcV4, [4]byte{198, 51, 100, 9}, 10, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10},
		{"ip field honoured", true, srcV4, [4]byte{198, 51, 100, 9}, 10, nil, netip.MustParseAddrPort("198.51.100.9:6881"), 10},
		{"ip field zero", true, srcV4, [4]byte{}, 10, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10},
		{"ip field multicast", true, srcV4, [4]byte{224, 0, 0, 1}, 10, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10},
		{"ip field broadcast", true, srcV4, [4]byte{255, 255, 255, 255}, 10, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10},
		{"ip field loopback", true, srcV4, [4]byte{127, 0, 0, 1}, 10, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10},
		{"ip field ignored for v6", true, srcV6, [4]byte{198, 51, 100, 9}, 10, nil, netip.MustParseAddrPort("[2001:db8::1]:6881"), 10},
		{"4-in-6 source unmapped", false, netip.MustParseAddrPort("[::ffff:192.0.2.1]:40000"), [4]byte{}, 10, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10},
		{"default numwant passed as sent", false, srcV4, [4]byte{}, -1, nil, netip.MustParseAddrPort("192.0.2.1:6881"), -1},
		{"numwant above the room passed as sent", false, srcV4, [4]byte{}, 10000, nil, netip.MustParseAddrPort("192.0.2.1:6881"), 10000},
		{"numwant above the room v6", false, srcV6, [4]byte{}, 10000, nil, netip.MustParseAddrPort("[2001:db8::1]:6881"), 10000},
		{"url data", false, srcV4, [4]byte{}, 0, []byte("/announce/0123456789abcdef?x=1"), netip.MustParseAddrPort("192.0.2.1:6881"), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			w := newTestWorker(t, Config{AllowIPOverride: tc.override}, rec)
			src := netip.AddrPortFrom(tc.src.Addr().Unmap(), tc.src.Port()) // as the socket reports it
			r := testAnnounce()
			r.ConnID, r.IP, r.NumWant, r.URLData = w.connID(src), tc.ip, tc.numWant, tc.urlData
			reply := w.deliver(src, AppendAnnounce(nil, &r))
			if len(reply) < announceReplyLen || binary.BigEndian.Uint32(reply) != actionAnnounce {
				t.Fatalf("reply %x is not an announce reply", reply)
			}
			got := rec.last
			// The room is the peers that fit a 1500-byte packet.
			room := (1500 - 28 - 20) / 6
			if tc.wantAddr.Addr().Is6() {
				room = (1500 - 48 - 20) / 18
			}
			want := tracker.AnnounceRequest{
				InfoHash: r.InfoHash, PeerID: r.PeerID, Addr: tc.wantAddr,
				Uploaded: r.Uploaded, Downloaded: r.Downloaded, Left: r.Left,
				Event: r.Event, NumWant: tc.wantWant, MaxPeers: room, Key: r.Key,
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("tracker got %+v, want %+v", got, want)
			}
			if !bytes.Equal(rec.urlData, tc.urlData) {
				t.Errorf("tracker got URL data %q, want %q", rec.urlData, tc.urlData)
			}
			if ipLen := 28 + len(reply); src.Addr().Is6() {
				ipLen += 20
				if ipLen > 1500 {
					t.Errorf("reply of %d bytes makes a %d-byte packet", len(reply), ipLen)
				}
			} else if ipLen > 1500 {
				t.Errorf("reply of %d bytes makes a %d-byte packet", len(reply), ipLen)
			}
		})
	}
}

// swarm fills tr with n IPv4 and n IPv6 leechers of ih.
func swarm(tb testing.TB, tr *tracker.Tracker, ih peertable.InfoHash, n int) {
	tb.Helper()
	for i := range n {
		for _, a := range []string{fmt.Sprintf("10.0.%d.%d", i/250, i%250+1), fmt.Sprintf("fd00::%x", i+1)} {
			req := tracker.AnnounceRequest{InfoHash: ih, Addr: netip.AddrPortFrom(netip.MustParseAddr(a), 6881), Left: 1, NumWant: 0}
			if _, err := tr.Announce(&req, nil); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

func TestHandleAnnounceReply(t *testing.T) {
	tr := newTracker(t)
	w := newTestWorker(t, Config{}, tr)
	r := testAnnounce()
	swarm(t, tr, r.InfoHash, 1)
	for _, tc := range []struct {
		src  netip.AddrPort
		file string
	}{
		{srcV4, "announce_reply_v4.hex"},
		{srcV6, "announce_reply_v6.hex"},
	} {
		r.ConnID = w.connID(tc.src)
		reply := w.deliver(tc.src, AppendAnnounce(nil, &r))
		golden(t, tc.file, fmt.Sprintf("reply to testAnnounce() from %v, swarm of 10.0.0.1:6881 and [fd00::1]:6881", tc.src), reply)
	}
}

func TestHandleScrape(t *testing.T) {
	w := newTestWorker(t, Config{}, &recorder{})
	req := ScrapeRequest{ConnID: w.connID(srcV6), TxID: 99, InfoHashes: []peertable.InfoHash{{1, 2, 3}, {4, 5, 6}}}
	reply := w.deliver(srcV6, AppendScrape(nil, &req))
	golden(t, "scrape_reply.hex", "reply to a scrape of 010203.. and 040506.. (seeders, completed, leechers = first bytes)", reply)
}

// benchRequests returns a worker over a real tracker and one request of
// each action from each family.
func benchRequests(tb testing.TB, cfg Config) (*worker, map[string]map[string][]byte) {
	tr := newTracker(tb)
	w := newTestWorker(tb, cfg, tr)
	ann := testAnnounce()
	ann.NumWant = 50
	ann.URLData = []byte("/announce/0123456789abcdef0123456789abcdef")
	swarm(tb, tr, ann.InfoHash, 100)
	reqs := map[string]map[string][]byte{}
	for fam, src := range map[string]netip.AddrPort{"v4": srcV4, "v6": srcV6} {
		id := w.connID(src)
		ann.ConnID = id
		scr := ScrapeRequest{ConnID: id, InfoHashes: []peertable.InfoHash{ann.InfoHash, {1}, {2}, {3}}}
		reqs[fam] = map[string][]byte{
			"connect":  AppendConnect(nil, ConnectRequest{TxID: 1}),
			"announce": AppendAnnounce(nil, &ann),
			"scrape":   AppendScrape(nil, &scr),
			"error":    AppendAnnounce(nil, &ann)[:50],
		}
	}
	return w, reqs
}

// limitsNeverHit turns both rate limits on, so that the limiters run,
// with budgets no benchmark exhausts.
var limitsNeverHit = Config{ConnectRate: 1e9, ConnectBurst: 1e9, AnnounceRate: 1e9, AnnounceBurst: 1e9}

func BenchmarkHandle(b *testing.B) {
	for _, limit := range []string{"off", "on"} {
		cfg := Config{}
		if limit == "on" {
			cfg = limitsNeverHit
		}
		w, reqs := benchRequests(b, cfg)
		for _, action := range []string{"connect", "announce", "scrape", "error"} {
			for _, fam := range []string{"v4", "v6"} {
				src := srcV4
				if fam == "v6" {
					src = srcV6
				}
				pkt := reqs[fam][action]
				b.Run(fmt.Sprintf("limit=%s/action=%s/family=%s", limit, action, fam), func(b *testing.B) {
					m := &w.msgs[0]
					b.SetBytes(int64(len(pkt)))
					b.ReportAllocs()
					for b.Loop() {
						m.n = copy(m.buf, pkt)
						m.src = src
						w.handle(m, testNow)
					}
					if len(m.out) == 0 {
						b.Fatal("no reply")
					}
				})
			}
		}
	}
}

func TestHandleDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, limit := range []string{"off", "on"} {
		cfg := Config{}
		if limit == "on" {
			cfg = limitsNeverHit
		}
		w, reqs := benchRequests(t, cfg)
		for fam, byAction := range reqs {
			src := srcV4
			if fam == "v6" {
				src = srcV6
			}
			for action, pkt := range byAction {
				w.deliver(src, pkt) // the peer joins the swarm once
				if n := testing.AllocsPerRun(100, func() { w.deliver(src, pkt) }); n != 0 {
					t.Errorf("handle(%s from %s, limits %s) allocated %v times per call, want 0", action, fam, limit, n)
				}
			}
		}
	}
	// A request the limits drop allocates nothing either.
	w, reqs := benchRequests(t, Config{ConnectRate: 1, AnnounceRate: 1})
	for _, action := range []string{"connect", "announce"} {
		pkt := reqs["v4"][action]
		w.deliver(srcV4, pkt)
		if w.deliver(srcV4, pkt) != nil {
			t.Fatalf("second %s in a second was answered, want dropped", action)
		}
		if n := testing.AllocsPerRun(100, func() { w.deliver(srcV4, pkt) }); n != 0 {
			t.Errorf("dropping a rate-limited %s allocated %v times per call, want 0", action, n)
		}
	}
	w, reqs = benchRequests(t, Config{})
	if reply := w.deliver(srcV4, reqs["v4"]["announce"]); len(reply) != announceReplyLen+50*peertable.PeerLenV4 {
		t.Errorf("announce reply has %d bytes, want 50 peers", len(reply))
	}
	if !strings.HasPrefix(errorText(t, w.deliver(srcV4, reqs["v4"]["error"]), 0x0a0b0c0d), "announce:") {
		t.Error("short announce did not get an announce error")
	}
}

// TestSetPolicy checks that a new policy applies to the next announce.
func TestSetPolicy(t *testing.T) {
	rec := &recorder{}
	w := newTestWorker(t, Config{}, rec)
	send := func() tracker.AnnounceRequest {
		t.Helper()
		r := testAnnounce()
		r.ConnID, r.IP = w.connID(srcV4), [4]byte{198, 51, 100, 9}
		if reply := w.deliver(srcV4, AppendAnnounce(nil, &r)); len(reply) < announceReplyLen {
			t.Fatalf("reply %x is not an announce reply", reply)
		}
		return rec.last
	}
	if got := send(); got.Addr.Addr() != srcV4.Addr() {
		t.Errorf("before SetPolicy: tracker got an announce from %v, want %v", got.Addr, srcV4.Addr())
	}
	w.s.SetPolicy(Policy{AllowIPOverride: true})
	wantAddr := netip.MustParseAddr("198.51.100.9")
	if got := send(); got.Addr.Addr() != wantAddr {
		t.Errorf("after SetPolicy: tracker got an announce from %v, want %v", got.Addr, wantAddr)
	}
}

// TestAnnounceNumWantFromTracker checks, over a real tracker, that the
// number of peers in a reply is the tracker's numwant within the room of
// MaxPacket, and that a new tracker config reaches the replies with no
// call on the Server.
func TestAnnounceNumWantFromTracker(t *testing.T) {
	pt, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{DefaultNumWant: 30, MaxNumWant: 1000}, pt)
	if err != nil {
		t.Fatal(err)
	}
	w := newTestWorker(t, Config{}, tr)
	r := testAnnounce()
	swarm(t, tr, r.InfoHash, 300)
	peers := func(src netip.AddrPort, numWant int32) int {
		t.Helper()
		r.ConnID, r.NumWant = w.connID(src), numWant
		reply := w.deliver(src, AppendAnnounce(nil, &r))
		if len(reply) < announceReplyLen || binary.BigEndian.Uint32(reply) != actionAnnounce {
			t.Fatalf("reply %x is not an announce reply", reply)
		}
		n := peertable.PeerLenV4
		if src.Addr().Is6() {
			n = peertable.PeerLenV6
		}
		return (len(reply) - announceReplyLen) / n
	}
	room4, room6 := (1500-28-20)/6, (1500-48-20)/18 // 242 and 79
	for _, tc := range []struct {
		name    string
		src     netip.AddrPort
		numWant int32
		want    int
	}{
		{"default v4", srcV4, -1, 30},
		{"default v6", srcV6, -1, 30},
		{"asked v4", srcV4, 100, 100},
		{"asked beyond the room v4", srcV4, 10000, room4},
		{"asked beyond the room v6", srcV6, 10000, room6},
		{"none", srcV6, 0, 0},
	} {
		if got := peers(tc.src, tc.numWant); got != tc.want {
			t.Errorf("%s: numwant %d got %d peers, want %d", tc.name, tc.numWant, got, tc.want)
		}
	}
	if err := tr.SetConfig(tracker.Config{DefaultNumWant: 7, MaxNumWant: 60}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		src     netip.AddrPort
		numWant int32
		want    int
	}{{srcV4, -1, 7}, {srcV6, -1, 7}, {srcV4, 10000, 60}, {srcV6, 10000, 60}} {
		if got := peers(tc.src, tc.numWant); got != tc.want {
			t.Errorf("after tracker.SetConfig: numwant %d from %v got %d peers, want %d", tc.numWant, tc.src, got, tc.want)
		}
	}
}

// TestPrefetchNamesTheBatch checks what a batch hands to core.Prefetch:
// each announce's info hash with its source address and announced port,
// each scrape's info hashes with no address, nothing for anything else,
// and no more than the worker's room.
func TestPrefetchNamesTheBatch(t *testing.T) {
	rec := &recorder{}
	w := newTestWorker(t, Config{}, rec)
	w.pre = make([]peertable.Prefetch, 0, 8)
	ih := func(b byte) peertable.InfoHash { return peertable.InfoHash{0: b, 19: b} }
	msg := func(src netip.AddrPort, pkt []byte) message {
		return message{buf: pkt, n: len(pkt), src: src}
	}
	announce := func(src netip.AddrPort, h byte, port uint16) []byte {
		return AppendAnnounce(nil, &AnnounceRequest{ConnID: w.connID(src), InfoHash: ih(h), Port: port, NumWant: -1})
	}
	scrape := func(src netip.AddrPort, hashes ...byte) []byte {
		r := &ScrapeRequest{ConnID: w.connID(src)}
		for _, h := range hashes {
			r.InfoHashes = append(r.InfoHashes, ih(h))
		}
		return AppendScrape(nil, r)
	}
	msgs := []message{
		msg(srcV4, announce(srcV4, 1, 6881)),
		msg(srcV4, AppendConnect(nil, ConnectRequest{TxID: 7})),
		msg(srcV6, announce(srcV6, 2, 6882)),
		msg(srcV4, announce(srcV4, 9, 1)[:10]),            // shorter than a header
		msg(srcV4, announce(srcV4, 9, 1)[:announceLen-1]), // shorter than an announce
		msg(srcV6, scrape(srcV6, 3, 4)),
		msg(srcV4, scrape(srcV4, 5, 6, 7, 8, 10, 11)), // only room for four
	}
	w.prefetch(msgs)
	want := []peertable.Prefetch{
		{InfoHash: ih(1), Addr: netip.AddrPortFrom(srcV4.Addr(), 6881)},
		{InfoHash: ih(2), Addr: netip.AddrPortFrom(srcV6.Addr(), 6882)},
		{InfoHash: ih(3)}, {InfoHash: ih(4)},
		{InfoHash: ih(5)}, {InfoHash: ih(6)}, {InfoHash: ih(7)}, {InfoHash: ih(8)},
	}
	if len(rec.prefetched) != len(want) {
		t.Fatalf("prefetched %d requests, want %d: %v", len(rec.prefetched), len(want), rec.prefetched)
	}
	for i, r := range rec.prefetched {
		if r.InfoHash != want[i].InfoHash || r.Addr != want[i].Addr {
			t.Errorf("request %d: %x from %v, want %x from %v", i, r.InfoHash, r.Addr, want[i].InfoHash, want[i].Addr)
		}
	}

	rec.prefetched = nil
	w.prefetch(msgs[1:2]) // a connect alone: no call at all
	if rec.prefetched != nil {
		t.Errorf("a batch of a connect prefetched %v", rec.prefetched)
	}
}
