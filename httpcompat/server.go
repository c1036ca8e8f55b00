package httpcompat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/internal/ratelimit"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// Config configures a Server. Zero values mean "use the default".
type Config struct {
	// Addrs are the addresses to listen on, IP literal and port, such as
	// "0.0.0.0:6969" and "[::]:6969". IPv6 sockets are IPv6-only, so that
	// IPv4 clients never arrive as mapped addresses: list both families to
	// serve both. Port 0 picks a free port. Empty means those two.
	Addrs []string
	// ReadHeaderTimeout bounds reading a request's line and headers: a
	// new connection's first request must arrive whole within it of the
	// accept, and a later one within it of its first byte, so that a
	// client that trickles them holds only its own connection. The
	// connection is then closed without a reply. Zero means 5 seconds.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, its (dropped) body
	// included, from the request's first byte. Zero means 10 seconds.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing the reply to a request, counted from
	// the request's start; a reply not written by then (a client that
	// does not read) closes the connection. Zero means 10 seconds.
	WriteTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request, counted from the previous request's start. Zero
	// means 60 seconds.
	//
	// To spare a timer change per request, the idle and write deadlines
	// are moved only when the one in effect is off by more than an
	// eighth of its timeout (at most a second), so a wait may end up to
	// that much early, never late.
	IdleTimeout time.Duration
	// ShutdownTimeout bounds the graceful part of stopping: idle
	// connections are closed at once, and requests in flight get this
	// long to finish (their replies say Connection: close) before the
	// remaining connections are closed. Zero means 5 seconds.
	ShutdownTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers together, line
	// ends included; a longer head is answered 431 and the connection
	// closed. It must leave room for MaxScrape info hashes (about 70
	// bytes each when fully percent-encoded). Zero means 8 KiB.
	MaxHeaderBytes int
	// MaxConns bounds the open connections over all addresses; beyond it,
	// new connections wait in the kernel's accept queue. Zero means 16384.
	MaxConns int
	// TrustedProxies are the reverse proxies whose RealIPHeader is
	// believed. A request whose connection comes from one of them is
	// served as coming from the address in that header. Empty (the
	// default) trusts nobody. IPv4 prefixes must be written as IPv4.
	TrustedProxies []netip.Prefix
	// RealIPHeader names the header that trusted proxies set. For
	// X-Forwarded-For, the client is the rightmost address that is not a
	// trusted proxy; any other header (such as X-Real-IP) holds the
	// client's address alone. Empty means X-Forwarded-For.
	RealIPHeader string
	// AllowIPParam honours the ip, ipv4 and ipv6 query parameters: an
	// address of the connection's family replaces the source address.
	// Off by default: it lets anyone announce someone else's address, a
	// reflection risk (BEP 7).
	AllowIPParam bool
	// NoExternalIP leaves BEP 24's "external ip" (the client's address as
	// the tracker sees it) out of announce replies. By default it is sent.
	NoExternalIP bool
	// MaxScrape is the most info_hash values one scrape may name; a
	// scrape with more is refused with a failure reason (rather than
	// answered in part, which a client could not tell from unknown
	// torrents). Zero means 64; at most 1024.
	MaxScrape int
	// FullScrape answers a scrape that names no info_hash with every
	// swarm (a BEP 48 full scrape). Off by default: such a scrape is
	// refused with a failure reason. The reply, about 70 bytes a swarm
	// before compression, is built at most once per FullScrapeCache and
	// kept only gzip-compressed; clients that do not accept gzip get it
	// decompressed as it is sent. A reply that takes longer than
	// WriteTimeout to send is cut off.
	FullScrape bool
	// FullScrapeCache is how long one full scrape reply is served before
	// a request builds a fresh one. Zero means 30 seconds.
	FullScrapeCache time.Duration
	// FullScrapeEvery is how often one client may fetch a full scrape; a
	// client is an IPv4 address or an IPv6 /64. An earlier request is
	// refused with BEP 31's "retry in". The limit remembers the most
	// recent 16,384 clients and forgets older ones first. Zero means 60
	// seconds.
	FullScrapeEvery time.Duration
	// AnnounceRate and AnnounceBurst are the rate limit the Server starts
	// with, the announce fields of a tracker.Limits; SetLimits replaces
	// them while it serves. HTTP has no connect step, so there are no
	// connect fields.
	//
	// AnnounceRate limits each client (an IPv4 address or an IPv6 /64) to
	// this many announces a second on average; an announce over the limit
	// is refused with the failure reason "rate limited" and BEP 31's
	// "retry in" (whole minutes, at least 1). The limit is kept in a
	// fixed table of 2×16,384 buckets (256 KiB) indexed by a keyed hash
	// of the client, so memory does not grow with the number of clients;
	// clients that share buckets are limited a little more strictly.
	// Zero means no limit.
	AnnounceRate float64
	// AnnounceBurst is how many announces a client may send at once
	// before AnnounceRate applies. Zero means AnnounceRate rounded up, at
	// least 1.
	AnnounceBurst int
	// Logger receives lifecycle messages and internal errors, never one
	// per request for bad input. Nil means slog.Default().
	Logger *slog.Logger
}

