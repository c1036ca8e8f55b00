package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chihaya/chihaya/httpcompat/bencodetest"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/udp"
)

// TestReload checks that a reload changes the interval and the log level
// of a running daemon without losing its peers, that a bad file changes
// nothing, and that a changed listen address is reported and ignored.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const base = "[udp]\naddrs = [\"127.0.0.1:0\"]\nworkers = 1\n" +
		"[http]\naddrs = [\"127.0.0.1:0\"]\n[admin]\naddr = \"127.0.0.1:0\"\n"
	first := write("first.toml", base+"[log]\nlevel = \"info\"\n[tracker]\ninterval = \"30m\"\n")
	second := write("second.toml", base+"[log]\nlevel = \"debug\"\n[tracker]\ninterval = \"10m\"\n")
	bad := write("bad.toml", base+"[tracker]\ninterval = \"5m\"\nintervall = \"5m\"\n")
	moved := write("moved.toml", strings.Replace(base, "127.0.0.1:0", "127.0.0.1:1", 1)+
		"[log]\nlevel = \"debug\"\n[tracker]\ninterval = \"10m\"\n")

	cfg, err := LoadConfig(first)
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	log, level := newLogger(cfg, &logs)
	d, err := start(cfg, log)
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	hup := make(chan os.Signal, 1)
	d.level, d.path, d.hup = level, first, hup
	runDaemon(t, d)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	announce := func(port int) string {
		t.Helper()
		url := fmt.Sprintf("http://%s/announce?info_hash=%%01%%02%%03%%04%%05%%06%%07%%08%%09%%0A%%0B%%0C%%0D%%0E%%0F%%10%%11%%12%%13%%14"+
			"&peer_id=-TE0001-%012d&port=%d&uploaded=0&downloaded=0&left=100", d.httpAddrs()[0], port, port)
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: status %d, body %q, err %v", url, resp.StatusCode, body, err)
		}
		return string(body)
	}
	// The compact entry of the peer announced before the reload.
	before := "\x7f\x00\x00\x01\x1a\xe1" // 127.0.0.1:6881

	if body := announce(6881); !strings.Contains(body, "8:intervali1800e") {
		t.Fatalf("announce before reload = %q, want interval 1800", body)
	}
	if log.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("debug logging on before the reload to level debug")
	}

	if err := d.reload(second); err != nil {
		t.Fatalf("reload(%s) = %v", second, err)
	}
	body := announce(6882)
	if !strings.Contains(body, "8:intervali600e") {
		t.Errorf("announce after reload = %q, want interval 600", body)
	}
	if !strings.Contains(body, before) {
		t.Errorf("announce after reload = %q, want the peer announced before it", body)
	}
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		t.Error("debug logging off after a reload to level debug")
	}
	if out := logs.String(); !strings.Contains(out, "msg=reloaded") || !strings.Contains(out, "tracker.interval") || !strings.Contains(out, "log.level") {
		t.Errorf("log after reload lacks \"reloaded\" naming tracker.interval and log.level:\n%s", out)
	}

	if err := d.reload(bad); err == nil || !strings.Contains(err.Error(), "tracker.intervall") {
		t.Errorf("reload(%s) = %v, want an error naming tracker.intervall", bad, err)
	}
	if body := announce(6883); !strings.Contains(body, "8:intervali600e") {
		t.Errorf("announce after a refused reload = %q, want interval 600 still", body)
	}
	if out := logs.String(); !strings.Contains(out, "reload refused") {
		t.Errorf("log after a bad reload lacks \"reload refused\":\n%s", out)
	}

	// The running peer lifetime (31m) needs a restart to change, so an
	// interval beyond it is not applied.
	long := write("long.toml", base+"[tracker]\ninterval = \"2h\"\n")
	if err := d.reload(long); err != nil {
		t.Fatalf("reload(%s) = %v", long, err)
	}
	if body := announce(6884); !strings.Contains(body, "8:intervali600e") {
		t.Errorf("announce after a reload to an interval beyond the peer lifetime = %q, want interval 600 still", body)
	}
	if out := logs.String(); !strings.Contains(out, "would exceed the running peer lifetime") {
		t.Errorf("log lacks the warning about the interval exceeding the peer lifetime:\n%s", out)
	}

	addrs := d.udpAddrs()
	if err := d.reload(moved); err != nil {
		t.Fatalf("reload(%s) = %v", moved, err)
	}
	if out := logs.String(); !strings.Contains(out, "needs a restart") || !strings.Contains(out, "key=udp.addrs") {
		t.Errorf("log after changing udp.addrs does not say it needs a restart:\n%s", out)
	}
	if got := d.live.UDP.Addrs; len(got) != 1 || got[0] != "127.0.0.1:0" {
		t.Errorf("udp.addrs after reload = %q, want the running [127.0.0.1:0]", got)
	}
	if got := d.udpAddrs(); len(got) != len(addrs) || got[0] != addrs[0] {
		t.Errorf("UDP addresses after reload = %v, want %v", got, addrs)
	}
	if body := announce(6884); !strings.Contains(body, "8:intervali600e") || !strings.Contains(body, before) {
		t.Errorf("announce after the restart-only reload = %q, want interval 600 and the first peer", body)
	}

	// What SIGHUP does: run re-reads d.path, here the first file again.
	hup <- syscall.SIGHUP
	for deadline := time.Now().Add(5 * time.Second); d.core.Config().Interval != 30*time.Minute; {
		if time.Now().After(deadline) {
			t.Fatalf("interval %v 5s after a SIGHUP to reload %s, want 30m", d.core.Config().Interval, first)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if body := announce(6885); !strings.Contains(body, "8:intervali1800e") {
		t.Errorf("announce after the SIGHUP = %q, want interval 1800", body)
	}
}

// TestReloadableKeysExist keeps the reloadable list in step with Config:
// a misspelt or removed key would silently need a restart.
func TestReloadableKeysExist(t *testing.T) {
	keys := map[string]bool{}
	for sec := range reflect.TypeFor[Config]().Fields() {
		for f := range sec.Type.Fields() {
			keys[sec.Tag.Get("toml")+"."+f.Tag.Get("toml")] = true
		}
	}
	for k := range reloadable {
		if !keys[k] {
			t.Errorf("reloadable key %s is not in Config", k)
		}
	}
}

// TestReloadRateLimit switches the HTTP announce limit and the UDP
// connect and announce limits on and off by reloading, without a restart.
func TestReloadRateLimit(t *testing.T) {
	dir := t.TempDir()
	const base = "[admin]\ndisabled = true\n[http]\naddrs = [\"127.0.0.1:0\"]\n"
	const udpOff = "[udp]\naddrs = [\"127.0.0.1:0\"]\nworkers = 1\n"
	const udpOn = udpOff + "connect_rate = 5\nannounce_rate = 0.5\nannounce_burst = 2\n"
	off := filepath.Join(dir, "off.toml")
	on := filepath.Join(dir, "on.toml")
	os.WriteFile(off, []byte(udpOff+base), 0o600)
	os.WriteFile(on, []byte(udpOn+base+"announce_rate = 0.01\nannounce_burst = 1\n"), 0o600)
	cfg, err := LoadConfig(off)
	if err != nil {
		t.Fatal(err)
	}
	d, err := start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	runDaemon(t, d)
	limited := func() bool {
		body := get(t, "http://"+d.httpAddrs()[0].String()+"/announce?info_hash=%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14"+
			"&peer_id=-TE0001-000000000001&port=6881&uploaded=0&downloaded=0&left=100")
		return strings.Contains(body, "rate limited")
	}
	if limited() || limited() {
		t.Fatal("limited before any limit was configured")
	}
	if c, a := udpLimits(t, d); c != 0 || a != 0 {
		t.Fatalf("before any limit: UDP rate limited %d of 20 connects and %d of 5 announces, want none", c, a)
	}
	if err := d.reload(on); err != nil {
		t.Fatal(err)
	}
	if limited() || !limited() {
		t.Fatal("after reloading a limit of one announce: want the first allowed and the second limited")
	}
	// connect_rate = 5 allows a burst of 5 a second; the source's first
	// connect took one, and a second may tick during the burst.
	if c, a := udpLimits(t, d); c < 20-9 || c > 20-4 || a != 5-2 {
		t.Errorf("after reloading UDP limits: %d of 20 connects and %d of 5 announces rate limited, want 11 to 16 and 3", c, a)
	}
	if err := d.reload(off); err != nil {
		t.Fatal(err)
	}
	if limited() {
		t.Fatal("still limited after reloading without a limit")
	}
	if c, a := udpLimits(t, d); c != 0 || a != 0 {
		t.Errorf("after reloading without limits: UDP rate limited %d of 20 connects and %d of 5 announces, want none", c, a)
	}
}

// udpLimits connects to d's UDP frontend from a new socket, then sends a
// burst of 20 connects and one of 5 announces, and returns how many of
// each the frontend dropped as rate limited. It counts with the
// frontend's Stats, waiting until every request is counted, so that it
// needs no timeout for the replies that never come.
func udpLimits(t *testing.T, d *daemon) (connects, announces int) {
	t.Helper()
	c, err := net.Dial("udp", d.udpAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	conn := udp.AppendConnect(nil, udp.ConnectRequest{TxID: 1})
	buf := make([]byte, 1500)
	c.Write(conn)
	if n, err := c.Read(buf); err != nil || n != 16 {
		t.Fatalf("connect reply: %d bytes, %v", n, err)
	}
	ann := udp.AppendAnnounce(nil, &udp.AnnounceRequest{
		ConnID: binary.BigEndian.Uint64(buf[8:16]), TxID: 2, InfoHash: [20]byte{1, 2, 3},
		PeerID: [20]byte([]byte("-TE0001-udp000000002")), Left: 1, NumWant: -1, Port: 6881,
	})
	burst := func(pkt []byte, n int) int {
		t.Helper()
		counted := func(st udp.Stats) uint64 { return st.Connects + st.Announces + st.RateLimited }
		before := d.udp.Stats()
		for range n {
			if _, err := c.Write(pkt); err != nil {
				t.Fatal(err)
			}
		}
		for deadline := time.Now().Add(5 * time.Second); counted(d.udp.Stats())-counted(before) < uint64(n); {
			if time.Now().After(deadline) {
				t.Fatalf("UDP frontend counted %d of %d requests in 5s", counted(d.udp.Stats())-counted(before), n)
			}
			time.Sleep(time.Millisecond)
		}
		return int(d.udp.Stats().RateLimited - before.RateLimited)
	}
	return burst(conn, 20), burst(ann, 5)
}

// TestReloadMaxNumWant checks that a reload of tracker.max_numwant
// reaches both frontends: a client that asks for more peers than any max
// gets the old max, then the raised one, then the lowered one, over HTTP
// and over UDP, from a swarm larger than all of them.
func TestReloadMaxNumWant(t *testing.T) {
	dir := t.TempDir()
	const base = "[admin]\ndisabled = true\n[http]\naddrs = [\"127.0.0.1:0\"]\n" +
		"[udp]\naddrs = [\"127.0.0.1:0\"]\nworkers = 1\n[tracker]\ndefault_numwant = 2\n"
	files := map[int]string{}
	for _, most := range []int{5, 30, 3} {
		files[most] = filepath.Join(dir, fmt.Sprintf("max_numwant_%d.toml", most))
		if err := os.WriteFile(files[most], fmt.Appendf(nil, "%smax_numwant = %d\n", base, most), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := LoadConfig(files[5])
	if err != nil {
		t.Fatal(err)
	}
	d, err := start(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Skipf("cannot listen on loopback: %v", err)
	}
	runDaemon(t, d)

	ih := [20]byte{0x4e, 0x57}
	for i := range 40 {
		req := tracker.AnnounceRequest{InfoHash: ih, Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 6881), Left: 1}
		if _, err := d.core.Announce(&req, nil); err != nil {
			t.Fatal(err)
		}
	}
	httpPeers := func() int {
		t.Helper()
		body := get(t, fmt.Sprintf("http://%s/announce?info_hash=%s&peer_id=-TE0001-000000007001&port=7001&uploaded=0&downloaded=0&left=1&numwant=1000",
			d.httpAddrs()[0], url.QueryEscape(string(ih[:]))))
		v, err := bencodetest.Decode([]byte(body))
		if err != nil {
			t.Fatalf("announce reply %q: %v", body, err)
		}
		m, _ := v.(map[string]any)
		peers, ok := m["peers"].(string)
		if !ok {
			t.Fatalf("announce reply %v has no compact peers", v)
		}
		return len(peers) / peertable.PeerLenV4
	}
	udpPeers := func() int {
		t.Helper()
		c, err := net.Dial("udp", d.udpAddrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		c.Write(udp.AppendConnect(nil, udp.ConnectRequest{TxID: 1}))
		if n, err := c.Read(buf); err != nil || n != 16 {
			t.Fatalf("connect reply: %d bytes, %v", n, err)
		}
		c.Write(udp.AppendAnnounce(nil, &udp.AnnounceRequest{
			ConnID: binary.BigEndian.Uint64(buf[8:16]), TxID: 2, InfoHash: ih,
			PeerID: [20]byte([]byte("-TE0001-000000007002")), Left: 1, NumWant: 1000, Port: 7002,
		}))
		n, err := c.Read(buf)
		if err != nil || n < 20 || binary.BigEndian.Uint32(buf) != 1 {
			t.Fatalf("announce reply %x: %v", buf[:n], err)
		}
		return (n - 20) / peertable.PeerLenV4
	}
	for i, most := range []int{5, 30, 3} {
		if i > 0 {
			if err := d.reload(files[most]); err != nil {
				t.Fatalf("reload(max_numwant = %d) = %v", most, err)
			}
		}
		if got := httpPeers(); got != most {
			t.Errorf("max_numwant %d: HTTP announce asking for 1000 got %d peers, want %d", most, got, most)
		}
		if got := udpPeers(); got != most {
			t.Errorf("max_numwant %d: UDP announce asking for 1000 got %d peers, want %d", most, got, most)
		}
	}
}
