package httpcompat

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
)

// serveRaw starts a Server on 127.0.0.1:0 for tests that speak raw
// HTTP: setup, if not nil, runs before Serve (to set test hooks or wrap
// listeners). The server stops when the test ends; stop stops it sooner
// and returns Serve's result.
func serveRaw(t *testing.T, cfg Config, setup func(*Server)) (s *Server, stop func() error) {
	t.Helper()
	cfg.Addrs = []string{"127.0.0.1:0"}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Listen(cfg, newTracker(t))
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	var once sync.Once
	var serr error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serr = <-done:
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return within 10s of cancel")
			}
		})
		return serr
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve = %v", err)
		}
	})
	return s, stop
}

// dial connects a raw client to s with a deadline for the whole test.
func dial(t *testing.T, s *Server) *rawClient {
	t.Helper()
	rc := newRawClient(t, s.Addrs()[0].String())
	rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	return rc
}

// send writes a raw request.
func (rc *rawClient) send(t *testing.T, req string) {
	t.Helper()
	if _, err := io.WriteString(rc.c, req); err != nil {
		t.Fatalf("writing %.40q: %v", req, err)
	}
}

// expect reads one reply and checks its status, that its head contains
// each of heads and that its body starts with body.
func (rc *rawClient) expect(t *testing.T, status int, body string, heads ...string) (head string) {
	t.Helper()
	got, h, b, err := rc.readReply()
	if err != nil {
		t.Fatalf("reading the reply (want %d): %v", status, err)
	}
	if got != status {
		t.Fatalf("status %d, want %d; reply %q", got, status, h)
	}
	for _, want := range heads {
		if !bytes.Contains(h, []byte(want)) {
			t.Errorf("reply head %q lacks %q", h, want)
		}
	}
	if !bytes.HasPrefix(b, []byte(body)) {
		t.Errorf("reply body %.60q, want it to start with %q", b, body)
	}
	return string(h)
}

// expectClosed checks that the server closes the connection soon (within
// within), with nothing more to read.
func (rc *rawClient) expectClosed(t *testing.T, within time.Duration) {
	t.Helper()
	if rc.r < rc.w {
		t.Errorf("unread bytes before the close: %q", rc.buf[rc.r:rc.w])
	}
	rc.c.SetReadDeadline(time.Now().Add(within))
	n, err := rc.c.Read(rc.buf)
	if n > 0 || err == nil || isTimeout(err) {
		t.Errorf("connection not closed within %v: read %q, %v", within, rc.buf[:n], err)
	}
	rc.c.SetReadDeadline(time.Now().Add(10 * time.Second))
}

// announceReq is a raw announce from port, with extra header lines.
func announceReq(proto string, port int, headers ...string) string {
	return "GET /announce?" + announceQuery(hashOf("raw"), port, "1", "") + " " + proto + "\r\n" + strings.Join(headers, "") + "\r\n"
}

const announceBody = "d8:complete"

