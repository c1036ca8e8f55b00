package httpcompat

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// benchSwarm returns a handler-only Server whose tracker holds a swarm of
// n leechers of each family, and that swarm's info hash.
func benchSwarm(tb testing.TB, n int) (*Server, peertable.InfoHash) {
	tb.Helper()
	tr := newTracker(tb)
	s, err := newServer(Config{Logger: slog.New(slog.DiscardHandler)}, tr)
	if err != nil {
		tb.Fatal(err)
	}
	ih := hashOf("bench")
	for i := range n {
		for _, a := range []netip.Addr{
			netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
			netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}),
		} {
			req := tracker.AnnounceRequest{InfoHash: ih, Addr: netip.AddrPortFrom(a, 6881), Left: 1, NumWant: 0}
			if _, err := tr.Announce(&req, nil); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return s, ih
}

// benchQuery is what a typical client sends.
func benchQuery(ih peertable.InfoHash, extra string) string {
	return "info_hash=" + escape(ih[:]) + "&peer_id=-qB4650-" + "k8hj0wgej6ch" +
		"&port=51413&uploaded=0&downloaded=0&left=1048576&corrupt=0&key=5A2B3C4D&event=&numwant=50&no_peer_id=1&supportcrypto=1&redundant=0" + extra
}

func BenchmarkParseAnnounce(b *testing.B) {
	q := benchQuery(hashOf("bench"), "")
	var aq AnnounceQuery
	b.SetBytes(int64(len(q)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseAnnounce(q, &aq); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAnnounce is one announce as the handler runs it: parse the
// query, call the core (50 peers from a swarm of 1000), encode the reply.
func BenchmarkAnnounce(b *testing.B) {
	s, ih := benchSwarm(b, 1000)
	for _, fam := range []string{"v4", "v6"} {
		for _, compact := range []int{1, 0} {
			b.Run(fmt.Sprintf("family=%s/compact=%d", fam, compact), func(b *testing.B) {
				client := netip.MustParseAddr("192.0.2.1")
				if fam == "v6" {
					client = netip.MustParseAddr("2001:db8:ffff::1")
				}
				q := benchQuery(ih, "&compact="+strconv.Itoa(compact))
				x := s.newExchange()
				path := copy(x.path[:], "/announce")
				b.ReportAllocs()
				for b.Loop() {
					x.out = s.announce(x, client, x.path[:path], q)
				}
				b.SetBytes(int64(len(x.out)))
			})
		}
	}
}

func BenchmarkScrape(b *testing.B) {
	s, ih := benchSwarm(b, 10)
	for _, n := range []int{1, 64} {
		b.Run(fmt.Sprintf("hashes=%d", n), func(b *testing.B) {
			q := ""
			for i := range n {
				h := ih
				h[19] += byte(i)
				q += "info_hash=" + escape(h[:]) + "&"
			}
			x := s.newExchange()
			b.ReportAllocs()
			for b.Loop() {
				x.out = s.scrape(x, q)
			}
		})
	}
}

// nopWriter is a ResponseWriter that keeps nothing, so that
// BenchmarkServeHTTP counts the handler's allocations alone.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

func benchRequest(tb testing.TB, ih peertable.InfoHash) *http.Request {
	u, err := url.Parse("/announce?" + benchQuery(ih, ""))
	if err != nil {
		tb.Fatal(err)
	}
	return &http.Request{Method: "GET", URL: u, RemoteAddr: "192.0.2.1:40000", Header: http.Header{}}
}

// BenchmarkServeHTTP runs the handler as net/http calls it, minus what
// net/http itself does per request.
func BenchmarkServeHTTP(b *testing.B) {
	s, ih := benchSwarm(b, 1000)
	r := benchRequest(b, ih)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		s.ServeHTTP(w, r)
	}
}

func TestAnnounceDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	s, ih := benchSwarm(t, 100)
	for _, tc := range []struct{ client, extra string }{
		{"192.0.2.1", ""}, {"2001:db8:ffff::1", ""}, {"192.0.2.1", "&compact=0"}, {"2001:db8:ffff::1", "&compact=0"},
	} {
		client := netip.MustParseAddr(tc.client)
		q := benchQuery(ih, tc.extra)
		x := s.newExchange()
		x.out = s.announce(x, client, nil, q) // the peer joins
		if !bytes.Contains(x.out, []byte("8:intervali")) {
			t.Fatalf("announce from %s%s: %q", tc.client, tc.extra, x.out)
		}
		if n := testing.AllocsPerRun(100, func() { x.out = s.announce(x, client, nil, q) }); n != 0 {
			t.Errorf("announce from %s%s allocated %v times, want 0", tc.client, tc.extra, n)
		}
	}
	x := s.newExchange()
	scrape := "info_hash=" + escape(ih[:]) + "&info_hash=" + escape(bytesOf(7))
	if x.out = s.scrape(x, scrape); !bytes.HasPrefix(x.out, []byte("d5:files")) {
		t.Fatalf("scrape: %q", x.out)
	}
	if n := testing.AllocsPerRun(100, func() { x.out = s.scrape(x, scrape) }); n != 0 {
		t.Errorf("scrape allocated %v times, want 0", n)
	}
	r := benchRequest(t, ih)
	w := &nopWriter{h: http.Header{}}
	s.ServeHTTP(w, r)
	if n := testing.AllocsPerRun(100, func() { s.ServeHTTP(w, r) }); n != 0 {
		t.Errorf("ServeHTTP allocated %v times, want 0", n)
	}
}

// fullScrapeTable returns a table of n swarms with random info hashes,
// each with a seeder and a leecher.
func fullScrapeTable(b *testing.B, n int) *peertable.Table {
	table, err := peertable.New(peertable.Config{Swarms: n})
	if err != nil {
		b.Fatal(err)
	}
	var ih peertable.InfoHash
	for i := range n {
		binary.BigEndian.PutUint64(ih[:], rand.Uint64()) // random, as real info hashes are
		binary.BigEndian.PutUint64(ih[8:], rand.Uint64())
		binary.BigEndian.PutUint32(ih[16:], uint32(i))
		for j, seeder := range []bool{true, false} {
			a := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), uint16(6881+j))
			table.Announce(&peertable.Announce{InfoHash: ih, Addr: a, Seeder: seeder}, nil)
		}
	}
	return table
}

