package httpcompat

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// A testServer is a Server listening on 127.0.0.1:0 and [::1]:0 (unless
// the test says otherwise) and serving until the test ends.
type testServer struct {
	s      *Server
	tr     *tracker.Tracker
	client *http.Client
	v4, v6 string // base URLs, such as http://127.0.0.1:1234
}

func newTracker(t testing.TB) *tracker.Tracker {
	t.Helper()
	table, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{}, table)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func startServer(t *testing.T, cfg Config) *testServer {
	return startServerCfg(t, cfg)
}

func startServerTB(tb testing.TB) *testServer {
	return startServerCfg(tb, Config{Addrs: []string{"127.0.0.1:0"}})
}

func startServerCfg(t testing.TB, cfg Config) *testServer {
	t.Helper()
	if cfg.Addrs == nil {
		cfg.Addrs = []string{"127.0.0.1:0", "[::1]:0"}
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	ts := &testServer{tr: newTracker(t)}
	s, err := Listen(cfg, ts.tr)
	if err != nil {
		t.Fatalf("Listen(%+v) = %v", cfg, err)
	}
	ts.s = s
	for _, a := range s.Addrs() {
		if a.Addr().Is4() {
			ts.v4 = "http://" + a.String()
		} else {
			ts.v6 = "http://" + a.String()
		}
	}
	transport := &http.Transport{DisableCompression: true}
	ts.client = &http.Client{Transport: transport, Timeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		transport.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve = %v, want nil after cancel", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return within 10s of cancel")
		}
	})
	return ts
}

// peerID gives each test peer, named by its port, its own peer_id.
func peerID(port int) []byte {
	return fmt.Appendf(nil, "-TE0001-%012d", port)
}

func hashOf(s string) peertable.InfoHash {
	var ih peertable.InfoHash
	copy(ih[:], s)
	return ih
}

// announceQuery is a complete announce query; extra is appended as is.
func announceQuery(ih peertable.InfoHash, port int, left string, extra string) string {
	return "info_hash=" + escape(ih[:]) + "&peer_id=" + escape(peerID(port)) +
		"&port=" + strconv.Itoa(port) + "&uploaded=0&downloaded=0&left=" + left + extra
}

// get fetches url, which must answer 200 with a bencoded dictionary.
func (ts *testServer) get(t *testing.T, url string) map[string]any {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return ts.do(t, req)
}

func (ts *testServer) do(t *testing.T, req *http.Request) map[string]any {
	t.Helper()
	resp, err := ts.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: reading body: %v", req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d, want 200 (body %q)", req.URL, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
		t.Errorf("%s: Content-Type %q, want text/plain", req.URL, ct)
	}
	v, err := bencodetest.Decode(body)
	if err != nil {
		t.Fatalf("%s: reply %q: %v", req.URL, body, err)
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s: reply %q is not a dictionary", req.URL, body)
	}
	return m
}

func (ts *testServer) announce(t *testing.T, base string, ih peertable.InfoHash, port int, left, extra string) map[string]any {
	t.Helper()
	m := ts.get(t, base+"/announce?"+announceQuery(ih, port, left, extra))
	if f, ok := m["failure reason"]; ok {
		t.Fatalf("announce port %d%s: failure reason %q", port, extra, f)
	}
	return m
}

// failure fetches url and returns its failure reason.
func (ts *testServer) failure(t *testing.T, url string) string {
	t.Helper()
	m := ts.get(t, url)
	f, ok := m["failure reason"].(string)
	if !ok {
		t.Fatalf("%s: reply %v has no failure reason", url, m)
	}
	if len(m) != 1 {
		t.Errorf("%s: failure reply %v has other keys", url, m)
	}
	return f
}