func TestConnKeepAliveAndClose(t *testing.T) {
	s, _ := serveRaw(t, Config{}, nil)
	t.Run("HTTP/1.1 keeps alive", func(t *testing.T) {
		rc := dial(t, s)
		for port := 1; port <= 3; port++ {
			rc.send(t, announceReq("HTTP/1.1", port, "Host: t\r\n"))
			h := rc.expect(t, 200, announceBody, "HTTP/1.1 200 OK\r\n", "Content-Type: text/plain\r\n", "\r\nDate: ")
			if strings.Contains(h, "Connection:") {
				t.Errorf("kept-alive reply says %q", h)
			}
		}
	})
	t.Run("HTTP/1.1 Connection: close", func(t *testing.T) {
		rc := dial(t, s)
		rc.send(t, announceReq("HTTP/1.1", 10, "Connection: close\r\n"))
		rc.expect(t, 200, announceBody, "Connection: close\r\n")
		rc.expectClosed(t, 2*time.Second)
	})
	t.Run("HTTP/1.0 closes", func(t *testing.T) {
		rc := dial(t, s)
		rc.send(t, announceReq("HTTP/1.0", 11))
		rc.expect(t, 200, announceBody, "HTTP/1.0 200 OK\r\n", "Connection: close\r\n")
		rc.expectClosed(t, 2*time.Second)
	})
	t.Run("HTTP/1.0 keep-alive", func(t *testing.T) {
		rc := dial(t, s)
		for port := 12; port <= 13; port++ {
			rc.send(t, announceReq("HTTP/1.0", port, "Connection: keep-alive\r\n"))
			rc.expect(t, 200, announceBody, "HTTP/1.0 200 OK\r\n", "Connection: keep-alive\r\n")
		}
	})
	t.Run("bare LF", func(t *testing.T) {
		rc := dial(t, s)
		rc.send(t, strings.ReplaceAll(announceReq("HTTP/1.1", 14, "Host: t\r\n"), "\r\n", "\n"))
		rc.expect(t, 200, announceBody)
	})
}

// countingListener counts the writes on the connections it accepts.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestConnPipelining(t *testing.T) {
	var writes atomic.Int64
	s, _ := serveRaw(t, Config{}, func(s *Server) {
		s.lns[0] = countingListener{s.lns[0], &writes}
	})
	rc := dial(t, s)
	ih := hashOf("raw")
	burst := announceReq("HTTP/1.1", 20) +
		"GET /scrape?info_hash=" + escape(ih[:]) + " HTTP/1.1\r\n\r\n" +
		"GET /nope HTTP/1.1\r\n\r\n" +
		"HEAD /announce?" + announceQuery(ih, 21, "1", "") + " HTTP/1.1\r\n\r\n" +
		announceReq("HTTP/1.1", 22)
	rc.send(t, burst)
	rc.expect(t, 200, announceBody)
	rc.expect(t, 200, "d5:filesd20:")
	rc.expect(t, 404, "404 page not found")
	rc.head = true
	rc.expect(t, 200, "", "Content-Length: ")
	_, _, body, _ := rc.readReply()
	if !bytes.HasPrefix(body, []byte(announceBody)) {
		t.Errorf("last reply of the burst: %q", body)
	}
	if n := writes.Load(); n != 1 {
		t.Errorf("a burst of 5 requests took %d writes, want 1", n)
	}
	// The same with each request in pieces.
	writes.Store(0)
	for i := 0; i < len(burst); i += 7 {
		rc.send(t, burst[i:min(i+7, len(burst))])
	}
	for i := range 5 {
		rc.head = i == 3
		if status, _, _, err := rc.readReply(); err != nil || status != []int{200, 200, 404, 200, 200}[i] {
			t.Fatalf("reply %d to the burst in pieces: %d, %v", i, status, err)
		}
	}
}

func TestConnHead(t *testing.T) {
	s, _ := serveRaw(t, Config{}, nil)
	ih := hashOf("head")
	q := "/scrape?info_hash=" + escape(ih[:])
	rc := dial(t, s)
	rc.send(t, "GET "+q+" HTTP/1.1\r\n\r\n")
	getHead := rc.expect(t, 200, "d5:files")
	// HEAD then a 404 on one connection: the HEAD reply has the GET's
	// headers and no body, so the 404 follows its head at once.
	rc.send(t, "HEAD "+q+" HTTP/1.1\r\n\r\n"+"GET /nope HTTP/1.1\r\n\r\n")
	var all []byte
	for !bytes.Contains(all, []byte("404 page not found")) {
		n, err := rc.c.Read(rc.buf)
		if err != nil {
			t.Fatalf("reading HEAD and 404 replies: %v (have %q)", err, all)
		}
		all = append(all, rc.buf[:n]...)
	}
	head, rest, _ := bytes.Cut(all, []byte("\r\n\r\n"))
	if !bytes.HasPrefix(rest, []byte("HTTP/1.1 404 ")) {
		t.Errorf("HEAD reply has a body: %q", rest)
	}
	cl := func(h string) string {
		i := strings.Index(h, "Content-Length: ")
		return h[i : i+strings.Index(h[i:], "\r\n")]
	}
	if got, want := cl(string(head)+"\r\n"), cl(getHead); got != want {
		t.Errorf("HEAD has %s, GET %s", got, want)
	}
}