// BenchmarkFullScrapeBuild builds the full scrape of a table whose swarms
// have a seeder and a leecher each, and reports the reply's sizes.
func BenchmarkFullScrapeBuild(b *testing.B) {
	for _, n := range []int{100_000} {
		b.Run(fmt.Sprintf("swarms=%d", n), func(b *testing.B) {
			f := newFullScrape(fullScrapeTable(b, n), &Config{FullScrapeEvery: time.Minute, Logger: slog.New(slog.DiscardHandler)})
			var rep *fullReply
			var err error
			b.ReportAllocs()
			for b.Loop() {
				if rep, err = f.build(time.Now()); err != nil {
					b.Fatal(err)
				}
				f.cur.Store(rep) // as reply does: the next build sizes from it
			}
			b.ReportMetric(float64(rep.size), "bytes")
			b.ReportMetric(float64(len(rep.gz)), "gzip-bytes")
		})
	}
}

// BenchmarkFullScrapeServe answers a cached full scrape, as is to a
// client that accepts gzip and decompressed to one that does not.
func BenchmarkFullScrapeServe(b *testing.B) {
	const n = 100_000
	tr, err := tracker.New(tracker.Config{}, fullScrapeTable(b, n))
	if err != nil {
		b.Fatal(err)
	}
	s, err := newServer(Config{FullScrape: true, FullScrapeCache: time.Hour, Logger: slog.New(slog.DiscardHandler)}, tr)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.full.reply(s.now()); err != nil {
		b.Fatal(err)
	}
	for _, gz := range []bool{true, false} {
		b.Run(fmt.Sprintf("swarms=%d/gzip=%v", n, gz), func(b *testing.B) {
			u, _ := url.Parse("/scrape")
			r := &http.Request{Method: "GET", URL: u, Header: http.Header{}}
			if gz {
				r.Header.Set("Accept-Encoding", "gzip")
			}
			w := &nopWriter{h: http.Header{}}
			s.full.limit = newLimiter(0, maxScrapeSources) // no limit
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				r.RemoteAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 1).String()
				s.ServeHTTP(w, r)
			}
		})
	}
}

