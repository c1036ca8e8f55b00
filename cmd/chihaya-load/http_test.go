package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startHTTPResponder serves the HTTP responder on addr (port 0) until the
// test ends and returns its bound address.
func startHTTPResponder(t *testing.T, addr string, closeEach bool) (netip.AddrPort, *httpResponderStats) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st := new(httpResponderStats)
	done := make(chan error)
	go func() { done <- serveHTTPResponder(ctx, ln, closeEach, st) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveHTTPResponder: %v", err)
		}
		ln.Close()
	})
	return ln.Addr().(*net.TCPAddr).AddrPort(), st
}

// testHTTPConfig is testConfig over HTTP.
func testHTTPConfig(target netip.AddrPort) *runConfig {
	cfg := testConfig(target)
	cfg.proto = protoHTTP
	cfg.conns = 4
	cfg.warmup, cfg.duration = 50*time.Millisecond, 250*time.Millisecond
	return cfg
}

func TestHTTPRunAgainstResponder(t *testing.T) {
	for _, c := range []struct {
		addr      string
		closeEach bool
	}{
		{"127.0.0.1:0", false},
		{"[::1]:0", false},
		{"127.0.0.1:0", true},
	} {
		t.Run(fmt.Sprintf("addr=%s/close=%v", c.addr, c.closeEach), func(t *testing.T) {
			before := runtime.NumGoroutine()
			t.Cleanup(func() { checkGoroutines(t, before) }) // after the responder's
			target, st := startHTTPResponder(t, c.addr, c.closeEach)
			cfg := testHTTPConfig(target)
			cfg.wait = time.Second
			res, err := run(context.Background(), cfg, io.Discard)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			tot := res.total
			if tot.ok[kindAnnounce] == 0 || tot.ok[kindScrape] == 0 {
				t.Errorf("answered announces %d, scrapes %d; want both > 0", tot.ok[kindAnnounce], tot.ok[kindScrape])
			}
			if tot.errors() != 0 || tot.lostTotal() != 0 || tot.invalidTotal() != 0 || len(res.readErrs) != 0 {
				t.Errorf("errors %d, lost %d, invalid %d, read errors %v; want none (texts %v)",
					tot.errors(), tot.lostTotal(), tot.invalidTotal(), res.readErrs, res.errTexts)
			}
			if st.rejected.Load() != 0 {
				t.Errorf("responder rejected %d requests", st.rejected.Load())
			}
			requests := tot.sent[kindAnnounce] + tot.sent[kindScrape]
			if !c.closeEach {
				if tot.reconnects != 0 || tot.serverClosed != 0 {
					t.Errorf("reconnects %d, server closes %d; want 0 over keep-alive", tot.reconnects, tot.serverClosed)
				}
				if n := st.conns.Load(); n != uint64(cfg.conns)+2 { // and the probe's two
					t.Errorf("responder saw %d connections, want %d", n, cfg.conns+2)
				}
				return
			}
			// One connection per request: each worker wasted at most
			// one request finding out that the server closes.
			if tot.reconnects+uint64(cfg.conns) < requests || tot.reconnects > requests+uint64(cfg.conns) {
				t.Errorf("%d reconnects for %d requests, want about one each", tot.reconnects, requests)
			}
			if tot.serverClosed < tot.reconnects-uint64(cfg.conns) {
				t.Errorf("server closed %d connections, reconnects %d", tot.serverClosed, tot.reconnects)
			}
			var out strings.Builder
			res.print(&out, cfg)
			if !strings.Contains(out.String(), " reconnects=") {
				t.Errorf("summary has no reconnects in its RESULT line:\n%s", out.String())
			}
		})
	}
}

func TestHTTPPrefill(t *testing.T) {
	target, st := startHTTPResponder(t, "127.0.0.1:0", true)
	cfg := testHTTPConfig(target)
	cfg.prefill, cfg.duration = 500, 5*time.Second
	res, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.prefilled != 500 || res.prefillFailed != 0 {
		t.Errorf("prefilled %d, failed %d; want 500, 0", res.prefilled, res.prefillFailed)
	}
	if got := st.answered.Load(); got < 500 {
		t.Errorf("responder answered %d, want at least 500", got)
	}
}

