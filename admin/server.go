package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/internal/latency"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/private"
	"github.com/chihaya/chihaya/udp"
)

// Config configures a Server. Zero values mean "use the default".
type Config struct {
	// Addr is the address to listen on, IP literal and port. Port 0 picks
	// a free port. Empty means "127.0.0.1:6880": loopback only, since
	// metrics and profiles describe the tracker to whoever can reach them.
	Addr string
	// Pprof serves net/http/pprof's profiles under /debug/pprof/. Off by
	// default: a profile costs CPU while it runs, and anyone who can
	// reach the listener could start one.
	Pprof bool
	// Logger receives lifecycle messages and errors. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// DefaultAddr is where a Server listens when Config.Addr is empty.
const DefaultAddr = "127.0.0.1:6880"

// Check reports the first Config field that is out of range, naming it,
// without opening anything.
func (c *Config) Check() error {
	if c.Addr == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(c.Addr)
	if err != nil {
		return fmt.Errorf("admin: Addr %q: want an IP address and port such as \"127.0.0.1:6880\"", c.Addr)
	}
	if ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
		return fmt.Errorf("admin: Addr %q: write IPv4 addresses as IPv4, without a zone", c.Addr)
	}
	return nil
}

// Sources are where a Server reads what it reports. Each function is
// called once per scrape of /metrics or view of the status page (Ready
// once per /readyz), from the request's goroutine, and UDP and HTTP also
// every five seconds for the status page's chart, so it must be safe for
// concurrent use. A nil function leaves its metrics out: a frontend that
// is switched off is absent rather than zero.
type Sources struct {
	// Version is reported as the version label of chihaya_build_info.
	Version string
	UDP     func() udp.Stats
	HTTP    func() httpcompat.Stats
	Table   func() peertable.Stats
	// UDPLatency reports the UDP frontend's handling times by action
	// ("connect", "announce", "scrape"), exported as
	// chihaya_request_duration_seconds{protocol="udp"}. HTTP's come with
	// HTTP, in httpcompat.Stats.
	UDPLatency func() map[string]latency.Snapshot
	// Cache reports the connection cache's mirror between tracker
	// processes (conncache.Mirror's Stats).
	Cache func() conncache.Stats
	// Flush reports the public-mode flusher of swarm counts, and
	// Accounting the private-mode accountant of transfer; both are
	// exported with a kind label, "swarms" and "accounting".
	Flush      func() flush.Stats
	Accounting func() flush.Stats
	// Rules reports the private-mode rules: users, torrents and allowed
	// clients held, and how their loading goes.
	Rules func() private.RulesStats
	// Ready reports whether the tracker is serving. Nil means it is
	// whenever the Server is.
	Ready func() bool
	// Start is when the process started, for the status page's uptime.
	// Zero means when Listen made the Server.
	Start time.Time
	// Health lists the dependencies the status page shows, probed once
	// per view. Nil means Redis and PostgreSQL, both not configured.
	Health []Check
}

// Server answers the operations endpoints on its listener.
type Server struct {
	cfg   Config
	src   Sources
	log   *slog.Logger
	srv   *http.Server
	ln    net.Listener
	addrs []netip.AddrPort

	start time.Time     // Sources.Start or when the Server was made
	rates history       // the status page's chart, filled while serving
	pages chan struct{} // a slot per status page being rendered

	served  atomic.Bool
	serving atomic.Bool // between Serve's start and its stop
	closed  atomic.Bool
}

// shutdownTimeout bounds how long Serve lets in-flight requests (a
// metrics scrape, a profile) finish once it stops; then it closes them.
const shutdownTimeout = 2 * time.Second

// Listen opens the listener for cfg and returns a Server ready to Serve,
// or an error naming the Config field or address at fault.
func Listen(cfg Config, src Sources) (*Server, error) {
	s, err := newServer(cfg, src)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", s.cfg.Addr, err)
	}
	bound := ln.Addr().(*net.TCPAddr).AddrPort()
	s.ln = ln
	s.addrs = []netip.AddrPort{netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port())}
	s.log.Info("listening", "proto", "admin", "addr", s.addrs[0], "pprof", s.cfg.Pprof)
	return s, nil
}

// newServer builds a Server without a listener; tests use it as an
// http.Handler.
func newServer(cfg Config, src Sources) (*Server, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, src: src, log: cfg.Logger, start: src.Start, pages: make(chan struct{}, 4)}
	if s.start.IsZero() {
		s.start = time.Now()
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		newCollector(src),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
	)
	errLog := slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: errLog,
		// Each scrape walks the peer table; a pile-up of scrapes
		// should not make a busy tracker busier.
		MaxRequestsInFlight: 4,
		Timeout:             30 * time.Second,
	}))
	mux.HandleFunc("GET /{$}", s.status)
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	// WriteTimeout ends a slow scrape; a profile runs for as many
	// seconds as asked, so with pprof on only the handlers bound it.
	writeTimeout := 30 * time.Second
	if cfg.Pprof {
		writeTimeout = 0
		// Importing net/http/pprof also registers these on
		// http.DefaultServeMux, which nothing in chihaya serves.
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          errLog,
	}
	return s, nil
}

// Addrs returns the bound address, as a one-element slice like the
// frontends' Addrs.
func (s *Server) Addrs() []netip.AddrPort { return append([]netip.AddrPort(nil), s.addrs...) }

// ServeHTTP answers one request as the listener would.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.srv.Handler.ServeHTTP(w, r) }

// Serve answers requests until ctx is done or Close is called, then stops
// accepting, lets in-flight requests finish for up to two seconds, closes
// every connection and returns once all of its goroutines are done. It
// returns nil after ctx is done or Close, or the listener's error
// otherwise. A Server serves once.
func (s *Server) Serve(ctx context.Context) error {
	if s.served.Swap(true) {
		return errors.New("admin: Serve called twice")
	}
	if s.ln == nil {
		return errors.New("admin: Serve on a Server without a listener")
	}
	s.serving.Store(true)
	var wg sync.WaitGroup
	sctx, stopSampling := context.WithCancel(ctx)
	wg.Go(func() { s.sample(sctx) })
	defer wg.Wait()
	defer stopSampling()
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	var err error
	select {
	case <-ctx.Done():
		s.serving.Store(false)
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if s.srv.Shutdown(sctx) != nil {
			s.srv.Close()
		}
		cancel()
		err = <-errc
	case err = <-errc:
		s.serving.Store(false)
		s.srv.Close() // closes connections a failed listener left open
	}
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("admin: %w", err)
	}
	return nil
}

// Close closes the listener and every connection at once. Serve, if it is
// running, then returns.
func (s *Server) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.serving.Store(false)
	err := s.srv.Close()
	if s.ln != nil {
		s.ln.Close() // in case Serve never ran
	}
	return err
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !s.serving.Load() || s.src.Ready != nil && !s.src.Ready() {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready\n"))
		return
	}
	w.Write([]byte("ok\n"))
}