// bodyWriter is a ResponseWriter that keeps the last body in a buffer it
// reuses, so that a test can read replies without allocating per call.
type bodyWriter struct {
	h    http.Header
	body []byte
}

func (w *bodyWriter) Header() http.Header { return w.h }
func (w *bodyWriter) Write(b []byte) (int, error) {
	w.body = append(w.body[:0], b...)
	return len(b), nil
}
func (w *bodyWriter) WriteHeader(int) {}

// TestBuffersFollowMaxNumWant reloads the tracker's MaxNumWant up and
// down under a Server that is answering, and checks that each reply then
// carries the new number of peers and that, once the pooled buffers have
// adjusted, an announce allocates nothing: a reply larger than the
// buffers made at Listen (2500 peers as dictionaries, about 85 KB) is
// kept in the pool rather than made again for every request.
func TestBuffersFollowMaxNumWant(t *testing.T) {
	s, ih := benchSwarm(t, 3000)
	query := strings.Replace(benchQuery(ih, ""), "&numwant=50", "&numwant=5000", 1)
	requests := map[string]*http.Request{}
	for _, tc := range []struct{ name, remote, extra string }{
		{"v4 compact=0", "192.0.2.1:40000", "&compact=0"},
		{"v6 compact=1", "[2001:db8:ffff::1]:40000", ""},
	} {
		u, err := url.Parse("/announce?" + query + tc.extra)
		if err != nil {
			t.Fatal(err)
		}
		requests[tc.name] = &http.Request{Method: "GET", URL: u, RemoteAddr: tc.remote, Header: http.Header{}}
	}
	peers := func(name string, body []byte) int {
		t.Helper()
		v, err := bencodetest.Decode(body)
		if err != nil {
			t.Fatalf("%s: reply %.200q: %v", name, body, err)
		}
		m, _ := v.(map[string]any)
		if l, ok := m["peers"].([]any); ok {
			return len(l)
		}
		p6, _ := m["peers6"].(string)
		return len(p6) / peertable.PeerLenV6
	}
	w := &bodyWriter{h: http.Header{}}
	for _, maxNumWant := range []int{200, 2500, 20, 2500} {
		if err := s.t.SetConfig(tracker.Config{DefaultNumWant: 10, MaxNumWant: maxNumWant}); err != nil {
			t.Fatal(err)
		}
		for name, r := range requests {
			s.ServeHTTP(w, r) // buffers adjust on the first request
			s.ServeHTTP(w, r)
			if got := peers(name, w.body); got != maxNumWant {
				t.Errorf("MaxNumWant %d, %s asking for 5000: %d peers, want %d", maxNumWant, name, got, maxNumWant)
			}
			if raceEnabled {
				continue
			}
			if n := testing.AllocsPerRun(20, func() { s.ServeHTTP(w, r) }); n != 0 {
				t.Errorf("MaxNumWant %d, %s: ServeHTTP allocated %v times, want 0", maxNumWant, name, n)
			}
		}
	}

	// Lowered again, MaxNumWant no longer needs the large buffers: the
	// pool lets them go.
	x := s.newExchange()
	s.announce(x, netip.MustParseAddr("2001:db8:ffff::2"), nil, query+"&compact=0")
	x.wire = append(x.wire, x.out...)
	if err := s.t.SetConfig(tracker.Config{DefaultNumWant: 10, MaxNumWant: 20}); err != nil {
		t.Fatal(err)
	}
	s.putExchange(x)
	peersLen, outLen := s.bufLens()
	if cap(x.peers) > 2*peersLen || cap(x.out) > outLen || cap(x.wire) > flushAt+outLen {
		t.Errorf("after MaxNumWant went from 2500 to 20, the pool kept buffers of %d, %d and %d bytes", cap(x.peers), cap(x.out), cap(x.wire))
	}
}
