package udp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// deliverAt is deliver at now, Unix seconds.
func (w *worker) deliverAt(src netip.AddrPort, pkt []byte, now int64) []byte {
	m := &w.msgs[0]
	m.n = copy(m.buf, pkt)
	m.src = src
	w.handle(m, now)
	if len(m.out) == 0 {
		return nil
	}
	return m.out
}

// answered sends pkt from src n times at now and returns how many got a
// reply.
func (w *worker) answered(src netip.AddrPort, pkt []byte, n int, now int64) int {
	got := 0
	for range n {
		if w.deliverAt(src, pkt, now) != nil {
			got++
		}
	}
	return got
}

func TestHandleConnectRateLimit(t *testing.T) {
	w := newTestWorker(t, Config{ConnectRate: 1, ConnectBurst: 3}, &recorder{})
	conn := AppendConnect(nil, ConnectRequest{TxID: 7})
	var (
		v4Other   = netip.MustParseAddrPort("192.0.2.2:40000")
		v4OtherPt = netip.MustParseAddrPort("192.0.2.1:40001")
		v6Same64  = netip.MustParseAddrPort("[2001:db8::ffff:1]:40000")
		v6Other64 = netip.MustParseAddrPort("[2001:db8:0:1::1]:40000")
	)
	for _, tc := range []struct {
		name string
		src  netip.AddrPort
		now  int64
		n    int
		want int
	}{
		{"burst", srcV4, testNow, 10, 3},
		{"other port, same address", v4OtherPt, testNow, 1, 0},
		{"other IPv4 address", v4Other, testNow, 10, 3},
		{"IPv6 burst", srcV6, testNow, 10, 3},
		{"same /64", v6Same64, testNow, 1, 0},
		{"other /64", v6Other64, testNow, 1, 1},
		{"one second later", srcV4, testNow + 1, 10, 1},
		{"ten seconds later", srcV4, testNow + 11, 10, 3},
	} {
		if got := w.answered(tc.src, conn, tc.n, tc.now); got != tc.want {
			t.Errorf("%s: %d of %d connects from %v answered, want %d", tc.name, got, tc.n, tc.src, tc.want)
		}
	}
	st := w.s.Stats()
	if st.Connects != 14 || st.RateLimited != 39 {
		t.Errorf("Stats = %+v, want 14 connects and 39 rate limited", st)
	}
	// A malformed connect is not charged: the source still has its burst.
	if w.deliverAt(v4Other, conn[:15], testNow+100) != nil {
		t.Error("short connect answered")
	}
	if got := w.answered(v4Other, conn, 10, testNow+100); got != 3 {
		t.Errorf("after a malformed connect, %d connects answered, want 3", got)
	}
}

func TestHandleAnnounceRateLimit(t *testing.T) {
	w := newTestWorker(t, Config{AnnounceRate: 0.5, AnnounceBurst: 2}, &recorder{})
	other := netip.MustParseAddrPort("198.51.100.7:6881")
	ann := testAnnounce()
	ann.ConnID = w.connID(srcV4)
	pkt := AppendAnnounce(nil, &ann)
	ann.ConnID = w.connID(other)
	otherPkt := AppendAnnounce(nil, &ann)
	scr := AppendScrape(nil, &ScrapeRequest{ConnID: w.connID(srcV4), InfoHashes: []peertable.InfoHash{{1}}})
	conn := AppendConnect(nil, ConnectRequest{TxID: 7})

	if got := w.answered(srcV4, pkt, 10, testNow); got != 2 {
		t.Errorf("%d of 10 announces at once answered, want the burst of 2", got)
	}
	if got := w.answered(other, otherPkt, 2, testNow); got != 2 {
		t.Errorf("another source: %d of 2 announces answered, want 2", got)
	}
	// Other actions of the limited source are not affected.
	if w.deliverAt(srcV4, scr, testNow) == nil || w.deliverAt(srcV4, conn, testNow) == nil {
		t.Error("scrape or connect of a source over its announce limit not answered")
	}
	// Invalid IDs are not charged to the source they claim.
	bad := bytes.Clone(otherPkt)
	binary.BigEndian.PutUint64(bad, 1)
	if got := w.answered(other, bad, 10, testNow); got != 0 {
		t.Errorf("%d announces with a bad ID answered", got)
	}
	if got := w.answered(srcV4, pkt, 10, testNow+1); got != 0 {
		t.Errorf("a second later, %d announces answered, want 0 at 0.5 a second", got)
	}
	if got := w.answered(srcV4, pkt, 10, testNow+2); got != 1 {
		t.Errorf("two seconds later, %d announces answered, want 1", got)
	}
	st := w.s.Stats()
	if st.Announces != 5 || st.RateLimited != 27 || st.BadConnIDs != 10 {
		t.Errorf("Stats = %+v, want 5 announces, 27 rate limited, 10 bad IDs", st)
	}
}