func TestConnErrors(t *testing.T) {
	s, _ := serveRaw(t, Config{MaxHeaderBytes: 1024}, nil)
	tests := []struct {
		name, req string
		status    int
		heads     []string
		closes    bool
	}{
		{"404", "GET /nope HTTP/1.1\r\n\r\n", 404, nil, false},
		{"405", "POST /announce HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405, []string{"Allow: GET, HEAD\r\n"}, false},
		{"405, unknown method", "BREW /scrape HTTP/1.1\r\n\r\n", 405, []string{"Allow: GET, HEAD\r\n"}, false},
		{"garbage", "\x16\x03\x01 hello\r\n\r\n", 400, []string{"Connection: close\r\n"}, true},
		{"bad escape", "GET /%zz/announce HTTP/1.1\r\n\r\n", 400, []string{"Connection: close\r\n"}, true},
		{"folding", "GET /announce HTTP/1.1\r\nX: a\r\n b\r\n\r\n", 400, nil, true},
		{"oversize", "GET /announce?" + strings.Repeat("a", 2000) + " HTTP/1.1\r\n\r\n", 431, []string{"Connection: close\r\n"}, true},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, nil, true},
		{"Transfer-Encoding", "GET /announce HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, nil, true},
		{"large body", "GET /announce HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n", 413, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := s.Stats().NotFound
			rc := dial(t, s)
			rc.send(t, tt.req)
			rc.expect(t, tt.status, "", tt.heads...)
			if tt.closes {
				rc.expectClosed(t, 2*time.Second)
				return
			}
			if got := s.Stats().NotFound - before; got != 1 {
				t.Errorf("Stats().NotFound grew by %d, want 1", got)
			}
			rc.send(t, announceReq("HTTP/1.1", 30))
			rc.expect(t, 200, announceBody)
		})
	}
}

// A body within maxBody is read and dropped, and the connection serves
// the next request, whether the body comes with the head or later.
func TestConnBodyDiscarded(t *testing.T) {
	s, _ := serveRaw(t, Config{}, nil)
	rc := dial(t, s)
	body := strings.Repeat("b", 5000)
	req := "GET /announce?" + announceQuery(hashOf("raw"), 40, "1", "") + " HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"
	rc.send(t, req+body+announceReq("HTTP/1.1", 41))
	rc.expect(t, 200, announceBody)
	rc.expect(t, 200, announceBody)
	rc.send(t, req+body[:100])
	rc.expect(t, 200, announceBody)
	time.Sleep(20 * time.Millisecond)
	rc.send(t, body[100:])
	rc.send(t, announceReq("HTTP/1.1", 42))
	rc.expect(t, 200, announceBody)
}