// startOddServer serves HTTP on 127.0.0.1:0 until the test ends. For the
// i-th request over all connections, answer returns the pieces of the
// reply, written one at a time, and whether to close the connection
// after them (or instead of replying, when there are none).
func startOddServer(t *testing.T, answer func(i int64, head []byte) (pieces []string, close bool)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns []net.Conn
		n     atomic.Int64
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	serve := func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, 0, 8192)
		for range 1_000_000 {
			end := bytes.Index(buf, crlfCRLF)
			if end < 0 {
				if len(buf) == cap(buf) {
					return
				}
				k, err := c.Read(buf[len(buf):cap(buf)])
				if err != nil {
					return
				}
				buf = buf[:len(buf)+k]
				continue
			}
			pieces, close := answer(n.Add(1)-1, buf[:end])
			buf = buf[:copy(buf, buf[end+4:])]
			for _, p := range pieces {
				if _, err := io.WriteString(c, p); err != nil {
					return
				}
				time.Sleep(50 * time.Microsecond) // let the client read a piece alone
			}
			if close {
				return
			}
		}
	}
	wg.Go(func() {
		for range 1_000_000 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// oddBody is the body the responder would give a request.
func oddBody(head []byte) string {
	_, body := responderBody(nil, head)
	return string(body)
}

func TestHTTPRunOddServers(t *testing.T) {
	for _, c := range []struct {
		name   string
		answer func(i int64, head []byte) ([]string, bool)
	}{
		{"chunked", func(_ int64, head []byte) ([]string, bool) {
			b := oddBody(head)
			r := fmt.Sprintf("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x;ext=1\r\n%s\r\n%X\r\n%s\r\n0\r\nX-Trailer: yes\r\n\r\n",
				10, b[:10], len(b)-10, b[10:])
			// Split within the header, a size line and the trailer.
			return []string{r[:20], r[20:50], r[50 : len(r)-8], r[len(r)-8:]}, false
		}},
		{"connection close", func(_ int64, head []byte) ([]string, bool) {
			b := oddBody(head)
			return []string{fmt.Sprintf("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(b), b)}, true
		}},
		{"HTTP/1.0 until EOF", func(_ int64, head []byte) ([]string, bool) {
			return []string{"HTTP/1.0 200 OK\r\n\r\n", oddBody(head)}, true
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testHTTPConfig(startOddServer(t, c.answer))
			cfg.conns = 2
			res, err := run(context.Background(), cfg, io.Discard)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			tot := res.total
			if tot.ok[kindAnnounce] == 0 || tot.ok[kindScrape] == 0 {
				t.Errorf("answered announces %d, scrapes %d; want both > 0", tot.ok[kindAnnounce], tot.ok[kindScrape])
			}
			if tot.errors() != 0 || tot.lostTotal() != 0 || tot.invalidTotal() != 0 || len(res.readErrs) != 0 {
				var out strings.Builder
				res.print(&out, cfg)
				t.Errorf("errors, lost, invalid or read errors; want none:\n%s", out.String())
			}
		})
	}
}

// TestHTTPRunCountsBadReplies runs against a server that refuses,
// garbles or ignores requests in turn.
func TestHTTPRunCountsBadReplies(t *testing.T) {
	reply := func(status, body string) string {
		return fmt.Sprintf("HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s", status, len(body), body)
	}
	target := startOddServer(t, func(i int64, head []byte) ([]string, bool) {
		switch i % 5 {
		case 0:
			return []string{reply("200 OK", "d14:failure reason7:go awaye")}, false
		case 1:
			return []string{reply("500 Oops", "")}, false
		case 2:
			return []string{reply("200 OK", "d8:completei1ee")}, false // no interval, no peers
		case 3:
			return []string{reply("200 OK", "i1e")}, false
		}
		return []string{"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"}, true
	})
	cfg := testHTTPConfig(target)
	cfg.conns, cfg.scrape, cfg.warmup = 2, 0, 0
	cfg.duration, cfg.timeout = 300*time.Millisecond, 100*time.Millisecond
	res, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	tot := res.total
	if tot.errs[kindAnnounce] == 0 || len(res.errTexts) != 1 || res.errTexts["go away"] < tot.errs[kindAnnounce] {
		t.Errorf("error replies %d, texts %v; want > 0, all \"go away\"", tot.errs[kindAnnounce], res.errTexts)
	}
	for _, why := range []bad{badStatus, badCounts, badBencode, badHTTP} {
		if tot.invalid[why] == 0 {
			t.Errorf("invalid %s = 0, want > 0", badNames[why])
		}
	}
	if tot.answered() != 0 || tot.reconnects == 0 {
		t.Errorf("answered %d, reconnects %d; want 0, > 0", tot.answered(), tot.reconnects)
	}
}

// TestHTTPRunLost runs against a server that reads requests and never
// answers: every request is lost after the timeout, on a new connection.
func TestHTTPRunLost(t *testing.T) {
	target := startOddServer(t, func(int64, []byte) ([]string, bool) { return nil, false })
	cfg := testHTTPConfig(target)
	cfg.conns, cfg.warmup = 2, 0
	cfg.duration, cfg.timeout = 300*time.Millisecond, 50*time.Millisecond
	res, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	tot := res.total
	if tot.lostTotal() < 4 || tot.answered() != 0 || tot.reconnects < 4 || len(res.readErrs) != 0 {
		t.Errorf("lost %d, answered %d, reconnects %d, read errors %v; want >= 4, 0, >= 4, none",
			tot.lostTotal(), tot.answered(), tot.reconnects, res.readErrs)
	}
}

func TestHTTPRunRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close() // nobody listens there now
	cfg := testHTTPConfig(target)
	cfg.conns, cfg.warmup, cfg.duration = 1, 0, 100*time.Millisecond
	res, err := run(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.total.refused == 0 || res.total.answered() != 0 {
		t.Errorf("refused %d, answered %d; want > 0, 0", res.total.refused, res.total.answered())
	}
}

func TestAnswerHTTP(t *testing.T) {
	var st httpResponderStats
	h1, h2 := [20]byte{9, '%'}, [20]byte{1}
	req := appendHTTPScrape(nil, "h", [][20]byte{h1, h2, h1})
	head := req[:len(req)-4] // without the final empty line
	out, _ := answerHTTP(nil, nil, head, &st)
	rep, _, err := parseReply(out, false, replyBufLen, new([]byte))
	if err != nil || rep.status != 200 {
		t.Fatalf("scrape answer %q: status %d, %v", out, rep.status, err)
	}
	if _, why := checkHTTPScrape(rep.body, [][20]byte{h1, h2}); why != badNone || !bytes.Contains(rep.body, h1[:]) || !bytes.Contains(rep.body, h2[:]) {
		t.Errorf("scrape answer %q: %s", rep.body, badNames[why])
	}
	for _, c := range []struct {
		head   string
		status int
	}{
		{"GET /announce?info_hash=x HTTP/1.1\r\nHost: h", 200},
		{"GET /scrape?info_hash=short HTTP/1.1", 400},
		{"GET /other HTTP/1.1", 404},
		{"POST /announce HTTP/1.1", 404},
	} {
		out, _ := answerHTTP(nil, nil, []byte(c.head), &st)
		rep, _, err := parseReply(out, false, replyBufLen, new([]byte))
		if err != nil || rep.status != c.status {
			t.Errorf("answer to %q: status %d, %v; want %d", c.head, rep.status, err, c.status)
		}
	}
	if st.answered.Load() != 2 || st.rejected.Load() != 3 {
		t.Errorf("answered %d, rejected %d; want 2, 3", st.answered.Load(), st.rejected.Load())
	}
}