func TestListenRateLimitErrors(t *testing.T) {
	nan := 0.0
	nan /= nan
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{ConnectRate: -1}, "ConnectRate"},
		{Config{ConnectRate: nan}, "ConnectRate"},
		{Config{AnnounceRate: 2e9}, "AnnounceRate"},
		{Config{ConnectRate: 1, ConnectBurst: -1}, "ConnectBurst"},
		{Config{AnnounceBurst: -1}, "AnnounceBurst"},
	} {
		_, err := newServer(tc.cfg, &recorder{})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("newServer(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

// TestUnprovenRepliesNoLarger checks, beside FuzzHandle, that a source
// that has not proven its address never gets more bytes than it sent.
func TestUnprovenRepliesNoLarger(t *testing.T) {
	ann := testAnnounce()
	ann.ConnID = 0x0102030405060708
	conn := AppendConnect(nil, ConnectRequest{TxID: 1})
	wrongProto := bytes.Clone(conn)
	wrongProto[0] ^= 1
	for _, cfg := range []Config{{}, {ConnectRate: 1, ConnectBurst: 1}} {
		w := newTestWorker(t, cfg, &recorder{})
		for _, tc := range []struct {
			name string
			pkt  []byte
		}{
			{"empty", nil},
			{"one byte", []byte{0}},
			{"short connect", conn[:15]},
			{"connect", conn},
			{"connect again", conn},
			{"connect with trailing bytes", append(bytes.Clone(conn), 1, 2, 3)},
			{"wrong protocol ID", wrongProto},
			{"announce, random ID", AppendAnnounce(nil, &ann)},
			{"announce header only", AppendAnnounce(nil, &ann)[:16]},
			{"scrape, random ID", AppendScrape(nil, &ScrapeRequest{ConnID: ann.ConnID, InfoHashes: make([]peertable.InfoHash, 74)})},
			{"error action", append(binary.BigEndian.AppendUint64(nil, ann.ConnID), 0, 0, 0, 3, 0, 0, 0, 1)},
			{"unknown action", append(binary.BigEndian.AppendUint64(nil, ann.ConnID), 0, 0, 0, 9, 0, 0, 0, 1)},
			{"too large", append(AppendAnnounce(nil, &ann), make([]byte, maxRequestLen)...)},
		} {
			for _, src := range []netip.AddrPort{srcV4, srcV6} {
				if reply := w.deliver(src, tc.pkt); len(reply) > len(tc.pkt) {
					t.Errorf("%s from %v (limits %+v): %d-byte reply to %d bytes", tc.name, src, cfg.ConnectRate, len(reply), len(tc.pkt))
				}
			}
		}
	}
}

// TestFloodHeapBounded drives the handle path with random datagrams,
// half of them well-formed connects, from as many random sources, with
// both rate limits on, and checks the live heap does not grow with the
// flood: the worker keeps nothing per source beyond its fixed tables.
// It bounds memory, not time.
func TestFloodHeapBounded(t *testing.T) {
	n := 1_000_000
	if testing.Short() || raceEnabled {
		n = 100_000
	}
	w := newTestWorker(t, Config{ConnectRate: 2, AnnounceRate: 1}, newTracker(t))
	rng := rand.New(rand.NewPCG(1, 2))
	m := &w.msgs[0]
	conn := AppendConnect(nil, ConnectRequest{})
	flood := func(n int) {
		for i := range n {
			var src netip.Addr
			if i&1 == 0 {
				src = netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, rng.Uint32())))
			} else {
				var a [16]byte
				binary.BigEndian.PutUint64(a[:], rng.Uint64())
				binary.BigEndian.PutUint64(a[8:], rng.Uint64())
				src = netip.AddrFrom16(a)
			}
			m.src = netip.AddrPortFrom(src, uint16(rng.Uint32()|1))
			if i&2 == 0 {
				m.n = copy(m.buf, conn)
				binary.BigEndian.PutUint32(m.buf[12:], rng.Uint32())
			} else {
				m.n = rng.IntN(200)
				for j := 0; j < m.n; j += 8 {
					binary.LittleEndian.PutUint64(m.buf[j:], rng.Uint64())
				}
			}
			w.handle(m, testNow+int64(i>>16))
		}
	}
	flood(1000) // warm up anything lazy
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	flood(n)
	runtime.GC()
	runtime.ReadMemStats(&after)
	const bound = 1 << 20
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > bound {
		t.Errorf("live heap grew by %d bytes over %d datagrams, want under %d", grew, n, bound)
	}
	st := w.s.Stats()
	if st.Connects == 0 || st.Malformed+st.BadConnIDs == 0 {
		t.Errorf("Stats = %+v: the flood did not reach both paths", st)
	}
	t.Logf("%d datagrams: %+v", n, st)
}

// SetLimits changes the limits of running workers (what a reload does):
// on, to another rate, and off; a bad value changes nothing.
func TestSetLimits(t *testing.T) {
	w := newTestWorker(t, Config{}, &recorder{})
	conn := AppendConnect(nil, ConnectRequest{TxID: 7})
	if got := w.answered(srcV4, conn, 10, testNow); got != 10 {
		t.Fatalf("no limit: %d of 10 connects answered", got)
	}
	if err := w.s.SetLimits(tracker.Limits{ConnectRate: 1, ConnectBurst: 3}); err != nil {
		t.Fatal(err)
	}
	w.refreshLimits()
	if got := w.answered(srcV4, conn, 10, testNow); got != 3 {
		t.Errorf("limit of 3: %d of 10 connects answered", got)
	}
	if err := w.s.SetLimits(tracker.Limits{ConnectRate: -1}); err == nil || !strings.Contains(err.Error(), "ConnectRate") {
		t.Errorf("SetLimits with a negative rate = %v, want an error naming ConnectRate", err)
	}
	w.refreshLimits()
	if got := w.answered(srcV4, conn, 1, testNow); got != 0 {
		t.Error("a refused SetLimits changed the limits in effect")
	}
	if err := w.s.SetLimits(tracker.Limits{}); err != nil {
		t.Fatal(err)
	}
	w.refreshLimits()
	if got := w.answered(srcV4, conn, 10, testNow); got != 10 {
		t.Errorf("limits off again: %d of 10 connects answered", got)
	}
}