func TestConnTimeouts(t *testing.T) {
	t.Run("ReadHeaderTimeout on a kept-alive connection", func(t *testing.T) {
		s, _ := serveRaw(t, Config{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Minute}, nil)
		rc := dial(t, s)
		rc.send(t, announceReq("HTTP/1.1", 50))
		rc.expect(t, 200, announceBody)
		start := time.Now()
		req := announceReq("HTTP/1.1", 51)
		for i := range 20 { // a byte every 50 ms, never the whole head
			if _, err := rc.c.Write([]byte{req[i]}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		rc.expectClosed(t, 2*time.Second)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("trickling client held its connection for %v", d)
		}
	})
	t.Run("IdleTimeout", func(t *testing.T) {
		const idle = 300 * time.Millisecond
		s, _ := serveRaw(t, Config{IdleTimeout: idle}, nil)
		rc := dial(t, s)
		rc.send(t, announceReq("HTTP/1.1", 52))
		rc.expect(t, 200, announceBody)
		time.Sleep(idle / 2) // within the timeout: still served
		rc.send(t, announceReq("HTTP/1.1", 53))
		rc.expect(t, 200, announceBody)
		start := time.Now()
		rc.expectClosed(t, 3*time.Second)
		if d := time.Since(start); d < idle/2 {
			t.Errorf("idle connection closed after %v, before IdleTimeout %v", d, idle)
		}
	})
}

// Shutdown closes idle connections at once and lets a request in flight
// finish, with Connection: close.
func TestConnGracefulShutdown(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	s, stop := serveRaw(t, Config{ShutdownTimeout: 5 * time.Second}, func(s *Server) {
		s.testHookAnswer = func(r *request) {
			if strings.HasPrefix(r.path, "/slow/") {
				close(entered)
				<-release
			}
		}
	})
	idle := dial(t, s)
	idle.send(t, announceReq("HTTP/1.1", 60))
	idle.expect(t, 200, announceBody)
	busy := dial(t, s)
	busy.send(t, "GET /slow/announce?"+announceQuery(hashOf("raw"), 61, "1", "")+" HTTP/1.1\r\n\r\n")
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	idle.expectClosed(t, 2*time.Second) // while the busy request is still held
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	busy.expect(t, 200, announceBody, "Connection: close\r\n")
	busy.expectClosed(t, 2*time.Second)
	if err := <-stopped; err != nil {
		t.Errorf("Serve = %v", err)
	}
}

// A panic while answering closes that connection, is logged with its
// stack, and leaves the server serving.
func TestConnPanicRecovered(t *testing.T) {
	var logs testenv.LogBuffer
	s, _ := serveRaw(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, func(s *Server) {
		s.testHookAnswer = func(r *request) {
			if strings.HasPrefix(r.path, "/boom/") {
				panic("boom")
			}
		}
	})
	rc := dial(t, s)
	rc.send(t, "GET /boom/announce HTTP/1.1\r\n\r\n")
	rc.expectClosed(t, 2*time.Second)
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "panic=boom") || !strings.Contains(out, "conn.go") {
		t.Errorf("log after a panic: %q, want an error with the panic and its stack", out)
	}
	rc = dial(t, s)
	rc.send(t, announceReq("HTTP/1.1", 70))
	rc.expect(t, 200, announceBody)
}

// A full scrape larger than the output buffer is written in pieces, within
// WriteTimeout of the request, gzipped or not.
func TestConnLargeFullScrape(t *testing.T) {
	ts := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, FullScrape: true, FullScrapeEvery: time.Millisecond})
	want := map[peertable.InfoHash]scrapeCounts{}
	for i := range 3000 {
		var ih peertable.InfoHash
		binary.BigEndian.PutUint64(ih[:], rand.Uint64())
		binary.BigEndian.PutUint32(ih[16:], uint32(i))
		announceTo(t, ts.tr, ih, "10.0.0.1:1", 1, peertable.EventNone)
		want[ih] = scrapeCounts{0, 0, 1}
	}
	for _, gz := range []bool{false, true} {
		time.Sleep(5 * time.Millisecond) // FullScrapeEvery
		req, err := http.NewRequest("GET", ts.v4+"/scrape", nil)
		if err != nil {
			t.Fatal(err)
		}
		if gz {
			req.Header.Set("Accept-Encoding", "gzip")
		}
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len(body)) {
			t.Fatalf("gzip=%v: status %d, Content-Length %d for %d bytes, %v", gz, resp.StatusCode, resp.ContentLength, len(body), err)
		}
		if gz {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		} else if len(body) < 2*flushAt {
			t.Fatalf("full scrape of %d bytes: want more than %d for this test", len(body), 2*flushAt)
		}
		checkFiles(t, decodeFull(t, body, 1), want)
	}
}
