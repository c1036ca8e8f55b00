package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"
)

// runConfig is the generator's configuration, read from flags.
type runConfig struct {
	proto        string // protoUDP or protoHTTP
	target       netip.AddrPort
	duration     time.Duration
	warmup       time.Duration
	conns        int
	window       int
	batch        int
	timeout      time.Duration
	torrents     int
	zipf         float64
	peers        int
	scrape       float64
	scrapeHashes int
	events       string
	numWant      int
	seed         uint64
	connIDTTL    time.Duration
	prefill      int64
	wait         time.Duration
	quiet        bool
	gso          bool
	rate         float64 // requests a second over all conns; 0: no limit
}

// Protocols the generator speaks (-proto).
const (
	protoUDP  = "udp"
	protoHTTP = "http"
)

// defaultHTTPConns is -conns for HTTP when the flag is not given: HTTP
// has one request in flight per connection, so it needs many more.
const defaultHTTPConns = 64

// connNoun is what one of cfg.conns is called in messages.
func (c *runConfig) connNoun() string {
	if c.proto == protoHTTP {
		return "connection"
	}
	return "socket"
}

func main() {
	os.Exit(mainErr(os.Args[1:], os.Stdout, os.Stderr))
}

func mainErr(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chihaya-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg         runConfig
		addr        string
		printHashes bool
		responder   string
		respWorkers int
		respBatch   int
		cpuProfile  string
		probeOnly   bool
		httpResp    string
		respClose   bool
		urlData     string
	)
	fs.StringVar(&cfg.proto, "proto", protoUDP, "tracker protocol: udp (BEP 15) or http (announce and scrape over HTTP/1.1)")
	fs.StringVar(&addr, "addr", "127.0.0.1:6969", "tracker `address` (host:port; [::1]:6969 for IPv6)")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to measure; with -prefill or -responder the most they may run (unset: 10m, 1h)")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "load sent before measuring starts, not counted")
	fs.IntVar(&cfg.conns, "conns", 4, fmt.Sprintf("UDP sockets, or HTTP keep-alive connections (then %d unless given), each with its own goroutine and source port", defaultHTTPConns))
	fs.IntVar(&cfg.window, "window", 32, "requests in flight per UDP socket (HTTP: always one per connection)")
	fs.IntVar(&cfg.batch, "batch", 32, "most datagrams read per system call (UDP)")
	fs.BoolVar(&cfg.gso, "gso", true, "send equal-sized requests of a batch as one UDP GSO buffer (Linux); the tracker still gets one datagram each")
	fs.DurationVar(&cfg.timeout, "timeout", time.Second, "a request not answered within this is lost")
	fs.IntVar(&cfg.torrents, "torrents", 10000, "number of distinct info hashes")
	fs.Float64Var(&cfg.zipf, "zipf", 1.1, "Zipf exponent s > 1 of torrent popularity; 0 means uniform")
	fs.IntVar(&cfg.peers, "peers", 1000, "distinct peers (announced ports) per socket or connection")
	fs.Float64Var(&cfg.scrape, "scrape", 0, "fraction of requests that are scrapes (0..1)")
	fs.IntVar(&cfg.scrapeHashes, "scrape-hashes", 1, "info hashes per scrape (1..74)")
	fs.StringVar(&cfg.events, "events", defaultEvents, "announce event weights")
	fs.Float64Var(&cfg.rate, "rate", 0, "most requests a second, over all sockets or connections together (0: as fast as possible)")
	fs.IntVar(&cfg.numWant, "numwant", 50, "peers asked for per announce (-1: tracker's default)")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed of the info hashes and of the random choices")
	fs.DurationVar(&cfg.connIDTTL, "connid-ttl", time.Minute, "how long a UDP connection ID is used (BEP 15: at most 1m)")
	fs.Int64Var(&cfg.prefill, "prefill", 0, "announce `N` distinct peers over -torrents, then exit")
	fs.DurationVar(&cfg.wait, "wait", 0, "first wait up to this long for an announce of the last info hash to succeed")
	fs.BoolVar(&probeOnly, "probe", false, "only wait (up to -wait, default 10s) for the tracker to answer, then exit")
	fs.BoolVar(&cfg.quiet, "q", false, "no progress lines")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the generator or responder to `file`")
	fs.BoolVar(&printHashes, "print-hashes", false, "print the -torrents info hashes of -seed in hex, one a line, and exit")
	fs.StringVar(&responder, "responder", "", "run a trivial BEP 15 responder on `address` instead")
	fs.IntVar(&respWorkers, "responder-workers", runtime.GOMAXPROCS(0), "responder goroutines (UDP)")
	fs.IntVar(&respBatch, "responder-batch", 64, "datagrams per responder system call (UDP)")
	fs.StringVar(&httpResp, "http-responder", "", "run a trivial HTTP tracker responder on `address` instead")
	fs.StringVar(&urlData, "urldata", "", "announce `path` (e.g. /PASSKEY/announce): sent as BEP 41 URL data with UDP announces, the path of HTTP ones")
	fs.BoolVar(&respClose, "responder-close", false, "the HTTP responder closes the connection after every reply, without saying so, as opentracker does")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "chihaya-load: unexpected arguments %q\n", fs.Args())
		return 2
	}
	durationSet, connsSet := false, false
	fs.Visit(func(f *flag.Flag) {
		durationSet = durationSet || f.Name == "duration"
		connsSet = connsSet || f.Name == "conns"
	})
	if err := setURLDataFlag(urlData); err != nil {
		fmt.Fprintf(stderr, "chihaya-load: -urldata: %v\n", err)
		return 2
	}
	if cfg.proto == protoHTTP && !connsSet {
		cfg.conns = defaultHTTPConns
	}

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if printHashes {
		if cfg.torrents < 1 {
			fmt.Fprintln(stderr, "chihaya-load: -torrents must be at least 1")
			return 2
		}
		if err := writeHashes(stdout, infoHashes(cfg.seed, cfg.torrents)); err != nil {
			fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
			return 1
		}
		return 0
	}
	if responder != "" || httpResp != "" {
		limit := time.Hour
		if durationSet {
			limit = cfg.duration
		}
		if httpResp != "" {
			return runHTTPResponder(ctx, httpResp, respClose, limit, stdout, stderr)
		}
		return runResponder(ctx, responder, respWorkers, respBatch, limit, stdout, stderr)
	}

	if cfg.prefill > 0 && !durationSet {
		cfg.duration = 10 * time.Minute
	}
	ap, err := resolve(addr)
	if err != nil {
		fmt.Fprintf(stderr, "chihaya-load: -addr: %v\n", err)
		return 2
	}
	cfg.target = ap
	if err := cfg.check(); err != nil {
		fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
		return 2
	}
	if probeOnly {
		if cfg.wait == 0 {
			cfg.wait = 10 * time.Second
		}
		hs := infoHashes(cfg.seed, cfg.torrents)
		if err := waitReady(ctx, &cfg, hs[len(hs)-1], stderr); err != nil {
			fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
			return 1
		}
		return 0
	}
	res, err := run(ctx, &cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
		return 1
	}
	res.print(stdout, &cfg)
	if res.total.answered() == 0 {
		fmt.Fprintln(stderr, "chihaya-load: no valid reply in the measured interval")
		return 1
	}
	if cfg.prefill > 0 && res.prefilled < cfg.prefill {
		fmt.Fprintf(stderr, "chihaya-load: prefill incomplete: %d of %d peers acknowledged\n", res.prefilled, cfg.prefill)
		return 1
	}
	return 0
}