// compactPeers decodes a peers or peers6 string.
func compactPeers(t *testing.T, v any, size int) []netip.AddrPort {
	t.Helper()
	s, ok := v.(string)
	if !ok || len(s)%size != 0 {
		t.Fatalf("compact peers %q: want a string of %d-byte entries", v, size)
	}
	var out []netip.AddrPort
	for ; s != ""; s = s[size:] {
		a, _ := netip.AddrFromSlice([]byte(s[:size-2]))
		out = append(out, netip.AddrPortFrom(a, binary.BigEndian.Uint16([]byte(s[size-2:size]))))
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

func addrPorts(ss ...string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, s := range ss {
		out = append(out, netip.MustParseAddrPort(s))
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out
}

func wantInt(t *testing.T, m map[string]any, key string, want int64) {
	t.Helper()
	if got, ok := m[key].(int64); !ok || got != want {
		t.Errorf("reply[%q] = %v, want %d", key, m[key], want)
	}
}

func TestAnnounceCompactIPv4(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("compact-v4")
	first := ts.announce(t, ts.v4, ih, 1001, "100", "")
	if got := compactPeers(t, first["peers"], 6); len(got) != 0 {
		t.Errorf("first announce got peers %v, want none", got)
	}
	m := ts.announce(t, ts.v4, ih, 1002, "0", "&event=started")
	if got, want := compactPeers(t, m["peers"], 6), addrPorts("127.0.0.1:1001"); !slices.Equal(got, want) {
		t.Errorf("peers = %v, want %v", got, want)
	}
	if _, ok := m["peers6"]; ok {
		t.Errorf("IPv4 client got peers6: %v", m)
	}
	wantInt(t, m, "complete", 1)
	wantInt(t, m, "incomplete", 1)
	wantInt(t, m, "downloaded", 0)
	wantInt(t, m, "interval", 1800)
	wantInt(t, m, "min interval", 300)
	if got := m["external ip"]; got != "\x7f\x00\x00\x01" {
		t.Errorf("external ip = %q, want 127.0.0.1 as 4 bytes", got)
	}
}

func TestAnnounceIPv6GetsPeers6(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("peers6")
	ts.announce(t, ts.v4, ih, 2001, "100", "")
	ts.announce(t, ts.v6, ih, 2002, "100", "")
	m := ts.announce(t, ts.v6, ih, 2003, "100", "")
	if got, want := compactPeers(t, m["peers6"], 18), addrPorts("[::1]:2002"); !slices.Equal(got, want) {
		t.Errorf("peers6 = %v, want %v (IPv6 peers only)", got, want)
	}
	if got := m["peers"]; got != "" {
		t.Errorf("IPv6 client got peers %q, want empty", got)
	}
	wantInt(t, m, "incomplete", 3) // counts span both families
	if got, want := m["external ip"], string(netip.IPv6Loopback().AsSlice()); got != want {
		t.Errorf("external ip = %q, want ::1 as 16 bytes", got)
	}
	m = ts.announce(t, ts.v4, ih, 2004, "100", "")
	if got, want := compactPeers(t, m["peers"], 6), addrPorts("127.0.0.1:2001"); !slices.Equal(got, want) {
		t.Errorf("IPv4 peers = %v, want %v (IPv4 peers only)", got, want)
	}
}

func TestAnnounceDictionaryModel(t *testing.T) {
	ts := startServer(t, Config{NoExternalIP: true})
	ih := hashOf("dictionary")
	ts.announce(t, ts.v4, ih, 3001, "100", "")
	ts.announce(t, ts.v6, ih, 3002, "100", "")
	for _, tc := range []struct {
		base, ip string
		port     int64
	}{{ts.v4, "127.0.0.1", 3001}, {ts.v6, "::1", 3002}} {
		for _, extra := range []string{"&compact=0", "&compact=0&no_peer_id=1"} {
			m := ts.announce(t, tc.base, ih, 3003, "100", extra)
			want := []any{map[string]any{"ip": tc.ip, "port": tc.port}}
			if got, ok := m["peers"].([]any); !ok || fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s%s: peers = %v, want %v", tc.base, extra, m["peers"], want)
			}
			if _, ok := m["peers6"]; ok {
				t.Errorf("%s%s: dictionary model reply has peers6", tc.base, extra)
			}
			if _, ok := m["external ip"]; ok {
				t.Errorf("%s: external ip sent with NoExternalIP", tc.base)
			}
		}
	}
}

func TestAnnounceNumWant(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("numwant")
	for port := 4001; port <= 4005; port++ {
		ts.announce(t, ts.v4, ih, port, "100", "")
	}
	for _, tc := range []struct {
		extra string
		want  int
	}{{"", 5}, {"&numwant=2", 2}, {"&numwant=0", 0}, {"&numwant=-1", 5}, {"&numwant=1000", 5}} {
		m := ts.announce(t, ts.v4, ih, 4100, "100", tc.extra)
		if got := compactPeers(t, m["peers"], 6); len(got) != tc.want {
			t.Errorf("announce%s: %d peers, want %d", tc.extra, len(got), tc.want)
		}
	}
}

func TestAnnounceEvents(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("events")
	scrape := func() map[string]any {
		m := ts.get(t, ts.v4+"/scrape?info_hash="+escape(ih[:]))
		return m["files"].(map[string]any)[string(ih[:])].(map[string]any)
	}
	ts.announce(t, ts.v4, ih, 5001, "100", "&event=started")
	ts.announce(t, ts.v4, ih, 5002, "100", "&event=")
	m := ts.announce(t, ts.v4, ih, 5001, "0", "&event=completed")
	wantInt(t, m, "downloaded", 1)
	wantInt(t, m, "complete", 1)
	wantInt(t, m, "incomplete", 1)

	m = ts.announce(t, ts.v4, ih, 5002, "100", "&event=stopped")
	if got := compactPeers(t, m["peers"], 6); len(got) != 0 {
		t.Errorf("stopped announce got peers %v, want none", got)
	}
	s := scrape()
	wantInt(t, s, "complete", 1)
	wantInt(t, s, "incomplete", 0)
	wantInt(t, s, "downloaded", 1)

	m = ts.announce(t, ts.v4, ih, 5003, "100", "")
	if got, want := compactPeers(t, m["peers"], 6), addrPorts("127.0.0.1:5001"); !slices.Equal(got, want) {
		t.Errorf("after stop, peers = %v, want %v", got, want)
	}
	if f := ts.failure(t, ts.v4+"/announce?"+announceQuery(ih, 5004, "1", "&event=bogus")); f != "invalid event" {
		t.Errorf("bad event: failure %q", f)
	}
}

func TestAnnounceFailures(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("failures")
	full := announceQuery(ih, 6001, "1", "")
	without := func(param string) string {
		var kept []string
		for _, kv := range strings.Split(full, "&") {
			if !strings.HasPrefix(kv, param+"=") {
				kept = append(kept, kv)
			}
		}
		return strings.Join(kept, "&")
	}
	tests := []struct {
		name, query, want string
	}{
		{"port 0", announceQuery(ih, 0, "1", ""), "invalid port: 0"},
		{"short info_hash", "info_hash=abc&" + without("info_hash"), "invalid info_hash: want 20 bytes"},
		{"long info_hash", "info_hash=" + escape(make([]byte, 32)) + "&" + without("info_hash"), "invalid info_hash: want 20 bytes"},
		{"short peer_id", "peer_id=abc&" + without("peer_id"), "invalid peer_id: want 20 bytes"},
		{"missing info_hash", without("info_hash"), "missing info_hash"},
		{"missing peer_id", without("peer_id"), "missing peer_id"},
		{"missing port", without("port"), "missing port"},
		{"missing left", without("left"), "missing left"},
		{"no query", "", "missing info_hash"},
		{"bad port", full + "&port=x", "missing port"}, // first occurrence counts, and it was removed below
		{"malformed", full + "&x=%zz", "malformed query: bad percent-encoding"},
		{"bad left", strings.Replace(full, "left=1", "left=-1", 1), "invalid left"},
	}
	tests[9].query = without("port") + "&port=x"
	tests[9].want = "invalid port"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ts.failure(t, ts.v4+"/announce?"+tt.query); got != tt.want {
				t.Errorf("failure reason %q, want %q", got, tt.want)
			}
		})
	}
}

