package main

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"
)

// startResponder serves the trivial responder on addr (port 0) until the
// test ends and returns its bound address.
func startResponder(t *testing.T, addr string) (netip.AddrPort, *responderStats) {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := new(responderStats)
	done := make(chan error)
	go func() { done <- serveResponder(ctx, conn, 2, 16, st) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveResponder: %v", err)
		}
		conn.Close()
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort(), st
}

// testConfig is a short run against target, as the flags' defaults
// would make it.
func testConfig(target netip.AddrPort) *runConfig {
	return &runConfig{
		target:       target,
		duration:     700 * time.Millisecond,
		warmup:       200 * time.Millisecond,
		conns:        3,
		window:       8,
		batch:        8,
		timeout:      500 * time.Millisecond,
		torrents:     100,
		zipf:         1.1,
		peers:        50,
		scrape:       0.2,
		scrapeHashes: 3,
		events:       defaultEvents,
		numWant:      50,
		seed:         1,
		connIDTTL:    time.Minute,
		quiet:        true,
		gso:          true,
	}
}

func TestRunAgainstResponder(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			before := runtime.NumGoroutine()
			t.Cleanup(func() { checkGoroutines(t, before) }) // after the responder's
			target, st := startResponder(t, addr)
			cfg := testConfig(target)
			cfg.wait = time.Second
			res, err := run(context.Background(), cfg, io.Discard)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			tot := res.total
			if tot.ok[kindAnnounce] == 0 || tot.ok[kindScrape] == 0 {
				t.Errorf("answered announces %d, scrapes %d; want both > 0", tot.ok[kindAnnounce], tot.ok[kindScrape])
			}
			if tot.errors() != 0 || tot.lostTotal() != 0 || tot.invalidTotal() != 0 {
				t.Errorf("errors %d, lost %d, invalid %d; want none (texts %v)", tot.errors(), tot.lostTotal(), tot.invalidTotal(), res.errTexts)
			}
			if tot.at < 600*time.Millisecond || tot.at > 900*time.Millisecond {
				t.Errorf("measured %v, want about %v", tot.at, cfg.duration)
			}
			if tot.quantile(0.5) == 0 {
				t.Error("p50 latency is 0")
			}
			if st.rejected.Load() != 0 {
				t.Errorf("responder rejected %d requests", st.rejected.Load())
			}
			var out strings.Builder
			res.print(&out, cfg)
			if !strings.Contains(out.String(), "\nRESULT rps=") {
				t.Errorf("summary has no RESULT line:\n%s", out.String())
			}
		})
	}
}

// checkGoroutines fails if goroutines started since before are still
// running a moment later: the run and the responder must wait for all of
// theirs.
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	for range 50 {
		if runtime.NumGoroutine() <= before {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<16)
	t.Errorf("%d goroutines after run, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
}

func TestRunReconnects(t *testing.T) {
	target, st := startResponder(t, "127.0.0.1:0")
	cfg := testConfig(target)
	cfg.conns, cfg.warmup, cfg.duration = 1, 0, 600*time.Millisecond
	cfg.connIDTTL = 100 * time.Millisecond
	res, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if n := res.total.sent[kindConnect]; n < 4 {
		t.Errorf("sent %d connects in 600ms with a 100ms ID lifetime, want at least 4", n)
	}
	if res.total.answered() == 0 || st.rejected.Load() != 0 {
		t.Errorf("answered %d, rejected %d; want > 0 and 0", res.total.answered(), st.rejected.Load())
	}
}

func TestPrefill(t *testing.T) {
	target, st := startResponder(t, "127.0.0.1:0")
	cfg := testConfig(target)
	cfg.prefill, cfg.duration = 3000, 5*time.Second
	res, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.prefilled != 3000 || res.prefillFailed != 0 {
		t.Errorf("prefilled %d, failed %d; want 3000, 0", res.prefilled, res.prefillFailed)
	}
	// The connects of three sockets and an announce per peer, at least.
	if got := st.answered.Load(); got < 3000+3 {
		t.Errorf("responder answered %d, want at least %d", got, 3000+3)
	}
	if res.total.at > 3*time.Second {
		t.Errorf("prefill of 3000 took %v", res.total.at)
	}
}

// TestRunCountsBadReplies runs against a server that answers connects
// but then errors, garbles or ignores requests in turn.
func TestRunCountsBadReplies(t *testing.T) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	defer func() { conn.Close(); <-served }()
	go func() {
		defer close(served)
		buf := make([]byte, 2048)
		for i := 0; i < 1e6; i++ {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := buf[:n]
			tx := binary.BigEndian.Uint32(req[12:])
			var out []byte
			switch {
			case binary.BigEndian.Uint32(req[8:]) == actionConnect:
				out = reply(actionConnect, int(tx), 0, 1)
			case i%3 == 0:
				out = reply(actionError, int(tx), "go away")
			case i%3 == 1:
				out = reply(actionAnnounce, int(tx), 0, 0, 0) // zero interval
			default:
				continue // lost
			}
			conn.WriteToUDPAddrPort(out, from)
		}
	}()
	cfg := testConfig(conn.LocalAddr().(*net.UDPAddr).AddrPort())
	cfg.conns, cfg.scrape, cfg.warmup, cfg.gso = 1, 0, 0, false
	cfg.duration, cfg.timeout = 500*time.Millisecond, 100*time.Millisecond
	res, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	tot := res.total
	// Texts count the whole run, drain included; totals the measured part.
	if tot.errs[kindAnnounce] == 0 || len(res.errTexts) != 1 || res.errTexts["go away"] < tot.errs[kindAnnounce] {
		t.Errorf("error replies %d, texts %v; want > 0, all \"go away\"", tot.errs[kindAnnounce], res.errTexts)
	}
	if tot.invalid[badCounts] == 0 || tot.lost[kindAnnounce] == 0 {
		t.Errorf("invalid counts %d, lost %d; want both > 0", tot.invalid[badCounts], tot.lost[kindAnnounce])
	}
	if tot.answered() != 0 {
		t.Errorf("answered %d, want 0", tot.answered())
	}
}

func TestMainFlags(t *testing.T) {
	var out, errOut strings.Builder
	if code := mainErr([]string{"-print-hashes", "-torrents", "3"}, &out, &errOut); code != 0 {
		t.Fatalf("-print-hashes exited %d: %s", code, errOut.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 3 || len(out.String()) != 3*41 {
		t.Errorf("-print-hashes -torrents 3 printed %q", out.String())
	}
	for _, args := range [][]string{
		{"-conns", "0"},
		{"-zipf", "0.5"},
		{"-prefill", "70000", "-torrents", "1"},
		{"-events", "none=0"},
		{"-addr", "nowhere"},
		{"-proto", "tcp"},
		{"-proto", "http", "-conns", "0"},
	} {
		errOut.Reset()
		if code := mainErr(args, io.Discard, &errOut); code != 2 {
			t.Errorf("mainErr(%q) = %d, want 2 (stderr %q)", args, code, errOut.String())
		}
	}
}
