package httpcompat

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// scrapeCounts are complete, downloaded and incomplete, as a scrape
// reply gives them.
type scrapeCounts [3]int64

// decodeFull decodes a full scrape reply into its files, checking its
// shape (bencodetest checks that keys are sorted) and its flags.
func decodeFull(t *testing.T, body []byte, wantInterval int64) map[peertable.InfoHash]scrapeCounts {
	t.Helper()
	v, err := bencodetest.Decode(body)
	if err != nil {
		t.Fatalf("full scrape reply %.80q: %v", body, err)
	}
	m, _ := v.(map[string]any)
	files, ok := m["files"].(map[string]any)
	if !ok || len(m) != 2 {
		t.Fatalf("full scrape reply %.200v: want files and flags", v)
	}
	flags, _ := m["flags"].(map[string]any)
	wantInt(t, flags, "min_request_interval", wantInterval)
	out := map[peertable.InfoHash]scrapeCounts{}
	for k, v := range files {
		f, ok := v.(map[string]any)
		if len(k) != 20 || !ok || len(f) != 3 {
			t.Fatalf("full scrape file %x: %v, want a 20-byte key and three counts", k, v)
		}
		var c scrapeCounts
		for i, key := range []string{"complete", "downloaded", "incomplete"} {
			c[i], _ = f[key].(int64)
		}
		out[peertable.InfoHash([]byte(k))] = c
	}
	return out
}

func checkFiles(t *testing.T, got, want map[peertable.InfoHash]scrapeCounts) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("full scrape lists %d swarms, want %d", len(got), len(want))
	}
	for ih, w := range want {
		if c, ok := got[ih]; !ok || c != w {
			t.Errorf("full scrape: %q has counts %v (listed %v), want %v", ih[:], c, ok, w)
		}
	}
}

// retryIn returns the failure reason and "retry in" minutes of a refusal.
func retryIn(t *testing.T, body []byte) (string, int64) {
	t.Helper()
	v, err := bencodetest.Decode(body)
	if err != nil {
		t.Fatalf("reply %q: %v", body, err)
	}
	m, _ := v.(map[string]any)
	reason, ok := m["failure reason"].(string)
	if !ok {
		t.Fatalf("reply %.200q is not a refusal", body)
	}
	n, _ := m["retry in"].(int64)
	return reason, n
}

func TestFullScrapeLoopback(t *testing.T) {
	ts := startServer(t, Config{FullScrape: true})
	a, b, c := hashOf("full-a"), hashOf("full-b"), hashOf("full-c")
	ts.announce(t, ts.v4, a, 7101, "0", "&event=completed")
	ts.announce(t, ts.v6, a, 7102, "5", "")
	ts.announce(t, ts.v4, b, 7103, "5", "")
	ts.announce(t, ts.v4, b, 7104, "5", "")
	ts.announce(t, ts.v6, c, 7105, "0", "")
	want := map[peertable.InfoHash]scrapeCounts{a: {1, 1, 1}, b: {0, 0, 2}, c: {1, 0, 0}}

	fetch := func(url string, gz bool) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := ts.client.Do(req) // DisableCompression: no gzip unless asked
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: reading body: %v", url, err)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/plain" {
			t.Fatalf("GET %s: status %d, Content-Type %q", url, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		return resp, body
	}

	// The IPv4 client accepts gzip, the IPv6 one does not: two sources,
	// so neither is refused for the other's scrape.
	resp, zipped := fetch(ts.v4+"/scrape", true)
	if ce := resp.Header.Get("Content-Encoding"); ce != "gzip" {
		t.Fatalf("gzip client: Content-Encoding %q, want gzip", ce)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(zipped)) {
		t.Errorf("gzip client: Content-Length %s for %d bytes", cl, len(zipped))
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	checkFiles(t, decodeFull(t, unzipped, 60), want)

	resp, plain := fetch(ts.v6+"/0123456789abcdef/scrape", false)
	if ce := resp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("plain client: Content-Encoding %q, want none", ce)
	}
	if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(plain)) {
		t.Errorf("plain client: Content-Length %s for %d bytes", cl, len(plain))
	}
	if !bytes.Equal(plain, unzipped) {
		t.Errorf("plain reply differs from the gunzipped one:\n%q\n%q", plain, unzipped)
	}
	if n := ts.s.full.builds.Load(); n != 1 {
		t.Errorf("%d builds for two scrapes within the cache time, want 1", n)
	}

	// Again from 127.0.0.1: refused for a minute (the default interval).
	_, body := fetch(ts.v4+"/scrape", true)
	if reason, n := retryIn(t, body); n != 1 {
		t.Errorf("second full scrape from one source: %q, retry in %d, want 1", reason, n)
	}
	// A scrape that names its hashes is not limited.
	m := ts.get(t, ts.v4+"/scrape?info_hash="+escape(b[:]))
	files, _ := m["files"].(map[string]any)
	wantInt(t, files[string(b[:])].(map[string]any), "incomplete", 2)
}