func TestScrape(t *testing.T) {
	ts := startServer(t, Config{MaxScrape: 3})
	a, b, unknown := hashOf("scrape-a"), hashOf("scrape-b"), hashOf("scrape-unknown")
	ts.announce(t, ts.v4, a, 7001, "0", "")
	ts.announce(t, ts.v6, a, 7002, "5", "")
	ts.announce(t, ts.v4, b, 7003, "5", "")
	for _, base := range []string{ts.v4, ts.v6, ts.v4 + "/0123456789abcdef"} {
		m := ts.get(t, base+"/scrape?info_hash="+escape(b[:])+"&info_hash="+escape(a[:])+"&info_hash="+escape(unknown[:]))
		files, ok := m["files"].(map[string]any)
		if !ok || len(files) != 3 {
			t.Fatalf("%s: scrape reply %v, want files for 3 hashes", base, m)
		}
		want := map[peertable.InfoHash][3]int64{a: {1, 0, 1}, b: {0, 0, 1}, unknown: {0, 0, 0}}
		for ih, w := range want {
			f, _ := files[string(ih[:])].(map[string]any)
			wantInt(t, f, "complete", w[0])
			wantInt(t, f, "downloaded", w[1])
			wantInt(t, f, "incomplete", w[2])
		}
	}
	m := ts.get(t, ts.v4+"/scrape?info_hash="+escape(a[:])+"&info_hash="+escape(a[:]))
	if files := m["files"].(map[string]any); len(files) != 1 {
		t.Errorf("scrape of a repeated hash: %d files, want 1", len(files))
	}
	four := strings.Repeat("info_hash="+escape(a[:])+"&", 4)
	for _, tc := range []struct{ query, want string }{
		{four, "too many info_hash values (at most 3)"},
		{"", "missing info_hash: full scrape is not allowed"},
		{"passkey=x", "missing info_hash: full scrape is not allowed"},
		{"info_hash=abc", "invalid info_hash: want 20 bytes"},
		{"info_hash=%", "malformed query: bad percent-encoding"},
	} {
		if got := ts.failure(t, ts.v4+"/scrape?"+tc.query); got != tc.want {
			t.Errorf("scrape?%.40s: failure %q, want %q", tc.query, got, tc.want)
		}
	}
}

