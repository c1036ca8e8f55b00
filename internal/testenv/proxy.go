package testenv

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A Proxy forwards TCP connections from a loopback port to a target, such as
// Redis or PostgreSQL, so a test can cut the network or slow it down without
// touching the server other tests share. Point the code under test at Addr
// instead of the server.
//
// Methods are safe for concurrent use. Every goroutine a Proxy starts has
// exited once Stop returns; Cleanup calls Stop.
type Proxy struct {
	target string
	ln     net.Listener
	delay  atomic.Int64  // time.Duration added before each forwarded chunk
	done   chan struct{} // closed by Stop; wakes delayed forwarders
	stop   sync.Once
	wg     sync.WaitGroup

	mu    sync.Mutex // guards the fields below
	cut   bool
	conns map[net.Conn]struct{} // both sides of every open proxied connection
}

// dialTimeout bounds the connection to the target, so an unreachable target
// shows up to the client as a closed connection rather than a hang.
const dialTimeout = 5 * time.Second

// NewProxy starts a proxy on 127.0.0.1:0 that forwards to target (host:port).
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: proxy to %s: listen on 127.0.0.1:0: %v; is the loopback interface up?", target, err)
	}
	p := &Proxy{
		target: target,
		ln:     ln,
		done:   make(chan struct{}),
		conns:  make(map[net.Conn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	tb.Cleanup(p.Stop)
	return p
}

// Addr returns the host:port the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut simulates an outage: it resets every open proxied connection on both
// sides, and until Restore it accepts new connections only to reset them.
// Clients therefore see errors at once, as when a server dies, rather than
// hanging until their own timeouts as with a silent network partition.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.closeAllLocked()
}

// Restore ends an outage started by Cut: new connections are forwarded
// again. Connections reset by Cut stay closed; clients must reconnect.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// SetDelay makes the proxy wait d before forwarding each chunk it reads, in
// both directions, to imitate a slow server or network. Zero means no delay.
// The new delay applies from the next chunk on.
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

// Stop closes the listener and every proxied connection and waits for the
// proxy's goroutines to exit. It is idempotent.
func (p *Proxy) Stop() {
	p.stop.Do(func() {
		close(p.done)
		p.ln.Close()
		p.mu.Lock()
		p.closeAllLocked()
		p.mu.Unlock()
	})
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Temporary failures such as EMFILE: back off briefly, but
			// still notice Stop.
			select {
			case <-p.done:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		p.mu.Lock()
		refuse := p.cut
		p.mu.Unlock()
		if refuse {
			reset(c)
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve dials the target for client c and forwards in both directions.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	s, err := d.Dial("tcp", p.target)
	if err != nil {
		reset(c)
		return
	}
	p.mu.Lock()
	select {
	case <-p.done:
		p.cut = true // Stop ran while dialing; do not register.
	default:
	}
	if p.cut {
		p.mu.Unlock()
		reset(c)
		reset(s)
		return
	}
	p.conns[c] = struct{}{}
	p.conns[s] = struct{}{}
	p.mu.Unlock()

	p.wg.Add(2)
	go p.forward(s, c)
	go p.forward(c, s)
}

// forward copies from src to dst until either fails, then closes both.
func (p *Proxy) forward(dst, src net.Conn) {
	defer p.wg.Done()
	defer p.drop(dst, src)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if d := time.Duration(p.delay.Load()); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-p.done:
					t.Stop()
					return
				}
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// drop closes a proxied pair and forgets it. Whichever direction ends first
// closes both, which unblocks the other.
func (p *Proxy) drop(a, b net.Conn) {
	p.mu.Lock()
	delete(p.conns, a)
	delete(p.conns, b)
	p.mu.Unlock()
	a.Close()
	b.Close()
}

func (p *Proxy) closeAllLocked() {
	for c := range p.conns {
		reset(c)
		delete(p.conns, c)
	}
}

// reset closes c with an RST rather than a FIN where it can, so the peer
// gets "connection reset" as it would from a crashed server.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}
