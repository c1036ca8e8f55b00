package httpcompat

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/tracker"
)

// A rawClient speaks just enough HTTP/1.1 over one connection to send
// requests and read replies with a Content-Length, into buffers it owns,
// so that it allocates nothing per request: what a test or benchmark
// counts is the server's.
type rawClient struct {
	c    net.Conn
	buf  []byte
	r, w int  // buf[r:w] is read and not yet consumed
	head bool // the next reply answers HEAD: it has no body
}

func newRawClient(tb testing.TB, addr string) *rawClient {
	tb.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return &rawClient{c: c, buf: make([]byte, 64<<10)}
}

var errBadReply = errors.New("rawClient: malformed reply")

// readReply reads one reply and returns its status, its head and its
// body, which alias the client's buffer until the next call.
func (rc *rawClient) readReply() (status int, head, body []byte, err error) {
	for {
		if i := bytes.Index(rc.buf[rc.r:rc.w], []byte("\r\n\r\n")); i >= 0 {
			head = rc.buf[rc.r : rc.r+i+4]
			if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.")) {
				return 0, nil, nil, errBadReply
			}
			status = int(head[9]-'0')*100 + int(head[10]-'0')*10 + int(head[11]-'0')
			n := 0
			if rc.head {
				rc.head = false
			} else if j := bytes.Index(head, []byte("\r\nContent-Length: ")); j >= 0 {
				for _, c := range head[j+len("\r\nContent-Length: "):] {
					if c < '0' || c > '9' {
						break
					}
					n = n*10 + int(c-'0')
				}
			}
			for rc.w-rc.r < len(head)+n {
				if err := rc.fill(); err != nil {
					return 0, nil, nil, err
				}
				head = rc.buf[rc.r : rc.r+len(head)]
			}
			body = rc.buf[rc.r+len(head) : rc.r+len(head)+n]
			rc.r += len(head) + n
			return status, head, body, nil
		}
		if err := rc.fill(); err != nil {
			return 0, nil, nil, err
		}
	}
}

// fill reads more, compacting the buffer first.
func (rc *rawClient) fill() error {
	if rc.r > 0 {
		rc.w = copy(rc.buf, rc.buf[rc.r:rc.w])
		rc.r = 0
	}
	if rc.w == len(rc.buf) {
		return errBadReply
	}
	n, err := rc.c.Read(rc.buf[rc.w:])
	rc.w += n
	if n > 0 {
		return nil
	}
	return err
}

// loopbackSwarm starts a server on 127.0.0.1 whose swarm "bench" has 5
// peers, and returns a raw client connected to it and an announce
// request for the swarm as qBittorrent sends it.
func loopbackSwarm(tb testing.TB) (*rawClient, []byte) {
	ts := startServerTB(tb)
	ih := hashOf("bench")
	for port := 1; port <= 5; port++ {
		if _, err := ts.tr.Announce(&tracker.AnnounceRequest{InfoHash: ih, Addr: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(port)), Left: 1}, nil); err != nil {
			tb.Fatal(err)
		}
	}
	req := []byte("GET /announce?" + benchQuery(ih, "") + " HTTP/1.1\r\nHost: tracker\r\nUser-Agent: qBittorrent/4.6.5\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n")
	return newRawClient(tb, ts.s.Addrs()[0].String()), req
}

// BenchmarkLoopbackAnnounce is one announce over a kept-alive loopback
// connection, one request in flight: the whole serving path, HTTP
// included. cpu-ns/op is the process's CPU time per announce, the
// client's share included (it is small: it only writes and scans bytes).
func BenchmarkLoopbackAnnounce(b *testing.B) {
	rc, req := loopbackSwarm(b)
	b.ReportAllocs()
	cpu := testenv.StartCPU()
	for b.Loop() {
		if _, err := rc.c.Write(req); err != nil {
			b.Fatal(err)
		}
		if status, _, _, err := rc.readReply(); err != nil || status != 200 {
			b.Fatalf("reply: status %d, %v", status, err)
		}
	}
	cpu.Report(b)
}

// TestLoopbackDoesNotAllocate proves the whole serving path, HTTP
// included, allocates nothing per kept-alive announce in steady state.
func TestLoopbackDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	rc, req := loopbackSwarm(t)
	rc.c.SetDeadline(time.Now().Add(30 * time.Second))
	roundTrip := func() {
		if _, err := rc.c.Write(req); err != nil {
			t.Fatal(err)
		}
		if status, _, _, err := rc.readReply(); err != nil || status != 200 {
			t.Fatalf("reply: status %d, %v", status, err)
		}
	}
	for range 10 {
		roundTrip()
	}
	if n := testing.AllocsPerRun(500, roundTrip); n != 0 {
		t.Errorf("a kept-alive announce over loopback allocated %v times, want 0", n)
	}
}