func TestIPParam(t *testing.T) {
	ih := hashOf("ip-param")
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow=%v", allow), func(t *testing.T) {
			ts := startServer(t, Config{AllowIPParam: allow})
			ts.announce(t, ts.v4, ih, 8001, "100", "&ip=10.1.2.3")
			ts.announce(t, ts.v4, ih, 8002, "100", "&ipv6=2001:db8::2") // wrong family: never used
			ts.announce(t, ts.v4, ih, 8006, "100", "&ip=224.1.2.3")     // multicast: never used
			ts.announce(t, ts.v6, ih, 8003, "100", "&ipv6=2001:db8::3&ip=2001:db8::4")
			m := ts.announce(t, ts.v4, ih, 8004, "100", "")
			want4 := addrPorts("127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8006")
			want6 := addrPorts("[::1]:8003")
			if allow {
				want4 = addrPorts("10.1.2.3:8001", "127.0.0.1:8002", "127.0.0.1:8006")
				want6 = addrPorts("[2001:db8::3]:8003")
			}
			if got := compactPeers(t, m["peers"], 6); !slices.Equal(got, want4) {
				t.Errorf("peers = %v, want %v", got, want4)
			}
			m = ts.announce(t, ts.v6, ih, 8005, "100", "")
			if got := compactPeers(t, m["peers6"], 18); !slices.Equal(got, want6) {
				t.Errorf("peers6 = %v, want %v", got, want6)
			}
			// The external ip is always where the request came from.
			m = ts.announce(t, ts.v4, ih, 8001, "100", "&ip=10.1.2.3")
			if got := m["external ip"]; got != "\x7f\x00\x00\x01" {
				t.Errorf("external ip = %q, want 127.0.0.1", got)
			}
		})
	}
}

