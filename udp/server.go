package udp

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/internal/latency"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// Config configures a Server. Zero values mean "use the default".
type Config struct {
	// Addrs are the addresses to listen on, IP literals with a port such
	// as "0.0.0.0:6969" and "[::]:6969". An IPv6 address listens for
	// IPv6 only, so the families never mix on a socket. Port 0 picks a
	// free port, shared by all of that address's worker sockets. Empty
	// means both of those defaults. On Linux a wildcard address answers
	// each request from the address it was sent to; elsewhere the kernel
	// picks, so list a multi-homed host's addresses one by one there.
	Addrs []string
	// Workers is the number of SO_REUSEPORT sockets, each with its own
	// goroutine and buffers, per address. Zero means runtime.NumCPU().
	// At most 1024.
	Workers int
	// Secret keys connection IDs. Processes that share it accept each
	// other's IDs. Empty means 32 random bytes per start. At least 16
	// bytes. It is never logged.
	Secret []byte
	// ConnIDGrace extends the two minutes BEP 15 gives a connection ID,
	// for clients that reuse IDs longer. Zero means 3 minutes; negative
	// means none. At most an hour.
	ConnIDGrace time.Duration
	// MaxPacket is the largest IP packet (headers included: 20+8 bytes
	// for IPv4, 40+8 for IPv6) an announce reply may make. The peers
	// that fit are the room the Server gives the tracker
	// (tracker.AnnounceRequest.MaxPeers), which resolves numwant. Zero
	// means 1500. At least 576, at most 65535.
	MaxPacket int
	// AllowIPOverride honours the IP field of IPv4 announces. Off by
	// default: it lets anyone announce someone else's address. The field
	// is always ignored in IPv6 announces. SetPolicy changes it while the
	// Server serves.
	AllowIPOverride bool
	// Batch is how many datagrams a worker reads and writes per system
	// call (recvmmsg and sendmmsg on Linux, one at a time elsewhere).
	// Zero means 16. At most 1024. A bigger batch saves system calls
	// where they are dear, but holds the first replies of a batch back
	// until the last is ready: on AMD EPYC VMs 16 answered 7% more
	// announces than 32 at a quarter less p99 (docs/performance.md).
	Batch int
	// ConnectRate, ConnectBurst, AnnounceRate and AnnounceBurst are the
	// per-source rate limits the Server starts with, the fields of a
	// tracker.Limits; SetLimits replaces them while it serves.
	//
	// ConnectRate limits each source (an IPv4 address or an IPv6 /64) to
	// this many connect requests a second on average, in each worker;
	// a connect over the limit gets no reply. Zero means no limit. See
	// "Rate limits" in the package documentation for what holds with
	// several workers.
	ConnectRate float64
	// ConnectBurst is how many connects a source may send at once before
	// ConnectRate applies. Zero means ConnectRate rounded up, at least 1.
	ConnectBurst int
	// AnnounceRate limits each source to this many announces a second
	// on average, in each worker, counted only once the connection ID is
	// valid; an announce over the limit gets no reply. Zero means no
	// limit. BEP 15 clients announce every few minutes per torrent, so
	// the limit must leave room for a client seeding many torrents.
	AnnounceRate float64
	// AnnounceBurst is how many announces a source may send at once
	// before AnnounceRate applies. Zero means AnnounceRate rounded up, at
	// least 1.
	AnnounceBurst int
	// Logger receives lifecycle messages and worker errors, never per
	// packet. Nil means slog.Default().
	Logger *slog.Logger
}

// LogValue logs c without its Secret.
func (c Config) LogValue() slog.Value {
	secret := "random"
	if len(c.Secret) > 0 {
		secret = "[redacted]"
	}
	return slog.GroupValue(
		slog.Any("addrs", c.Addrs),
		slog.Int("workers", c.Workers),
		slog.String("secret", secret),
		slog.Duration("conn_id_grace", c.ConnIDGrace),
		slog.Int("max_packet", c.MaxPacket),
		slog.Bool("allow_ip_override", c.AllowIPOverride),
		slog.Int("batch", c.Batch),
		slog.Float64("connect_rate", c.ConnectRate),
		slog.Int("connect_burst", c.ConnectBurst),
		slog.Float64("announce_rate", c.AnnounceRate),
		slog.Int("announce_burst", c.AnnounceBurst),
	)
}

