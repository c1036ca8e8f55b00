package httpcompat

import (
	"errors"
	"net"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// The connection loop is the server Serve runs: one goroutine per
// accepted connection reads requests into a buffer, parses each head in
// place (request.go), answers it through the core (Server.serve) into an
// output buffer and writes that buffer once no further complete request
// is waiting, so a pipelined burst is answered in order with one write.
// In steady state a request allocates nothing: the head is parsed where
// it was read, the reply is built in an exchange borrowed from the
// Server's pool, and the Date header is cached.
//
// Memory per connection stays small while it waits: a connection owns
// only a smallBuf-sized read buffer. A head that outgrows it moves to a
// Config.MaxHeaderBytes buffer from a pool, and the exchange (with the
// output buffer) is borrowed for a burst; both go back to their pools
// as soon as the connection is idle again.
//
// Deadlines (Config timeouts), each a runtime timer change, are moved
// only when needed:
//
//   - a new connection's first head must arrive within ReadHeaderTimeout
//     of the accept;
//   - a kept-alive connection waits for its next request for up to
//     IdleTimeout after the previous one began; once a head's first byte
//     is in and the head is not complete, the rest must arrive within
//     ReadHeaderTimeout (and a body within ReadTimeout);
//   - the replies to a request must be written within WriteTimeout of
//     the request's start.
//
// The idle and write deadlines are moved only when the one in effect
// is more than deadlineSlack off, so a busy connection moves them about
// once a second rather than once per request: a wait may end up to
// deadlineSlack early, never late.

// smallBuf is the size of the read buffer every connection owns: enough
// for the head of a typical announce with its headers.
const smallBuf = 1024

// flushAt is how much reply a connection buffers before writing it even
// though more requests are waiting (or a full scrape is being sent).
const flushAt = 64 << 10

// drainTime is how long a connection that is closing after a reply
// reads and drops what the client still sends, so that the client reads
// the reply rather than a reset caused by unread data.
const drainTime = 500 * time.Millisecond

// deadlineSlack returns how far a deadline for timeout d may be from the
// wanted one before it is moved: an eighth of d, at most a second.
func deadlineSlack(d time.Duration) time.Duration { return min(d/8, time.Second) }

// A connection's state, for shutdown: an idle connection is closed at
// once, an active one finishes its request.
const (
	connIdle   = iota // waiting for a request's first byte (also a new connection)
	connActive        // reading a head or answering
	connClosed        // closed by shutdown while idle
)

// readBuf is a read buffer of Config.MaxHeaderBytes from Server.bufPool.
type readBuf struct{ b []byte }

// conn is one accepted connection. Its fields belong to its goroutine,
// except state (and nc's Close), which shutdown also uses.
type conn struct {
	s      *Server
	nc     net.Conn
	remote netip.AddrPort
	state  atomic.Int32

	// b[r:w] has been read and not yet consumed. b is small or big.b.
	b     []byte
	r, w  int
	small [smallBuf]byte
	big   *readBuf // nil unless a head outgrew small

	head      requestHead
	headStart time.Time // when the pending head's first bytes were read; zero when none is pending
	lastStart time.Time // when the last request began
	served    bool      // a request has been answered

	x       *exchange // holds the output buffer (x.wire) while replies are pending
	closing bool      // the reply being written says Connection: close
	werr    error     // the first write error: the connection is dead
	date    dateCache
	rdl     time.Time // read deadline in effect
	wdl     time.Time // write deadline in effect
}

// acceptLoop accepts connections on ln and starts a goroutine for each,
// until ln is closed. It returns nil once the Server is stopping, or the
// listener's error.
func (s *Server) acceptLoop(ln net.Listener) error {
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.stopping.Load() {
				return nil
			}
			// Running out of descriptors or memory passes; back off as
			// net/http does rather than spin or stop serving.
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "proto", "http", "err", err, "delay", delay)
				select {
				case <-time.After(delay):
				case <-s.done:
				}
				continue
			}
			return err
		}
		delay = 0
		c := &conn{s: s, nc: nc}
		if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
			c.remote = ta.AddrPort()
		}
		if !s.track(c) {
			nc.Close()
			continue
		}
		s.connWG.Go(c.serve)
	}
}

// track adds c to the open connections, or reports false if the Server
// is stopping.
func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping.Load() {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// closeConns closes the open connections: the idle ones only, or all.
func (s *Server) closeConns(all bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if all || c.state.CompareAndSwap(connIdle, connClosed) {
			c.nc.Close()
		}
	}
}