func TestTrustedProxy(t *testing.T) {
	ih := hashOf("proxy")
	request := func(t *testing.T, ts *testServer, port int, header string, values ...string) map[string]any {
		t.Helper()
		req, err := http.NewRequest("GET", ts.v4+"/announce?"+announceQuery(ih, port, "100", ""), nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			req.Header.Add(header, v)
		}
		return ts.do(t, req)
	}
	ip4 := func(s string) string { return string(netip.MustParseAddr(s).AsSlice()) }

	t.Run("trusted", func(t *testing.T) {
		ts := startServer(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}})
		tests := []struct {
			values []string
			want   string // client address, or a failure reason
		}{
			{[]string{"203.0.113.7"}, "203.0.113.7"},
			{[]string{"198.51.100.1, 203.0.113.7, 10.0.0.9"}, "203.0.113.7"},
			{[]string{"198.51.100.1", "203.0.113.8,10.0.0.9 , "}, "203.0.113.8"},
			{[]string{"[2001:db8::9]:4711"}, "2001:db8::9"},
			{[]string{"::ffff:203.0.113.10"}, "203.0.113.10"},
			{[]string{"10.0.0.1, 127.0.0.5"}, "10.0.0.1"}, // every hop ours: the leftmost
			{nil, "127.0.0.1"},
			{[]string{"unknown, 10.0.0.9"}, "invalid forwarded client address"},
		}
		for i, tt := range tests {
			m := request(t, ts, 9000+i, "X-Forwarded-For", tt.values...)
			if f, ok := m["failure reason"]; ok {
				if f != tt.want {
					t.Errorf("X-Forwarded-For %q: failure %q, want client %s", tt.values, f, tt.want)
				}
				continue
			}
			if got := m["external ip"]; got != ip4(tt.want) {
				t.Errorf("X-Forwarded-For %q: external ip %q, want %s", tt.values, got, tt.want)
			}
		}
		// The forwarded IPv6 client is served as IPv6 and stored as such.
		m := ts.announce(t, ts.v6, ih, 9100, "100", "")
		if got, want := compactPeers(t, m["peers6"], 18), addrPorts("[2001:db8::9]:9003"); !slices.Equal(got, want) {
			t.Errorf("peers6 = %v, want %v", got, want)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		ts := startServer(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
		m := request(t, ts, 9200, "X-Forwarded-For", "203.0.113.7")
		if got := m["external ip"]; got != ip4("127.0.0.1") {
			t.Errorf("untrusted X-Forwarded-For: external ip %q, want 127.0.0.1", got)
		}
	})
	t.Run("default trusts nobody", func(t *testing.T) {
		ts := startServer(t, Config{})
		m := request(t, ts, 9300, "X-Forwarded-For", "203.0.113.7")
		if got := m["external ip"]; got != ip4("127.0.0.1") {
			t.Errorf("X-Forwarded-For with no trusted proxies: external ip %q, want 127.0.0.1", got)
		}
	})
	t.Run("X-Real-IP", func(t *testing.T) {
		ts := startServer(t, Config{RealIPHeader: "x-real-ip", TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}})
		m := request(t, ts, 9400, "X-Real-Ip", "203.0.113.11")
		if got := m["external ip"]; got != ip4("203.0.113.11") {
			t.Errorf("X-Real-IP: external ip %q, want 203.0.113.11", got)
		}
		m = request(t, ts, 9401, "X-Forwarded-For", "203.0.113.12")
		if got := m["external ip"]; got != ip4("127.0.0.1") {
			t.Errorf("X-Forwarded-For when X-Real-IP is configured: external ip %q, want 127.0.0.1", got)
		}
	})
}