// Stats are a Server's counters since Listen, for logs and metrics.
type Stats struct {
	// Connects, Announces and Scrapes count requests of each action that
	// proved themselves (a connect with the right protocol ID, anything
	// else with a valid connection ID), answered or refused.
	Connects  uint64
	Announces uint64
	Scrapes   uint64
	// ErrorReplies counts BEP 15 error replies sent.
	ErrorReplies uint64
	// BadConnIDs counts requests dropped without a reply because their
	// connection ID was invalid or expired.
	BadConnIDs uint64
	// Malformed counts requests that could not be parsed: dropped when
	// unproven, otherwise answered with an error.
	Malformed uint64
	// InternalErrors counts announces that failed inside the tracker and
	// were answered with "internal error".
	InternalErrors uint64
	// ReadErrors and WriteErrors count failed socket calls; a failed
	// write loses one reply.
	ReadErrors  uint64
	WriteErrors uint64
	// RateLimited counts connects and announces dropped without a reply
	// by ConnectRate or AnnounceRate; they are not in Connects or
	// Announces.
	RateLimited uint64
	// ConnectLatency, AnnounceLatency and ScrapeLatency are how long
	// each answered request's batch took, from the read that returned it
	// to the write of its replies: every request of a batch is counted
	// with the whole batch's time, an upper bound of its own (time spent
	// queued in the kernel before the read is not included). Two clock
	// reads per batch, none per request.
	ConnectLatency  latency.Snapshot
	AnnounceLatency latency.Snapshot
	ScrapeLatency   latency.Snapshot
}

// core is what the Server needs of a *tracker.Tracker; tests wrap one to
// look at what reaches it.
type core interface {
	Announce(req *tracker.AnnounceRequest, peers []byte) (tracker.AnnounceResponse, error)
	Scrape(ih peertable.InfoHash) peertable.Counts
	Prefetch(reqs []peertable.Prefetch)
}

// Server answers BEP 15 requests on its sockets from one tracker.Tracker.
// Its methods are safe for concurrent use.
type Server struct {
	cfg    Config // defaults filled in
	core   core
	log    *slog.Logger
	ids    connIDs
	addrs  []netip.AddrPort
	socks  []*net.UDPConn // every socket, each worker's own
	wrk    []*worker
	closed chan struct{} // closed by Close or when Serve stops

	// policy is swapped whole by SetPolicy and loaded once per announce.
	policy atomic.Pointer[Policy]
	// limits is swapped whole by SetLimits; each worker rebuilds its own
	// limiters when it sees a new one, at the start of a batch.
	limits atomic.Pointer[tracker.Limits]
	// latency holds the batch times of answered connects, announces and
	// scrapes (see Stats).
	latency [3]latency.Histogram

	// Derived from cfg.
	maxPeers4 int // most IPv4 peers in a reply of MaxPacket: the tracker's MaxPeers
	maxPeers6 int
	replyLen  int // largest reply payload

	serving  atomic.Bool
	stopping atomic.Bool  // set before deadlines push the workers out
	running  atomic.Int32 // workers in their loop
	stopOnce sync.Once
	sockOnce sync.Once
	sockErr  error
}

// Listen opens the worker sockets for cfg and returns a Server ready to
// Serve, or an error naming the Config field or address at fault. It logs
// "listening" once per address.
func Listen(cfg Config, t *tracker.Tracker) (*Server, error) {
	if t == nil {
		panic("udp: Listen with nil tracker")
	}
	return listen(cfg, t)
}

