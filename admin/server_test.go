package admin

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/udp"
)

var quiet = slog.New(slog.DiscardHandler)

// serve starts s and returns a function that stops it and waits for
// Serve to return nil.
func serve(t *testing.T, s *Server) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve = %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return within 10s of cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

// get fetches path from the listener of s and returns status and body.
func get(t *testing.T, s *Server, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + s.Addrs()[0].String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// status asks s's handler directly, for when the listener is not
// serving.
func status(s *Server, path string) int {
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	return w.Code
}

func listen(t *testing.T, cfg Config, src Sources) *Server {
	t.Helper()
	cfg.Addr, cfg.Logger = "127.0.0.1:0", quiet
	s, err := Listen(cfg, src)
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	return s
}

// TestMetrics announces through real UDP and HTTP frontends and checks
// that /metrics reports their counts and the peer table's.
func TestMetrics(t *testing.T) {
	table, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	core, err := tracker.New(tracker.Config{}, table)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := httpcompat.Listen(httpcompat.Config{Addrs: []string{"127.0.0.1:0"}, Logger: quiet}, core)
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	hctx, hcancel := context.WithCancel(context.Background())
	hdone := make(chan error, 1)
	go func() { hdone <- hs.Serve(hctx) }()
	defer func() { hcancel(); <-hdone }()

	us, err := udp.Listen(udp.Config{Addrs: []string{"127.0.0.1:0"}, Workers: 1, Logger: quiet}, core)
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	uctx, ucancel := context.WithCancel(context.Background())
	udone := make(chan error, 1)
	go func() { udone <- us.Serve(uctx) }()
	defer func() { ucancel(); <-udone }()
	udpAnnounce(t, us.Addrs()[0], peertable.InfoHash{'c'})

	// An IPv6 peer goes in directly: the frontend listens on IPv4 only.
	v6 := tracker.AnnounceRequest{InfoHash: peertable.InfoHash{9}, Addr: netip.MustParseAddrPort("[2001:db8::1]:6881")}
	if _, err := core.Announce(&v6, nil); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	base := "http://" + hs.Addrs()[0].String()
	for _, q := range []string{
		"/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-TE0001-000000000001&port=6881&left=0",
		"/announce?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=-TE0001-000000000002&port=6882&left=5",
		"/announce?info_hash=bbbbbbbbbbbbbbbbbbbb&peer_id=-TE0001-000000000003&port=6883&left=5",
		"/announce?info_hash=short",
		"/scrape?info_hash=aaaaaaaaaaaaaaaaaaaa",
		"/nope",
	} {
		resp, err := client.Get(base + q)
		if err != nil {
			t.Fatalf("GET %s: %v", q, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	s := listen(t, Config{}, Sources{
		Version: "v9.9.9-test",
		UDP:     us.Stats,
		HTTP:    hs.Stats,
		Table:   table.Stats,
	})
	serve(t, s)
	code, body := get(t, s, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics status %d, want 200", code)
	}
	for _, want := range []string{
		`chihaya_requests_total{action="announce",protocol="http",result="ok"} 3`,
		`chihaya_requests_total{action="announce",protocol="http",result="failure"} 1`,
		`chihaya_requests_total{action="scrape",protocol="http",result="ok"} 1`,
		`chihaya_requests_total{action="full_scrape",protocol="http",result="ok"} 0`,
		`chihaya_requests_total{action="",protocol="http",result="not_found"} 1`,
		`chihaya_requests_total{action="connect",protocol="udp",result=""} 1`,
		`chihaya_requests_total{action="announce",protocol="udp",result=""} 1`,
		`chihaya_requests_total{action="scrape",protocol="udp",result=""} 0`,
		`chihaya_udp_error_replies_total 0`,
		`chihaya_udp_bad_connection_ids_total 1`,
		`chihaya_udp_malformed_requests_total 0`,
		`chihaya_errors_total{kind="write",protocol="udp"} 0`,
		`chihaya_errors_total{kind="internal",protocol="http"} 0`,
		`chihaya_swarms 4`,
		`chihaya_peers{family="ipv4"} 4`,
		`chihaya_peers{family="ipv6"} 1`,
		fmt.Sprintf(`chihaya_build_info{go_version=%q,version="v9.9.9-test"} 1`, runtime.Version()),
		"\ngo_goroutines ",
		"\nprocess_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestMetricsWithoutSources checks that a frontend that is switched off
// is absent from /metrics rather than reported as zero.
func TestMetricsWithoutSources(t *testing.T) {
	s, err := newServer(Config{Logger: quiet}, Sources{Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, "chihaya_build_info{") {
		t.Fatalf("/metrics = %d %q, want 200 with chihaya_build_info", w.Code, body)
	}
	for _, absent := range []string{
		"chihaya_requests_total", "chihaya_swarms", "chihaya_udp_", "chihaya_request_duration_seconds",
		"chihaya_cache_", "chihaya_flush_", "chihaya_private_",
	} {
		if strings.Contains(body, absent) {
			t.Errorf("/metrics has %s with no source for it", absent)
		}
	}
}

// TestHealthAndReadiness follows /healthz and /readyz through a Server's
// life: not ready before Serve, ready once the tracker says so, not ready
// once Serve returns.
func TestHealthAndReadiness(t *testing.T) {
	before := runtime.NumGoroutine()
	var ready atomic.Bool
	s := listen(t, Config{}, Sources{Ready: ready.Load})
	if code := status(s, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before Serve = %d, want 503", code)
	}
	stop := serve(t, s)
	if code, body := get(t, s, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 \"ok\\n\"", code, body)
	}
	if code, _ := get(t, s, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the tracker starts = %d, want 503", code)
	}
	ready.Store(true)
	if code, body := get(t, s, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz while serving = %d %q, want 200 \"ok\\n\"", code, body)
	}
	ready.Store(false) // the daemon begins to stop
	if code, _ := get(t, s, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while the tracker stops = %d, want 503", code)
	}
	ready.Store(true)
	stop()
	if code := status(s, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz after Serve returned = %d, want 503", code)
	}
	if _, err := http.Get("http://" + s.Addrs()[0].String() + "/healthz"); err == nil {
		t.Error("the listener still answers after Serve returned")
	}
	waitGoroutines(t, before)
}

// waitGoroutines waits for the goroutine count to fall back to before:
// net/http's connection goroutines unwind just after Serve returns.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after Serve returned, %d before", n, before)
	}
}

func TestPprof(t *testing.T) {
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprintf("pprof=%v", on), func(t *testing.T) {
			s := listen(t, Config{Pprof: on}, Sources{})
			serve(t, s)
			want := http.StatusNotFound
			if on {
				want = http.StatusOK
			}
			for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
				if code, _ := get(t, s, path); code != want {
					t.Errorf("GET %s with Pprof %v = %d, want %d", path, on, code, want)
				}
			}
		})
	}
}