// Check reports the first Config field that is out of range, naming it,
// without opening anything.
func (c *Config) Check() error {
	for i, a := range c.Addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return fmt.Errorf("httpcompat: Addrs[%d] %q: want an IP address and port such as \"0.0.0.0:6969\" or \"[::]:6969\"", i, a)
		}
		if ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
			return fmt.Errorf("httpcompat: Addrs[%d] %q: write IPv4 addresses as IPv4, without a zone", i, a)
		}
	}
	durations := []struct {
		name string
		d    time.Duration
	}{
		{"ReadHeaderTimeout", c.ReadHeaderTimeout},
		{"ReadTimeout", c.ReadTimeout},
		{"WriteTimeout", c.WriteTimeout},
		{"IdleTimeout", c.IdleTimeout},
		{"ShutdownTimeout", c.ShutdownTimeout},
		{"FullScrapeCache", c.FullScrapeCache},
		{"FullScrapeEvery", c.FullScrapeEvery},
	}
	for _, d := range durations {
		if d.d < 0 {
			return fmt.Errorf("httpcompat: %s %v must not be negative (0 means the default)", d.name, d.d)
		}
	}
	switch {
	case c.MaxHeaderBytes < 0 || c.MaxHeaderBytes > 1<<20:
		return fmt.Errorf("httpcompat: MaxHeaderBytes %d out of range (0 means 8 KiB, at most 1 MiB)", c.MaxHeaderBytes)
	case c.MaxHeaderBytes != 0 && c.MaxHeaderBytes < 1024:
		return fmt.Errorf("httpcompat: MaxHeaderBytes %d is too small for an announce (at least 1024)", c.MaxHeaderBytes)
	case c.MaxConns < 0:
		return fmt.Errorf("httpcompat: MaxConns %d must not be negative (0 means 16384)", c.MaxConns)
	case c.MaxScrape < 0 || c.MaxScrape > maxMaxScrape:
		return fmt.Errorf("httpcompat: MaxScrape %d out of range (0 means 64, at most %d)", c.MaxScrape, maxMaxScrape)
	case c.RealIPHeader != "" && !validHeaderName(c.RealIPHeader):
		return fmt.Errorf("httpcompat: RealIPHeader %q is not a header name", c.RealIPHeader)
	}
	if err := c.limits().Check(); err != nil {
		return fmt.Errorf("httpcompat: %w", err)
	}
	for i, p := range c.TrustedProxies {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return fmt.Errorf("httpcompat: TrustedProxies[%d] %v: want a prefix such as 10.0.0.0/8 or fd00::/8, IPv4 written as IPv4", i, p)
		}
	}
	return nil
}

// limits are the rate limits c starts a Server with.
func (c *Config) limits() tracker.Limits {
	return tracker.Limits{AnnounceRate: c.AnnounceRate, AnnounceBurst: c.AnnounceBurst}
}

const maxMaxScrape = 1024