// openConns returns how many connections are open.
func (s *Server) openConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// serve is the connection's goroutine: it answers requests until the
// connection closes, or one of them says it must.
func (c *conn) serve() {
	defer func() {
		if v := recover(); v != nil {
			c.s.log.Error("panic while answering a request; connection closed", "proto", "http",
				"remote", c.remote, "panic", v, "stack", string(debug.Stack()))
			// The buffers may be in any state: leave them to the GC.
			c.x, c.big = nil, nil
		}
		c.end()
	}()
	c.b = c.small[:]
	// The first request must arrive whole within ReadHeaderTimeout of
	// the accept; readMore leaves this deadline alone.
	c.setReadDeadline(time.Now().Add(min(c.s.cfg.ReadHeaderTimeout, c.s.cfg.ReadTimeout)), 0)
	for {
		// Answer every complete request in the buffer.
		for c.r < c.w {
			n, status := parseHead(c.b[c.r:c.w], c.s.cfg.MaxHeaderBytes, c.s.realIPHeader, &c.head)
			if status != statusOK {
				c.refuse(status)
				return
			}
			if n == 0 {
				break
			}
			c.r += n
			if !c.answer() || !c.discardBody() {
				return
			}
		}
		if !c.flush() {
			return
		}
		if c.r == c.w {
			if !c.waitIdle() {
				return
			}
			continue
		}
		if !c.readMore() {
			return
		}
	}
}

// answer answers the head just parsed and reports whether the connection
// stays open.
func (c *conn) answer() bool {
	start := c.headStart
	if start.IsZero() { // a pipelined request, read with an earlier one
		start = time.Now()
	}
	c.headStart = time.Time{}
	h := &c.head
	h.remote, h.start = c.remote, start
	if c.x == nil {
		c.x = c.s.pool.Get().(*exchange)
	}
	c.closing = h.close // and replyHead adds a shutdown begun meanwhile
	if hook := c.s.testHookAnswer; hook != nil {
		hook(&h.request)
	}
	c.lastStart = start // the write deadline counts from it
	c.s.serve(c.x, &h.request, c)
	c.served = true
	if c.closing {
		c.closeGracefully()
		return false
	}
	if len(c.x.wire) >= flushAt {
		return c.flush()
	}
	return c.werr == nil
}

// discardBody reads and drops the body of the request just answered.
func (c *conn) discardBody() bool {
	for rem := c.head.contentLength; ; {
		k := min(rem, c.w-c.r)
		c.r += k
		if rem -= k; rem == 0 {
			return true
		}
		// The body goes on past the buffer, which is now consumed.
		if !c.flush() {
			return false
		}
		c.r, c.w = 0, 0
		c.setReadDeadline(c.lastStart.Add(c.s.cfg.ReadTimeout), 0)
		n, _ := c.nc.Read(c.b)
		if n == 0 {
			return false
		}
		c.w = n
	}
}

// waitIdle waits, with nothing pending, for the next request's first
// bytes, and reports whether they came. While it waits the connection
// holds no pooled buffer, and shutdown may close it.
func (c *conn) waitIdle() bool {
	c.r, c.w = 0, 0
	c.release()
	if c.served {
		c.setReadDeadline(c.lastStart.Add(c.s.cfg.IdleTimeout), deadlineSlack(c.s.cfg.IdleTimeout))
	}
	c.state.Store(connIdle)
	if c.s.stopping.Load() {
		return false
	}
	n, _ := c.nc.Read(c.b) // an error with no data ends the connection; with data, it comes again
	if !c.state.CompareAndSwap(connIdle, connActive) || n == 0 {
		return false // closed by shutdown, or by the client
	}
	c.w = n
	if c.headStart.IsZero() {
		c.headStart = time.Now()
	}
	return true
}