func TestCloseBeforeServe(t *testing.T) {
	s := listen(t, Config{}, Sources{})
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve after Close did not return")
	}
}

func TestCloseWhileServing(t *testing.T) {
	s := listen(t, Config{}, Sources{})
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	if code, _ := get(t, s, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	s.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v after Close, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}

func TestConfigCheck(t *testing.T) {
	for _, tt := range []struct{ addr, want string }{
		{"", ""},
		{"127.0.0.1:0", ""},
		{"[::1]:6880", ""},
		{"localhost:6880", `admin: Addr "localhost:6880"`},
		{"127.0.0.1", `admin: Addr "127.0.0.1"`},
		{"[::ffff:127.0.0.1]:6880", "write IPv4 addresses as IPv4"},
	} {
		c := Config{Addr: tt.addr}
		err := c.Check()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Config{Addr: %q}.Check() = %v, want %q", tt.addr, err, tt.want)
		}
	}
	if _, err := Listen(Config{Addr: "localhost:1"}, Sources{}); err == nil || !strings.Contains(err.Error(), "Addr") {
		t.Errorf("Listen with a host name = %v, want an error naming Addr", err)
	}
}

// udpAnnounce sends one announce with a made-up connection ID (dropped:
// a bad connection ID), then connects and announces ih for real, as
// BEP 15 lays the packets out.
func udpAnnounce(t *testing.T, to netip.AddrPort, ih peertable.InfoHash) {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	announce := func(connID uint64) []byte {
		b := binary.BigEndian.AppendUint64(nil, connID)
		b = binary.BigEndian.AppendUint32(b, 1) // announce
		b = binary.BigEndian.AppendUint32(b, 7) // transaction ID
		b = append(b, ih[:]...)
		b = append(b, "-TE0001-000000000009"...)
		b = append(b, make([]byte, 24)...)       // downloaded, left, uploaded
		b = binary.BigEndian.AppendUint32(b, 2)  // event: started
		b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)    // ip, key
		b = binary.BigEndian.AppendUint32(b, 50) // num_want
		return binary.BigEndian.AppendUint16(b, 6889)
	}
	roundTrip := func(req []byte, wantLen int) []byte {
		t.Helper()
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil || n < wantLen || binary.BigEndian.Uint32(buf) == 3 {
			t.Fatalf("UDP reply %x, %v; want at least %d bytes and no error", buf[:n], err, wantLen)
		}
		return buf[:n]
	}
	if _, err := c.Write(announce(12345)); err != nil {
		t.Fatal(err)
	}
	connect := binary.BigEndian.AppendUint64(nil, 0x41727101980)
	connect = binary.BigEndian.AppendUint32(connect, 0) // connect
	connect = binary.BigEndian.AppendUint32(connect, 7)
	rep := roundTrip(connect, 16)
	roundTrip(announce(binary.BigEndian.Uint64(rep[8:16])), 20)
}