func validHeaderName(s string) bool {
	for i := range len(s) {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

func (c *Config) setDefaults() {
	if len(c.Addrs) == 0 {
		c.Addrs = []string{"0.0.0.0:6969", "[::]:6969"}
	}
	setDefault(&c.ReadHeaderTimeout, 5*time.Second)
	setDefault(&c.ReadTimeout, 10*time.Second)
	setDefault(&c.WriteTimeout, 10*time.Second)
	setDefault(&c.IdleTimeout, 60*time.Second)
	setDefault(&c.ShutdownTimeout, 5*time.Second)
	setDefault(&c.MaxHeaderBytes, 8<<10)
	setDefault(&c.MaxConns, 16384)
	setDefault(&c.MaxScrape, 64)
	setDefault(&c.FullScrapeCache, 30*time.Second)
	setDefault(&c.FullScrapeEvery, 60*time.Second)
	setDefault(&c.RealIPHeader, "X-Forwarded-For")
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Server answers HTTP announces and scrapes on its listeners from one
// tracker.Tracker, with its own HTTP/1.1 server (see Serve). It is also
// an http.Handler, so it can be mounted in a net/http server (tests do).
type Server struct {
	cfg   Config
	t     *tracker.Tracker
	log   *slog.Logger
	lns   []net.Listener
	addrs []netip.AddrPort
	pool  sync.Pool // of *exchange
	// bufPool holds read buffers of Config.MaxHeaderBytes, for heads
	// that outgrow a connection's own small buffer.
	bufPool sync.Pool // of *readBuf

	// policy is swapped whole by SetPolicy and loaded once per request.
	policy atomic.Pointer[policy]

	realIPHeader string           // canonical
	forwardedFor bool             // realIPHeader is X-Forwarded-For: a list
	full         *fullScrape      // nil unless Config.FullScrape
	now          func() time.Time // time.Now; tests set another clock
	stats        *counters

	limitMu sync.Mutex                        // guards the buckets of every limiter limit has held
	limit   atomic.Pointer[ratelimit.Limiter] // nil when announces are not limited

	// testHookAnswer, when set by a test, runs before the connection
	// loop answers each request.
	testHookAnswer func(*request)

	connWG   sync.WaitGroup // the connections' goroutines
	stopping atomic.Bool    // Serve's shutdown or Close has begun: accept no more
	done     chan struct{}  // closed by Close
	mu       sync.Mutex     // guards conns
	conns    map[*conn]struct{}

	served atomic.Bool
	closed atomic.Bool
}

// A Policy is the part of a Server's behaviour that may change while it
// serves; everything else in Config needs a new Server. Its fields mean
// what the Config fields of the same name mean.
type Policy struct {
	AllowIPParam bool
	NoExternalIP bool
	MaxScrape    int // zero means 64; at most 1024
}

// policy is a Policy with what the hot path derives from it.
type policy struct {
	Policy
	tooMany string // failure reason for more than MaxScrape
}

func newPolicy(p Policy) *policy {
	return &policy{Policy: p, tooMany: fmt.Sprintf("too many info_hash values (at most %d)", p.MaxScrape)}
}

// SetLimits replaces the per-client announce rate limit, which starts as
// Config.AnnounceRate and AnnounceBurst (a zero rate switches it off), for
// every announce that starts after it returns. It takes the
// tracker.Limits every frontend takes; HTTP has no connect step, so
// ConnectRate and ConnectBurst are checked but otherwise ignored. The new
// limit starts with empty buckets: every client gets its full burst
// again. On error, which names the field out of range, the limit in
// effect is kept.
func (s *Server) SetLimits(l tracker.Limits) error {
	if err := l.Check(); err != nil {
		return fmt.Errorf("httpcompat: %w", err)
	}
	if l.AnnounceRate == 0 {
		s.limit.Store(nil)
		return nil
	}
	lim, err := ratelimit.New(l.AnnounceRate, l.AnnounceBurst, limitBuckets)
	if err != nil { // not reached: Check allows only what New does
		return fmt.Errorf("httpcompat: AnnounceRate: %w", err)
	}
	s.limit.Store(lim)
	return nil
}

// Policy returns the policy in effect, defaults filled in.
func (s *Server) Policy() Policy { return s.policy.Load().Policy }

// SetPolicy replaces the policy for every request that starts after it
// returns, or returns an error naming the field out of range and keeps the
// policy in effect.
func (s *Server) SetPolicy(p Policy) error {
	if p.MaxScrape < 0 || p.MaxScrape > maxMaxScrape {
		return fmt.Errorf("httpcompat: MaxScrape %d out of range (0 means 64, at most %d)", p.MaxScrape, maxMaxScrape)
	}
	setDefault(&p.MaxScrape, 64)
	s.policy.Store(newPolicy(p))
	return nil
}

// Listen opens the listeners for cfg and returns a Server ready to Serve,
// or an error naming the Config field or address at fault.
func Listen(cfg Config, t *tracker.Tracker) (*Server, error) {
	if t == nil {
		panic("httpcompat: Listen with nil tracker")
	}
	s, err := newServer(cfg, t)
	if err != nil {
		return nil, err
	}
	sem := make(chan struct{}, s.cfg.MaxConns)
	for _, a := range s.cfg.Addrs {
		ln, err := listen(a)
		if err != nil {
			s.closeListeners()
			return nil, fmt.Errorf("httpcompat: listen on %s: %w", a, err)
		}
		bound := ln.Addr().(*net.TCPAddr).AddrPort()
		s.lns = append(s.lns, &limitListener{Listener: ln, sem: sem, done: make(chan struct{})})
		s.addrs = append(s.addrs, netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()))
		s.log.Info("listening", "proto", "http", "addr", s.addrs[len(s.addrs)-1])
	}
	return s, nil
}

// newServer builds a Server without listeners; tests and benchmarks use
// it as an http.Handler or call its core directly.
func newServer(cfg Config, t *tracker.Tracker) (*Server, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	s := &Server{
		cfg:          cfg,
		t:            t,
		log:          cfg.Logger,
		realIPHeader: textproto.CanonicalMIMEHeaderKey(cfg.RealIPHeader),
		now:          time.Now,
		stats:        new(counters),
		done:         make(chan struct{}),
		conns:        make(map[*conn]struct{}),
	}
	s.policy.Store(newPolicy(Policy{AllowIPParam: cfg.AllowIPParam, NoExternalIP: cfg.NoExternalIP, MaxScrape: cfg.MaxScrape}))
	if cfg.FullScrape {
		s.full = newFullScrape(t.Peers(), &cfg)
	}
	if err := s.SetLimits(cfg.limits()); err != nil {
		return nil, err
	}
	s.forwardedFor = s.realIPHeader == "X-Forwarded-For"
	s.pool.New = func() any { return s.newExchange() }
	s.bufPool.New = func() any { return &readBuf{make([]byte, s.cfg.MaxHeaderBytes)} }
	return s, nil
}

// Addrs returns the bound address of each listen address, in Config order.
func (s *Server) Addrs() []netip.AddrPort { return s.addrs }

// Serve answers requests until ctx is done, then stops gracefully: it
// stops accepting, closes idle connections at once, lets in-flight
// requests finish (their replies say Connection: close) for up to
// Config.ShutdownTimeout, closes every connection left and returns once
// all of its goroutines are done. It returns nil after ctx is done or
// Close, or the first listener's error otherwise. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	if s.served.Swap(true) {
		return errors.New("httpcompat: Serve called twice")
	}
	errc := make(chan error, len(s.lns))
	var accepts sync.WaitGroup
	for _, ln := range s.lns {
		accepts.Go(func() { errc <- s.acceptLoop(ln) })
	}
	var first error
	select {
	case <-ctx.Done():
	case <-s.done:
	case first = <-errc:
	}
	s.stopping.Store(true)
	s.closeListeners()
	s.closeConns(false)
	if !s.drain(s.cfg.ShutdownTimeout) {
		s.log.Warn("closing connections that outlived the shutdown timeout", "proto", "http", "timeout", s.cfg.ShutdownTimeout)
		s.closeConns(true)
	}
	accepts.Wait()
	s.connWG.Wait()
	close(errc)
	for err := range errc {
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return fmt.Errorf("httpcompat: %w", first)
	}
	return nil
}