// A fakeClock is a Server's clock in tests that move time by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// newFullServer returns a handler-only Server with full scrape on and a
// clock that the test moves.
func newFullServer(t *testing.T, cfg Config) (*Server, *tracker.Tracker, *fakeClock) {
	t.Helper()
	cfg.FullScrape = true
	cfg.Logger = slog.New(slog.DiscardHandler)
	tr := newTracker(t)
	s, err := newServer(cfg, tr)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	s.now = clk.now
	return s, tr, clk
}

// fullScrapeFrom asks s for a full scrape as remote ("192.0.2.1:1234")
// and returns the reply, gunzipped if it came compressed.
func fullScrapeFrom(t *testing.T, s *Server, method, remote string, gz bool) (*httptest.ResponseRecorder, []byte) {
	t.Helper()
	r := httptest.NewRequest(method, "/scrape", nil)
	r.RemoteAddr = remote
	if gz {
		r.Header.Set("Accept-Encoding", "gzip")
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	body := w.Body.Bytes()
	if w.Header().Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("%s: gzip reply: %v", remote, err)
		}
		if body, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: gunzip: %v", remote, err)
		}
	}
	return w, body
}

func announceTo(t *testing.T, tr *tracker.Tracker, ih peertable.InfoHash, addr string, left uint64, ev peertable.Event) {
	t.Helper()
	req := tracker.AnnounceRequest{InfoHash: ih, Addr: netip.MustParseAddrPort(addr), Left: left, Event: ev}
	if _, err := tr.Announce(&req, nil); err != nil {
		t.Fatalf("announce %s: %v", addr, err)
	}
}

func TestFullScrapeCache(t *testing.T) {
	s, tr, clk := newFullServer(t, Config{}) // cache 30s, interval 60s
	a, b := hashOf("cache-a"), hashOf("cache-b")
	announceTo(t, tr, a, "198.51.100.1:6881", 0, peertable.EventNone)

	_, body := fullScrapeFrom(t, s, "GET", "192.0.2.1:1000", true)
	first := map[peertable.InfoHash]scrapeCounts{a: {1, 0, 0}}
	checkFiles(t, decodeFull(t, body, 60), first)

	// Changes after the build stay unseen until the cache time is up.
	announceTo(t, tr, a, "198.51.100.2:6881", 10, peertable.EventNone)
	announceTo(t, tr, b, "[2001:db8::1]:6881", 0, peertable.EventCompleted)
	clk.advance(29 * time.Second)
	_, body = fullScrapeFrom(t, s, "GET", "192.0.2.2:1000", false)
	checkFiles(t, decodeFull(t, body, 60), first)
	w, _ := fullScrapeFrom(t, s, "HEAD", "192.0.2.3:1000", false)
	if cl := w.Header().Get("Content-Length"); w.Body.Len() != 0 || cl != strconv.Itoa(len(body)) {
		t.Errorf("HEAD: %d body bytes, Content-Length %s; want none and %d", w.Body.Len(), cl, len(body))
	}
	if n := s.full.builds.Load(); n != 1 {
		t.Errorf("%d builds within the cache time, want 1", n)
	}

	clk.advance(time.Second)
	_, body = fullScrapeFrom(t, s, "GET", "192.0.2.4:1000", true)
	checkFiles(t, decodeFull(t, body, 60), map[peertable.InfoHash]scrapeCounts{a: {1, 0, 1}, b: {1, 1, 0}})
	if n := s.full.builds.Load(); n != 2 {
		t.Errorf("%d builds after the cache time, want 2", n)
	}
}

// TestFullScrapeSingleFlight sends concurrent full scrapes with nothing
// built yet: one builds, the others wait and share its reply.
func TestFullScrapeSingleFlight(t *testing.T) {
	s, tr, _ := newFullServer(t, Config{})
	for i := range 2000 {
		var ih peertable.InfoHash
		binary.BigEndian.PutUint32(ih[:], uint32(i))
		announceTo(t, tr, ih, "198.51.100.1:6881", uint64(i%2), peertable.EventNone)
	}
	const clients = 8
	bodies := make([][]byte, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			r := httptest.NewRequest("GET", "/scrape", nil)
			r.RemoteAddr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 1000).String()
			r.Header.Set("Accept-Encoding", "gzip")
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			bodies[i] = w.Body.Bytes()
		})
	}
	wg.Wait()
	if n := s.full.builds.Load(); n != 1 {
		t.Errorf("%d concurrent full scrapes built %d replies, want 1", clients, n)
	}
	for i := range bodies {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Errorf("client %d got a different reply from client 0", i)
		}
	}
}