func TestRoutes(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("routes")
	q := announceQuery(ih, 10001, "1", "")
	for _, path := range []string{"/announce", "/0123456789abcdef0123456789abcdef/announce"} {
		m := ts.get(t, ts.v4+path+"?"+q)
		if _, ok := m["failure reason"]; ok {
			t.Errorf("GET %s: %v", path, m)
		}
	}
	for _, path := range []string{"/", "/announce/", "/a/b/announce", "//announce", "/announce.php", "/scrapes", "/" + strings.Repeat("k", 300) + "/announce"} {
		resp, err := ts.client.Get(ts.v4 + path + "?" + q)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", path, resp.StatusCode)
		}
	}
	resp, err := ts.client.Post(ts.v4+"/announce?"+q, "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /announce: status %d, Allow %q; want 405 and GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	resp, err = ts.client.Head(ts.v4 + "/announce?" + q)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /announce: status %d, want 200", resp.StatusCode)
	}
}

// URLData must carry the request path, passkey included, to the core.
func TestAnnounceURLData(t *testing.T) {
	s, err := newServer(Config{Logger: slog.New(slog.DiscardHandler)}, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	x := s.newExchange()
	n := copy(x.path[:], "/secret/announce")
	out := s.announce(x, netip.MustParseAddr("192.0.2.1"), x.path[:n], announceQuery(hashOf("urldata"), 1, "0", ""))
	if strings.Contains(string(out), "failure") {
		t.Fatalf("announce: %q", out)
	}
	if x.req.URLData != nil {
		t.Errorf("URLData kept after the call: %q", x.req.URLData)
	}
	// The path reaches the core: checked through the core's own copy
	// when private mode exists; here, that route and handle agree.
	if route("/secret/announce") != announceEndpoint || route("/secret/scrape") != scrapeEndpoint {
		t.Error("passkey routes not recognised")
	}
}

// A peer announced over HTTP is in the swarm that the core serves to every
// frontend, and the reverse: UDP calls tracker.Announce just like this.
func TestSharedCore(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("cross-frontend")
	ts.announce(t, ts.v4, ih, 11001, "100", "")
	res, err := ts.tr.Announce(&tracker.AnnounceRequest{
		InfoHash: ih,
		Addr:     netip.MustParseAddrPort("127.0.0.1:11002"),
		Left:     0,
		NumWant:  -1,
		Event:    peertable.EventStarted,
	}, nil)
	if err != nil {
		t.Fatalf("tracker.Announce = %v", err)
	}
	if got, want := compactPeers(t, string(res.Peers), 6), addrPorts("127.0.0.1:11001"); !slices.Equal(got, want) {
		t.Errorf("core gave %v, want the HTTP peer %v", got, want)
	}
	m := ts.announce(t, ts.v4, ih, 11003, "100", "")
	if got, want := compactPeers(t, m["peers"], 6), addrPorts("127.0.0.1:11001", "127.0.0.1:11002"); !slices.Equal(got, want) {
		t.Errorf("HTTP gave %v, want %v including the core's peer", got, want)
	}
	wantInt(t, m, "complete", 1)
}

func TestLargeReply(t *testing.T) {
	ts := startServer(t, Config{})
	ih := hashOf("large")
	for i := range 200 {
		ap := netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i)}), uint16(20000+i))
		if _, err := ts.tr.Announce(&tracker.AnnounceRequest{InfoHash: ih, Addr: ap, Left: 1, NumWant: -1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	m := ts.announce(t, ts.v6, ih, 12001, "100", "&numwant=200")
	if got := compactPeers(t, m["peers6"], 18); len(got) != 200 {
		t.Errorf("%d peers6, want 200", len(got))
	}
	m = ts.announce(t, ts.v6, ih, 12001, "100", "&numwant=200&compact=0")
	if got, _ := m["peers"].([]any); len(got) != 200 {
		t.Errorf("%d dictionary peers, want 200", len(got))
	}
}

// rawRequest is an announce request line and headers for a raw connection.
func rawRequest(port int) string {
	return "GET /announce?" + announceQuery(hashOf("raw"), port, "1", "") + " HTTP/1.1\r\nHost: tracker\r\n\r\n"
}

func readReply(t *testing.T, br *bufio.Reader) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading reply: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "d8:complete") {
		t.Fatalf("reply: status %d, body %q, err %v", resp.StatusCode, body, err)
	}
}