// drain waits up to d for the open connections to close themselves and
// reports whether they did.
func (s *Server) drain(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for wait := time.Millisecond; s.openConns() > 0; wait = min(2*wait, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
	}
	return true
}

// Close closes the listeners and every connection at once. Serve, if it
// is running, then returns.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stopping.Store(true)
	close(s.done)
	s.closeListeners()
	s.closeConns(true)
	return nil
}

func (s *Server) closeListeners() {
	for _, ln := range s.lns {
		ln.Close()
	}
}

// exchange is the per-request state the core borrows from the pool, so
// that a request in steady state allocates nothing of ours. Its buffers
// follow the tracker's MaxNumWant, which a reload may change while the
// exchange sits in the pool: announce makes peers larger when it must,
// and putExchange drops what outgrew the MaxNumWant in effect (bufLens).
type exchange struct {
	query  AnnounceQuery
	req    tracker.AnnounceRequest
	peers  []byte // compact peers from the tracker; cap is what one announce may be given
	hashes []peertable.InfoHash
	out    []byte // the reply
	wire   []byte // the connection loop's pending output: heads and replies
	path   [maxPathLen]byte
	hw     httpWriter // ServeHTTP's replyWriter
}

const (
	// maxPathLen bounds a request path, passkey included; longer paths
	// are not ours (404).
	maxPathLen = 256
	// outLen is a reply buffer's initial size, enough for 50 IPv6 peers
	// or a scrape of 32 hashes; a buffer that grew past maxOutLen, or
	// past what the largest announce reply needs if that is more (see
	// bufLens), is not kept.
	outLen    = 2048
	maxOutLen = 64 << 10
	// announceHeadLen bounds an announce reply without its peers: every
	// key, counts of 10 digits, a 16-byte external ip.
	announceHeadLen = 256
	// maxPeerDictLen bounds one peer of a compact=0 reply, the longest
	// form: d2:ip<len>:<address text>4:porti65535ee.
	maxPeerDictLen = len("d2:ip45:") + len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") + len("4:porti65535ee")
)

