package httpcompat

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/tracker"
)

// announceFrom runs one announce through s as if from remote, and
// returns the decoded reply.
func announceFrom(t *testing.T, s *Server, remote string, port int) map[string]any {
	t.Helper()
	r := httptest.NewRequest("GET", "/announce?"+announceQuery(hashOf("limit"), port, "1", ""), nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	v, err := bencodetest.Decode(w.Body.Bytes())
	m, ok := v.(map[string]any)
	if err != nil || !ok {
		t.Fatalf("announce from %s: reply %q: %v", remote, w.Body.Bytes(), err)
	}
	return m
}

func TestAnnounceRateLimit(t *testing.T) {
	s, _, clk := newFullServer(t, Config{AnnounceRate: 0.1, AnnounceBurst: 2})
	limited := func(remote string) (bool, any) {
		m := announceFrom(t, s, remote, 6881)
		if f, ok := m["failure reason"]; ok {
			if f != rateLimitedText {
				t.Fatalf("announce from %s: failure reason %q", remote, f)
			}
			return true, m["retry in"]
		}
		return false, nil
	}
	for _, tc := range []struct {
		name    string
		remote  string
		advance time.Duration
		limited bool
		retryIn int64
	}{
		{"first", "192.0.2.1:1000", 0, false, 0},
		{"second, other port", "192.0.2.1:1001", 0, false, 0},
		{"over the burst", "192.0.2.1:1000", 0, true, 1},
		{"other client", "192.0.2.2:1000", 0, false, 0},
		{"IPv6", "[2001:db8:1:2::1]:1000", 0, false, 0},
		{"IPv6", "[2001:db8:1:2::1]:1000", 0, false, 0},
		{"same /64", "[2001:db8:1:2::ffff]:1000", 0, true, 1},
		{"other /64", "[2001:db8:1:3::1]:1000", 0, false, 0},
		{"5s later", "192.0.2.1:1000", 5 * time.Second, true, 1},
		{"10s later", "192.0.2.1:1000", 5 * time.Second, false, 0},
		{"10s later, again", "192.0.2.1:1000", 0, true, 1},
	} {
		clk.advance(tc.advance)
		got, retry := limited(tc.remote)
		if got != tc.limited {
			t.Errorf("%s: announce from %s limited = %v, want %v", tc.name, tc.remote, got, tc.limited)
			continue
		}
		if got && retry != tc.retryIn {
			t.Errorf("%s: retry in = %v, want %d", tc.name, retry, tc.retryIn)
		}
	}
	st := s.Stats()
	if st.RateLimited != 4 || st.Announce.Failures != 4 || st.Announce.OK != 7 {
		t.Errorf("Stats = %+v, want 4 rate limited of 11 announces", st)
	}
	// A scrape is not limited.
	if code, body := scrapeFrom(t, s, "192.0.2.1:1000"); code != 200 || !strings.HasPrefix(body, "d5:files") {
		t.Errorf("scrape from a rate-limited client: %d %q", code, body)
	}

	// One announce per ten minutes: retry in 10.
	s, _, _ = newFullServer(t, Config{AnnounceRate: 1.0 / 600})
	announceFrom(t, s, "192.0.2.1:1000", 6881)
	if got, retry := limited("192.0.2.1:1000"); !got || retry != int64(10) {
		t.Errorf("at one per 10 minutes: limited = %v, retry in %v, want true, 10", got, retry)
	}
}

func scrapeFrom(t *testing.T, s *Server, remote string) (int, string) {
	t.Helper()
	r := httptest.NewRequest("GET", "/scrape?info_hash="+escape(bytesOf(1)), nil)
	r.RemoteAddr = remote
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestAnnounceRateLimitConfig(t *testing.T) {
	nan := 0.0
	nan /= nan
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{AnnounceRate: -1}, "AnnounceRate"},
		{Config{AnnounceRate: nan}, "AnnounceRate"},
		{Config{AnnounceRate: 2e9}, "AnnounceRate"},
		{Config{AnnounceRate: 1, AnnounceBurst: -1}, "AnnounceBurst"},
	} {
		if err := tc.cfg.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%+v) = %v, want an error naming %s", tc.cfg, err, tc.want)
		}
	}
}

func TestRateLimitDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	for _, tc := range []struct {
		name  string
		rate  float64
		burst int
	}{{"allowed", 1e9, 1e9}, {"refused", 1e-3, 1}} {
		s, ih := benchSwarm(t, 100)
		l, err := newServer(Config{AnnounceRate: tc.rate, AnnounceBurst: tc.burst, Logger: slog.New(slog.DiscardHandler)}, s.t)
		if err != nil {
			t.Fatal(err)
		}
		r := benchRequest(t, ih)
		w := &nopWriter{h: http.Header{}}
		l.ServeHTTP(w, r)
		l.ServeHTTP(w, r)
		if n := testing.AllocsPerRun(100, func() { l.ServeHTTP(w, r) }); n != 0 {
			t.Errorf("%s announce allocated %v times, want 0", tc.name, n)
		}
		if st := l.Stats(); (st.RateLimited > 0) != (tc.name == "refused") {
			t.Errorf("%s: Stats = %+v", tc.name, st)
		}
	}
}

// TestConnFloodBounded opens more connections than MaxConns that send
// nothing. The server holds at most MaxConns of them, with a bounded
// number of goroutines; ReadHeaderTimeout closes them in turn, and a
// normal client queued behind them is served.
func TestConnFloodBounded(t *testing.T) {
	const maxConns, flood = 4, 16
	before := runtime.NumGoroutine()
	ts := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, MaxConns: maxConns, ReadHeaderTimeout: 200 * time.Millisecond})
	addr := strings.TrimPrefix(ts.v4, "http://")

	var peak atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			peak.Store(max(peak.Load(), int64(runtime.NumGoroutine())))
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	var idle []net.Conn
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	// Let the server accept all it will before the normal client comes:
	// the sampler watches meanwhile. Nothing here depends on how long
	// anything takes; a slow machine only samples less.
	time.Sleep(100 * time.Millisecond)
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(c, rawRequest(17001)); err != nil {
		t.Fatal(err)
	}
	readReply(t, bufio.NewReader(c))
	close(stop)
	wg.Wait()

	// The server closed every idle connection itself.
	for i, ic := range idle {
		ic.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := ic.Read(make([]byte, 512)); err == nil || isTimeout(err) {
			t.Errorf("idle connection %d: Read = %d, %v; want closed by the server", i, n, err)
		}
	}
	// Serve and its accept loop, one goroutine per served connection,
	// the sampler, and slack for goroutines of an earlier test still
	// ending.
	limit := int64(before + 2 + maxConns + 1 + 2)
	t.Logf("goroutines: %d before the server, peak %d, limit %d", before, peak.Load(), limit)
	if p := peak.Load(); p > limit {
		t.Errorf("peak of %d goroutines under a flood of %d connections with MaxConns %d, want at most %d", p, flood, maxConns, limit)
	}
}

// SetLimits switches the limit on, off and to a new rate while the
// server runs (what a reload does), and ignores the connect fields.
func TestSetLimits(t *testing.T) {
	s, _, _ := newFullServer(t, Config{})
	limited := func() bool {
		_, ok := announceFrom(t, s, "192.0.2.1:1000", 6881)["failure reason"]
		return ok
	}
	for i := range 3 {
		if limited() {
			t.Fatalf("announce %d limited with no limit", i)
		}
	}
	if err := s.SetLimits(tracker.Limits{ConnectRate: 0.1, ConnectBurst: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if limited() {
			t.Fatalf("announce %d limited by a connect limit", i)
		}
	}
	if err := s.SetLimits(tracker.Limits{AnnounceRate: 0.1, AnnounceBurst: 1}); err != nil {
		t.Fatal(err)
	}
	if limited() || !limited() {
		t.Fatal("a limit of one announce: want the first allowed, the second limited")
	}
	if err := s.SetLimits(tracker.Limits{}); err != nil {
		t.Fatal(err)
	}
	if limited() {
		t.Fatal("limited after the limit was switched off")
	}
	if err := s.SetLimits(tracker.Limits{AnnounceRate: -1}); err == nil || !strings.Contains(err.Error(), "AnnounceRate") {
		t.Fatalf("SetLimits(AnnounceRate -1) = %v, want an error naming AnnounceRate", err)
	}
	if limited() {
		t.Fatal("a refused SetLimits changed the limit in effect")
	}
}