// readMore reads more of a head that is not complete, making room for it
// first, and reports whether anything came.
func (c *conn) readMore() bool {
	if c.r > 0 {
		c.w = copy(c.b, c.b[c.r:c.w])
		c.r = 0
	}
	if c.w == len(c.b) {
		if c.big != nil { // parseHead refuses a head this long: not reached
			c.refuse(statusHeaderTooLarge)
			return false
		}
		c.big = c.s.bufPool.Get().(*readBuf)
		c.w = copy(c.big.b, c.b[:c.w])
		c.b = c.big.b
	}
	if c.headStart.IsZero() { // a pipelined head, cut off at the end of a read
		c.headStart = time.Now()
	}
	if c.served {
		c.setReadDeadline(c.headStart.Add(min(c.s.cfg.ReadHeaderTimeout, c.s.cfg.ReadTimeout)), 0)
	}
	n, _ := c.nc.Read(c.b[c.w:])
	if n == 0 {
		return false
	}
	c.w += n
	return true
}

// release gives the pooled buffers back; the connection is idle.
func (c *conn) release() {
	if c.big != nil {
		c.s.bufPool.Put(c.big)
		c.big = nil
		c.b = c.small[:]
	}
	if c.x != nil {
		c.s.putExchange(c.x)
		c.x = nil
	}
}

// reply implements replyWriter for the core: the reply joins the
// pending output.
func (c *conn) reply(status int, body []byte) {
	c.x.wire = appendHead(c.x.wire, status, len(body), c.date.at(c.head.start), c.replyHead())
	if c.head.method != methodHead {
		c.x.wire = append(c.x.wire, body...)
	}
}

// startFull implements replyWriter.
func (c *conn) startFull(length int, gz bool) {
	rh := c.replyHead()
	rh.full, rh.gzip = true, gz
	c.x.wire = appendHead(c.x.wire, statusOK, length, c.date.at(c.head.start), rh)
}

// Write implements replyWriter: a full scrape's body, written out in
// flushAt pieces.
func (c *conn) Write(p []byte) (int, error) {
	n := len(p)
	if c.head.method == methodHead {
		return n, nil
	}
	for len(p) > 0 {
		if c.werr != nil {
			return 0, c.werr
		}
		k := min(len(p), flushAt-len(c.x.wire))
		if k <= 0 {
			c.flush()
			continue
		}
		c.x.wire = append(c.x.wire, p[:k]...)
		p = p[k:]
	}
	return n, c.werr
}

// replyHead returns what the reply's head says besides status and
// length. A shutdown that began while the request was answered closes the
// connection after it.
func (c *conn) replyHead() replyHead {
	c.closing = c.closing || c.s.stopping.Load()
	return replyHead{http11: c.head.http11, close: c.closing, keepAlive: c.head.keepAlive && !c.closing}
}

// flush writes the pending output and reports whether the connection is
// still good.
func (c *conn) flush() bool {
	if c.werr != nil {
		return false
	}
	if c.x == nil || len(c.x.wire) == 0 {
		return true
	}
	wt := c.s.cfg.WriteTimeout
	if want := c.lastStart.Add(wt); c.wdl.Sub(want) > 0 || want.Sub(c.wdl) > deadlineSlack(wt) {
		c.nc.SetWriteDeadline(want)
		c.wdl = want
	}
	_, c.werr = c.nc.Write(c.x.wire)
	c.x.wire = c.x.wire[:0]
	return c.werr == nil
}

// setReadDeadline sets the read deadline to want unless the one in
// effect is no later than want and at most slack earlier.
func (c *conn) setReadDeadline(want time.Time, slack time.Duration) {
	if d := want.Sub(c.rdl); d < 0 || d > slack {
		c.nc.SetReadDeadline(want)
		c.rdl = want
	}
}

// refuse answers a request the parser refused, after any replies still
// pending, and closes the connection.
func (c *conn) refuse(status int) {
	if c.x == nil {
		c.x = c.s.pool.Get().(*exchange)
	}
	c.lastStart = time.Now()
	body := errorBodies[status]
	c.x.wire = appendHead(c.x.wire, status, len(body), c.date.at(c.lastStart), replyHead{http11: true, close: true})
	c.x.wire = append(c.x.wire, body...)
	c.closeGracefully()
}

// closeGracefully writes what is pending, then half-closes the
// connection and drops what the client still sends for a moment, so that
// the client reads the replies rather than a reset. end closes it.
func (c *conn) closeGracefully() {
	if !c.flush() {
		return
	}
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.nc.SetReadDeadline(time.Now().Add(drainTime))
	for n := 0; n < maxBody; {
		k, err := c.nc.Read(c.b)
		if err != nil {
			return
		}
		n += k
	}
}

// end closes the connection, returns its buffers and forgets it.
func (c *conn) end() {
	c.nc.Close()
	c.release()
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
}