// bufLens returns what the tracker's MaxNumWant in effect asks of an
// exchange's buffers: peers, the bytes of compact peers an announce may
// be given (IPv6, the larger, so one buffer serves both families), and
// out, the largest reply buffer worth keeping (an announce of that many
// peers in the longest form, and at least maxOutLen). It reads the
// tracker's config rather than a copy, so that a reload of
// max_numwant, up or down, reaches the next request.
func (s *Server) bufLens() (peers, out int) {
	n := s.t.Config().MaxNumWant
	return n * peertable.PeerLenV6, max(maxOutLen, announceHeadLen+n*maxPeerDictLen)
}

func (s *Server) newExchange() *exchange {
	peers, _ := s.bufLens()
	return &exchange{
		peers:  make([]byte, 0, peers),
		hashes: make([]peertable.InfoHash, 0, s.cfg.MaxScrape),
		out:    make([]byte, 0, outLen),
	}
}

// putExchange gives x back to the pool, without buffers that are more
// than the MaxNumWant in effect needs: one that grew for a larger
// MaxNumWant before a reload lowered it is let go. A peers buffer up to
// twice the size needed is kept, so that a small change costs nothing.
func (s *Server) putExchange(x *exchange) {
	peers, out := s.bufLens()
	if cap(x.out) > out {
		x.out = make([]byte, 0, outLen)
	}
	if cap(x.wire) > flushAt+out {
		x.wire = nil
	}
	if cap(x.peers) > 2*peers {
		x.peers = nil // announce makes one of the size needed
	}
	x.wire = x.wire[:0]
	x.req.URLData = nil
	s.pool.Put(x)
}

// A limitListener accepts a connection only while fewer than cap(sem)
// connections accepted by the listeners that share sem are open;
// otherwise Accept waits, leaving new connections in the kernel's queue.
type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{} // closed by Close, to end a waiting Accept
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, sem: l.sem}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// A limitConn gives its place back when closed.
type limitConn struct {
	net.Conn
	sem      chan struct{}
	released atomic.Bool
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	if !c.released.Swap(true) {
		<-c.sem
	}
	return err
}

// CloseWrite lets the connection loop half-close a connection after its
// last reply, so that the client reads the reply rather than a reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