func listen(cfg Config, c core) (*Server, error) {
	s, err := newServer(cfg, c)
	if err != nil {
		return nil, err
	}
	for i, a := range s.cfg.Addrs {
		ap, err := parseListenAddr(a)
		if err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("udp: Addrs[%d]: %w", i, err)
		}
		socks, err := listenWorkers(ap, s.cfg.Workers)
		if err != nil {
			s.closeSockets()
			return nil, fmt.Errorf("udp: listen on %s: %w", a, err)
		}
		s.socks = append(s.socks, socks...)
		bound := socks[0].LocalAddr().(*net.UDPAddr).AddrPort()
		bound = netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())
		s.addrs = append(s.addrs, bound)
		for j := range s.cfg.Workers {
			// Where SO_REUSEPORT is missing, workers share one socket.
			w, err := newWorker(s, socks[j%len(socks)])
			if err != nil {
				s.closeSockets()
				return nil, fmt.Errorf("udp: listen on %s: %w", a, err)
			}
			s.wrk = append(s.wrk, w)
		}
	}
	for _, a := range s.addrs {
		s.log.Info("listening", "proto", "udp", "addr", a.String(), "workers", s.cfg.Workers)
	}
	return s, nil
}

// newServer checks cfg, fills in its defaults and derives what the
// workers need, without opening sockets.
func newServer(cfg Config, c core) (*Server, error) {
	if len(cfg.Addrs) == 0 {
		cfg.Addrs = []string{"0.0.0.0:6969", "[::]:6969"}
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.ConnIDGrace == 0 {
		cfg.ConnIDGrace = 3 * time.Minute
	} else if cfg.ConnIDGrace < 0 {
		cfg.ConnIDGrace = 0
	}
	if cfg.MaxPacket == 0 {
		cfg.MaxPacket = 1500
	}
	if cfg.Batch == 0 {
		cfg.Batch = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Workers < 0 || cfg.Workers > 1024:
		return nil, fmt.Errorf("udp: Workers %d out of range (0 to 1024)", cfg.Workers)
	case cfg.Batch < 0 || cfg.Batch > 1024:
		return nil, fmt.Errorf("udp: Batch %d out of range (0 to 1024)", cfg.Batch)
	case cfg.MaxPacket < 576 || cfg.MaxPacket > 65535:
		return nil, fmt.Errorf("udp: MaxPacket %d out of range (576 to 65535)", cfg.MaxPacket)
	case cfg.ConnIDGrace > maxConnIDGrace*time.Second:
		return nil, fmt.Errorf("udp: ConnIDGrace %v longer than %v", cfg.ConnIDGrace, maxConnIDGrace*time.Second)
	case len(cfg.Secret) > 0 && len(cfg.Secret) < 16:
		return nil, fmt.Errorf("udp: Secret has %d bytes, want at least 16", len(cfg.Secret))
	}
	limits := tracker.Limits{ConnectRate: cfg.ConnectRate, ConnectBurst: cfg.ConnectBurst, AnnounceRate: cfg.AnnounceRate, AnnounceBurst: cfg.AnnounceBurst}
	if err := limits.Check(); err != nil {
		return nil, fmt.Errorf("udp: %w", err)
	}
	secret := cfg.Secret
	if len(secret) == 0 {
		secret = make([]byte, 32)
		rand.Read(secret) // never fails (crypto/rand)
	}
	s := &Server{
		cfg:       cfg,
		core:      c,
		log:       cfg.Logger,
		ids:       newConnIDs(secret, int64(cfg.ConnIDGrace/time.Second)),
		closed:    make(chan struct{}),
		maxPeers4: (cfg.MaxPacket - ipv4HeaderLen - udpHeaderLen - announceReplyLen) / peertable.PeerLenV4,
		maxPeers6: (cfg.MaxPacket - ipv6HeaderLen - udpHeaderLen - announceReplyLen) / peertable.PeerLenV6,
	}
	s.policy.Store(&Policy{AllowIPOverride: cfg.AllowIPOverride})
	s.limits.Store(&limits)
	s.replyLen = max(
		announceReplyLen+s.maxPeers4*peertable.PeerLenV4,
		announceReplyLen+s.maxPeers6*peertable.PeerLenV6,
		scrapeReplyLen+MaxScrapeInfoHashes*scrapeReplyHashLen,
	)
	return s, nil
}

// A Policy is the part of a Server's own behaviour that may change while
// it serves; everything else in Config needs a new Server. The announce
// policy (intervals, numwant) is the tracker's and changes with
// tracker.Tracker.SetConfig; the rate limits change with SetLimits.
type Policy struct {
	// AllowIPOverride is Config.AllowIPOverride.
	AllowIPOverride bool
}

// SetPolicy replaces the policy for every announce that starts after it
// returns.
func (s *Server) SetPolicy(p Policy) { s.policy.Store(&p) }

// SetLimits replaces the rate limits, which start as Config's
// ConnectRate, ConnectBurst, AnnounceRate and AnnounceBurst. Each worker
// applies them at the start of its next batch, with empty buckets: every
// source gets its full burst again. On error, which names the field out
// of range, the limits in effect are kept.
func (s *Server) SetLimits(l tracker.Limits) error {
	if err := l.Check(); err != nil {
		return fmt.Errorf("udp: %w", err)
	}
	s.limits.Store(&l)
	return nil
}

// parseListenAddr parses an IP literal and port; a 4-in-6 address
// listens on IPv4.
func parseListenAddr(a string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(a)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address and port such as 0.0.0.0:6969 or [::]:6969", a)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Addrs returns the bound address of each listen address, in Config order.
func (s *Server) Addrs() []netip.AddrPort { return append([]netip.AddrPort(nil), s.addrs...) }

// Stats returns the counters summed over the workers.
func (s *Server) Stats() Stats {
	var st Stats
	for _, w := range s.wrk {
		c := &w.stats
		st.Connects += c.connects.Load()
		st.Announces += c.announces.Load()
		st.Scrapes += c.scrapes.Load()
		st.ErrorReplies += c.errorReplies.Load()
		st.BadConnIDs += c.badConnIDs.Load()
		st.Malformed += c.malformed.Load()
		st.InternalErrors += c.internalErrors.Load()
		st.ReadErrors += c.readErrors.Load()
		st.WriteErrors += c.writeErrors.Load()
		st.RateLimited += c.rateLimited.Load()
	}
	st.ConnectLatency = s.latency[latConnect].Snapshot()
	st.AnnounceLatency = s.latency[latAnnounce].Snapshot()
	st.ScrapeLatency = s.latency[latScrape].Snapshot()
	return st
}

// Serve answers datagrams until ctx is done or Close is called, then
// stops the workers, waits for them and closes the sockets. It returns
// nil after a clean stop. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("udp: Serve called twice")
	}
	select {
	case <-s.closed:
		return net.ErrClosed
	default:
	}
	var wg sync.WaitGroup
	for _, w := range s.wrk {
		wg.Go(w.run)
	}
	select {
	case <-ctx.Done():
	case <-s.closed:
	}
	s.stop()
	// Reads blocked in the poller return at once; a worker between
	// calls sees stopping before its next one. Writes get a moment
	// more: the replies of a batch already handled (and accounted) go
	// out, and a stuck write still cannot hold the stop.
	now := time.Now()
	for _, c := range s.socks {
		c.SetReadDeadline(now) // fails only if Close got there first
		c.SetWriteDeadline(now.Add(time.Second))
	}
	wg.Wait()
	return s.closeSockets()
}

// Close closes the sockets of a Server that was never served. On a
// Server being served it stops the workers, as cancelling Serve's
// context does. Close is idempotent.
func (s *Server) Close() error {
	s.stop()
	return s.closeSockets()
}

func (s *Server) stop() {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		close(s.closed)
	})
}

func (s *Server) closeSockets() error {
	s.sockOnce.Do(func() {
		var errs []error
		for _, c := range s.socks {
			errs = append(errs, c.Close())
		}
		s.sockErr = errors.Join(errs...)
	})
	return s.sockErr
}