// resolve turns host:port into an address, IPv4 addresses unmapped.
func resolve(addr string) (netip.AddrPort, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if !ap.Addr().IsValid() || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q: need an IP address and a port", addr)
	}
	return ap, nil
}

// check rejects flag values the generator cannot run with, naming the flag.
func (c *runConfig) check() error {
	switch {
	case c.proto != protoUDP && c.proto != protoHTTP:
		return fmt.Errorf("-proto must be %s or %s", protoUDP, protoHTTP)
	case c.duration <= 0:
		return fmt.Errorf("-duration must be positive")
	case c.warmup < 0:
		return fmt.Errorf("-warmup must not be negative")
	case c.conns < 1 || c.conns > 4096:
		return fmt.Errorf("-conns must be in 1..4096")
	case c.window < 1 || c.window > 1<<16:
		return fmt.Errorf("-window must be in 1..65536")
	case c.batch < 1 || c.batch > 1024:
		return fmt.Errorf("-batch must be in 1..1024")
	case c.timeout <= 0:
		return fmt.Errorf("-timeout must be positive")
	case c.torrents < 1:
		return fmt.Errorf("-torrents must be at least 1")
	case c.zipf != 0 && c.zipf <= 1:
		return fmt.Errorf("-zipf must be 0 (uniform) or greater than 1")
	case c.peers < 1:
		return fmt.Errorf("-peers must be at least 1")
	case c.scrape < 0 || c.scrape > 1:
		return fmt.Errorf("-scrape must be in 0..1")
	case c.scrapeHashes < 1 || c.scrapeHashes > maxScrapeHashes:
		return fmt.Errorf("-scrape-hashes must be in 1..%d", maxScrapeHashes)
	case c.numWant < -1:
		return fmt.Errorf("-numwant must be -1 or more")
	case c.connIDTTL <= 0 || c.connIDTTL > time.Minute:
		return fmt.Errorf("-connid-ttl must be in (0, 1m]")
	case c.prefill < 0:
		return fmt.Errorf("-prefill must not be negative")
	case c.prefill > 0 && (c.prefill+int64(c.torrents)-1)/int64(c.torrents) > 65535:
		return fmt.Errorf("-prefill %d over -torrents %d puts more than 65535 peers (ports) in a torrent", c.prefill, c.torrents)
	case c.rate < 0:
		return fmt.Errorf("-rate must not be negative")
	case c.wait < 0:
		return fmt.Errorf("-wait must not be negative")
	}
	if _, err := parseEventMix(c.events); err != nil {
		return fmt.Errorf("-events: %w", err)
	}
	return nil
}

// runResponder serves the trivial responder on addr until ctx is done or
// limit has passed, then prints what it did.
func runResponder(ctx context.Context, addr string, workers, batch int, limit time.Duration, stdout, stderr io.Writer) int {
	ap, err := resolve(addr)
	if err != nil {
		fmt.Fprintf(stderr, "chihaya-load: -responder: %v\n", err)
		return 2
	}
	if workers < 1 || batch < 1 || batch > 1024 {
		fmt.Fprintln(stderr, "chihaya-load: -responder-workers must be at least 1 and -responder-batch in 1..1024")
		return 2
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
		return 1
	}
	defer conn.Close()
	conn.SetReadBuffer(4 << 20)
	conn.SetWriteBuffer(4 << 20)
	fmt.Fprintf(stderr, "chihaya-load: responder on %v, %d workers\n", conn.LocalAddr(), workers)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var st responderStats
	if err := serveResponder(ctx, conn, workers, batch, &st); err != nil {
		fmt.Fprintf(stderr, "chihaya-load: responder: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "responder: answered %d, rejected %d, ignored %d, in %d buffers\n",
		st.answered.Load(), st.rejected.Load(), st.ignored.Load(), st.buffers.Load())
	return 0
}