func TestFullScrapeRateLimit(t *testing.T) {
	s, _, clk := newFullServer(t, Config{FullScrapeEvery: 5 * time.Minute, FullScrapeCache: time.Hour})
	const want = "full scrape refused: at most one every 5m0s per client"
	tests := []struct {
		after   time.Duration // since the previous step
		remote  string
		retryIn int64 // 0: answered
	}{
		{0, "192.0.2.1:1000", 0},
		{10 * time.Second, "192.0.2.1:1001", 5}, // 4m50s left
		{0, "192.0.2.2:1000", 0},                // another address
		{4 * time.Minute, "192.0.2.1:1000", 1},  // 50s left
		{0, "[2001:db8::1]:1000", 0},
		{0, "[2001:db8::ffff]:1000", 5},  // the same /64
		{0, "[2001:db8:0:1::1]:1000", 0}, // the next /64
		{50 * time.Second, "192.0.2.1:1000", 0},
		{0, "192.0.2.1:1000", 5},
	}
	for i, tt := range tests {
		clk.advance(tt.after)
		_, body := fullScrapeFrom(t, s, "GET", tt.remote, true)
		if tt.retryIn == 0 {
			decodeFull(t, body, 300)
			continue
		}
		reason, n := retryIn(t, body)
		if reason != want || n != tt.retryIn {
			t.Errorf("step %d, %s: refusal %q, retry in %d; want %q, %d", i, tt.remote, reason, n, want, tt.retryIn)
		}
	}
	if n := s.full.builds.Load(); n != 1 {
		t.Errorf("%d builds within the cache time, want 1", n)
	}
}

// TestFullScrapeLimitBounded floods the limit with more sources than it
// remembers: its memory stays bounded, and it forgets the oldest first.
func TestFullScrapeLimitBounded(t *testing.T) {
	s, _, clk := newFullServer(t, Config{})
	l := s.full.limit
	src := func(i int) [16]byte {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(0x20010db8<<32|i))
		return sourceKey(netip.AddrFrom16([16]byte(append(b[:], 0, 0, 0, 0, 0, 0, 0, 1))))
	}
	const sources = 3 * maxScrapeSources
	for i := range sources {
		if wait := l.allow(src(i), clk.now()); wait != 0 {
			t.Fatalf("source %d refused (wait %v) on its first request", i, wait)
		}
		if i%1000 == 0 {
			clk.advance(time.Millisecond)
		}
	}
	if len(l.last) > maxScrapeSources || l.n > maxScrapeSources || len(l.ring) != maxScrapeSources {
		t.Errorf("after %d sources: %d remembered in the map, %d in a ring of %d; want at most %d",
			sources, len(l.last), l.n, len(l.ring), maxScrapeSources)
	}
	if wait := l.allow(src(sources-1), clk.now()); wait == 0 {
		t.Error("the newest source was let through again at once")
	}
	if wait := l.allow(src(0), clk.now()); wait != 0 {
		t.Errorf("the oldest source, forgotten, was refused for %v", wait)
	}
	clk.advance(time.Minute)
	l.allow(src(1), clk.now())
	if len(l.last) != 1 || l.n != 1 {
		t.Errorf("a minute later: %d sources in the map, %d in the ring; want only the new one", len(l.last), l.n)
	}
}

func TestAcceptsGzip(t *testing.T) {
	tests := []struct {
		header []string
		want   bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"GZip"}, true},
		{[]string{"x-gzip"}, true},
		{[]string{"deflate, gzip;q=0.5"}, true},
		{[]string{"br", "gzip"}, true},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0.000"}, false},
		{[]string{"gzip;q=0.001"}, true},
		{[]string{"gzip;Q=0."}, false},
		{[]string{"identity"}, false},
		{[]string{"*"}, true},
		{[]string{"*;q=0"}, false},
		{[]string{"*, gzip;q=0"}, false},
		{[]string{"gzip;q=0, *"}, false},
		{[]string{"deflate;q=0, *;q=0.1"}, true},
	}
	for _, tt := range tests {
		if got := acceptsGzip(tt.header); got != tt.want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", tt.header, got, tt.want)
		}
	}
}