func TestKeepAlive(t *testing.T) {
	ts := startServer(t, Config{})
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(ts.v4, "http://"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for port := 13001; port <= 13002; port++ {
		if _, err := io.WriteString(c, rawRequest(port)); err != nil {
			t.Fatalf("request %d on the kept-alive connection: %v", port-13000, err)
		}
		readReply(t, br)
	}
}

func TestSlowHeadersDoNotBlockOthers(t *testing.T) {
	const headerTimeout = 300 * time.Millisecond
	ts := startServer(t, Config{ReadHeaderTimeout: headerTimeout})
	addr := strings.TrimPrefix(ts.v4, "http://")
	slow, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	req := rawRequest(14001)
	trickled := make(chan struct{})
	go func() {
		defer close(trickled)
		for i := range min(len(req)-1, 30) { // never the final CRLF
			if _, err := slow.Write([]byte{req[i]}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	defer func() { <-trickled }()

	start := time.Now()
	ts.announce(t, ts.v4, hashOf("raw"), 14002, "1", "")
	if d := time.Since(start); d > headerTimeout {
		t.Errorf("a normal request took %v while another client trickled headers", d)
	}
	// The server gives up on the slow client: it answers 400 or just
	// closes, either way soon after the header timeout.
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	start = time.Now()
	got, err := io.ReadAll(slow)
	if isTimeout(err) {
		t.Errorf("slow client: connection still open after %v", time.Since(start))
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 400 ") {
		t.Errorf("slow client got %q, want nothing or a 400", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("slow client held its connection for %v", d)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestMaxConns(t *testing.T) {
	ts := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, MaxConns: 1})
	addr := strings.TrimPrefix(ts.v4, "http://")
	first, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(first, rawRequest(15001))
	readReply(t, bufio.NewReader(first))

	// The second connection completes in the kernel but is not served
	// while the first stays open.
	second, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	io.WriteString(second, rawRequest(15002))
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	br := bufio.NewReader(second)
	if _, err := br.Peek(1); !isTimeout(err) {
		t.Fatalf("second connection over MaxConns: Peek = %v, want a timeout (not served)", err)
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(5 * time.Second))
	readReply(t, br)
}

func TestServeReturnsAndGoroutinesEnd(t *testing.T) {
	before := runtime.NumGoroutine()
	tr := newTracker(t)
	s, err := Listen(Config{Addrs: []string{"127.0.0.1:0", "[::1]:0"}, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)}, tr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	// Leave an idle kept-alive connection and a half-sent request open.
	var conns []net.Conn
	for _, a := range s.Addrs() {
		c, err := net.DialTimeout("tcp", a.String(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, rawRequest(16001))
		readReply(t, bufio.NewReader(c))
		conns = append(conns, c)
	}
	if c, err := net.DialTimeout("tcp", s.Addrs()[0].String(), 2*time.Second); err == nil {
		defer c.Close()
		io.WriteString(c, "GET /announce?info")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s of cancel")
	}
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("idle connection still open after Serve returned: %v", err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines after Serve returned, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	if err := s.Serve(context.Background()); err == nil {
		t.Error("second Serve = nil, want an error")
	}
}

func TestCloseBeforeServe(t *testing.T) {
	s, err := Listen(Config{Addrs: []string{"127.0.0.1:0"}, Logger: slog.New(slog.DiscardHandler)}, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addrs()[0]
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if c, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c.Close()
		t.Errorf("%v still accepts after Close", addr)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve after Close did not return")
	}
}

func TestListenErrors(t *testing.T) {
	tr := newTracker(t)
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"hostname", Config{Addrs: []string{"localhost:6969"}}, "Addrs[0]"},
		{"no port", Config{Addrs: []string{"127.0.0.1:0", "::1"}}, "Addrs[1]"},
		{"mapped", Config{Addrs: []string{"[::ffff:127.0.0.1]:0"}}, "Addrs[0]"},
		{"in use", Config{Addrs: []string{busy.Addr().String()}}, busy.Addr().String()},
		{"negative timeout", Config{ReadTimeout: -1}, "ReadTimeout"},
		{"header bytes", Config{MaxHeaderBytes: 100}, "MaxHeaderBytes"},
		{"conns", Config{MaxConns: -1}, "MaxConns"},
		{"scrape", Config{MaxScrape: 5000}, "MaxScrape"},
		{"full scrape cache", Config{FullScrape: true, FullScrapeCache: -time.Second}, "FullScrapeCache"},
		{"full scrape every", Config{FullScrapeEvery: -time.Second}, "FullScrapeEvery"},
		{"header name", Config{RealIPHeader: "X Real IP"}, "RealIPHeader"},
		{"proxy prefix", Config{TrustedProxies: []netip.Prefix{{}}}, "TrustedProxies[0]"},
		{"mapped prefix", Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}}, "TrustedProxies[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = slog.New(slog.DiscardHandler)
			s, err := Listen(tt.cfg, tr)
			if err == nil {
				s.Close()
				t.Fatalf("Listen(%+v) = nil error, want one naming %s", tt.cfg, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Listen(%+v) = %v, want an error naming %s", tt.cfg, err, tt.want)
			}
		})
	}
}

func TestFailureRetryIn(t *testing.T) {
	for _, tc := range []struct {
		retryIn int
		want    string
	}{
		{0, "d14:failure reason4:nopee"},
		{5, "d14:failure reason4:nope8:retry ini5ee"},
		{retryNever, "d14:failure reason4:nope8:retry in5:nevere"},
	} {
		if got := string(appendFailure(nil, "nope", tc.retryIn)); got != tc.want {
			t.Errorf("appendFailure(nope, %d) = %q, want %q", tc.retryIn, got, tc.want)
		}
		if _, err := bencodetest.Decode([]byte(tc.want)); err != nil {
			t.Errorf("%q: %v", tc.want, err)
		}
	}
}

func TestCloseWhileServing(t *testing.T) {
	s, err := Listen(Config{Addrs: []string{"127.0.0.1:0", "[::1]:0"}, Logger: slog.New(slog.DiscardHandler)}, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	// Make sure Serve is accepting before closing under it.
	c, err := net.DialTimeout("tcp", s.Addrs()[0].String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, rawRequest(17001))
	readReply(t, bufio.NewReader(c))
	c.Close()
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
}

// TestSetPolicy checks that a new policy applies to the next request and
// that a bad one is refused and the old one kept.
func TestSetPolicy(t *testing.T) {
	ts := startServerCfg(t, Config{Addrs: []string{"127.0.0.1:0"}, MaxScrape: 3})
	ih := hashOf("policy")
	if m := ts.announce(t, ts.v4, ih, 15001, "100", ""); m["external ip"] == nil {
		t.Errorf("before SetPolicy: announce reply %v has no external ip", m)
	}
	four := "/scrape?" + strings.Repeat("info_hash="+escape(ih[:])+"&", 4)
	if got, want := ts.failure(t, ts.v4+four), "too many info_hash values (at most 3)"; got != want {
		t.Errorf("before SetPolicy: scrape of 4: failure %q, want %q", got, want)
	}
	if err := ts.s.SetPolicy(Policy{NoExternalIP: true, MaxScrape: 4}); err != nil {
		t.Fatalf("SetPolicy: %v", err)
	}
	if m := ts.announce(t, ts.v4, ih, 15002, "100", ""); m["external ip"] != nil {
		t.Errorf("after SetPolicy: announce reply %v has an external ip", m)
	}
	if m := ts.get(t, ts.v4+four); m["failure reason"] != nil {
		t.Errorf("after SetPolicy: scrape of 4 refused: %v", m)
	}
	if err := ts.s.SetPolicy(Policy{MaxScrape: maxMaxScrape + 1}); err == nil || !strings.Contains(err.Error(), "MaxScrape") {
		t.Errorf("SetPolicy(MaxScrape %d) = %v, want an error naming MaxScrape", maxMaxScrape+1, err)
	}
	if p := ts.s.Policy(); p != (Policy{NoExternalIP: true, MaxScrape: 4}) {
		t.Errorf("after a refused SetPolicy: Policy() = %+v, want the previous policy", p)
	}
}
