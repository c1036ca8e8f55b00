// Command chihaya is the tracker daemon. With no flags it runs a public
// tracker in memory on port 6969, UDP (BEP 15) and HTTP, IPv4 and IPv6,
// with metrics and health checks on 127.0.0.1:6880; -config names a TOML
// file (see chihaya.example.toml) for everything else, and -check-config
// checks one without starting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chihaya/chihaya/admin"
	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/internal/gcpercent"
	"github.com/chihaya/chihaya/internal/latency"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
	"github.com/chihaya/chihaya/udp"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise the module version or VCS revision is reported.
var version = ""

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "chihaya:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("chihaya", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "TOML configuration `file` (default: in-memory public tracker on UDP and HTTP port 6969)")
	checkPath := fs.String("check-config", "", "check the TOML `file` as start-up would, without listening; print \"file: ok\" or the error and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	migrate := false
	switch {
	case fs.NArg() == 1 && fs.Arg(0) == "migrate":
		migrate = true
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q; the only command is \"migrate\", and options go before it, see -help", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stdout, "chihaya", versionString())
		return nil
	}
	if *checkPath != "" {
		if *configPath != "" {
			return errors.New("-check-config and -config do not go together: -check-config names the file to check")
		}
		// LoadConfig makes every check start-up makes before it opens
		// a socket; the error, printed by main, names the file and key.
		if _, err := LoadConfig(*checkPath); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok\n", *checkPath)
		return nil
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if migrate {
		return runMigrate(cfg, stdout)
	}
	// The peers hold no pointers and the hot path allocates nothing, so a
	// low GC percent costs little CPU and saves most of the heap's
	// headroom: about 38 to 26 bytes of RSS per IPv4 peer. GOGC, if set,
	// wins.
	gcpercent.Default(gcpercent.Tracker)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log, level := newLogger(cfg, stderr)
	d, err := start(cfg, log)
	if err != nil {
		return err
	}
	d.path, d.level, d.hup = *configPath, level, hup
	return d.run(ctx)
}

// newLogger returns the daemon's logger and the level it logs at, which a
// reload may change.
func newLogger(cfg Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	opts, _ := cfg.logHandlerOptions() // checked by LoadConfig
	level := new(slog.LevelVar)
	level.Set(opts.Level.Level())
	opts.Level = level
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}

// A daemon is the running tracker: the peer table, its frontends and the
// admin listener that reports on them.
type daemon struct {
	cfg   Config // as started; a reload leaves it alone
	log   *slog.Logger
	table *peertable.Table
	core  *tracker.Tracker
	svc   *services          // cache, storage, private mode: each optional
	udp   *udp.Server        // nil when disabled
	http  *httpcompat.Server // nil when disabled
	admin *admin.Server      // nil when disabled
	// ready is true while every frontend is serving: from when run has
	// started them until it begins to stop them (admin's /readyz).
	ready atomic.Bool

	// Set by the caller of start before run, for reload; all optional.
	path  string           // the -config file a SIGHUP re-reads
	level *slog.LevelVar   // the logger's level; nil: log.level needs a restart
	hup   <-chan os.Signal // SIGHUP; nil: run never reloads by itself

	reloadMu sync.Mutex // serializes reloads; guards the field below
	live     Config     // cfg with every reload applied
}

// start builds every part from cfg and opens the listening sockets, so that
// a bad address fails before anything runs.
func start(cfg Config, log *slog.Logger) (*daemon, error) {
	table, hooks, svc, err := openServices(context.Background(), cfg, log)
	if err != nil {
		return nil, err
	}
	core, err := tracker.New(cfg.tracker(), table)
	if err != nil {
		svc.close()
		return nil, err
	}
	core.SetHooks(hooks)
	d := &daemon{cfg: cfg, log: log, table: table, core: core, svc: svc, live: cfg}
	if !cfg.UDP.Disabled {
		if d.udp, err = udp.Listen(cfg.udp(log), core); err != nil {
			return nil, err
		}
	}
	if !cfg.HTTP.Disabled {
		hcfg, err := cfg.http(log)
		if err == nil {
			d.http, err = httpcompat.Listen(hcfg, core)
		}
		if err != nil {
			d.close()
			return nil, err
		}
	}
	if !cfg.Admin.Disabled {
		acfg, err := cfg.admin(log)
		if err == nil {
			d.admin, err = admin.Listen(acfg, d.sources())
		}
		if err != nil {
			d.close()
			return nil, err
		}
	}
	// Every socket is bound, so a bad address has failed before the
	// snapshot is touched; nothing is served until run.
	if err := d.restoreSnapshot(); err != nil {
		d.close()
		return nil, err
	}
	if err := svc.afterRestore(cfg, table, log); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// sources are what the admin listener reports: each running part's own
// counters, read when metrics are scraped.
func (d *daemon) sources() admin.Sources {
	src := admin.Sources{Version: versionString(), Table: d.table.Stats, Ready: d.ready.Load}
	if d.udp != nil {
		src.UDP = d.udp.Stats
		src.UDPLatency = func() map[string]latency.Snapshot {
			st := d.udp.Stats()
			return map[string]latency.Snapshot{"connect": st.ConnectLatency, "announce": st.AnnounceLatency, "scrape": st.ScrapeLatency}
		}
	}
	if d.http != nil {
		src.HTTP = d.http.Stats
	}
	d.svc.sources(&src)
	return src
}

// close closes the listeners of a daemon that start could not finish.
func (d *daemon) close() {
	if d.udp != nil {
		d.udp.Close()
	}
	if d.http != nil {
		d.http.Close()
	}
	if d.admin != nil {
		d.admin.Close()
	}
	d.svc.close()
}

// udpAddrs returns the bound UDP addresses (nil when UDP is disabled).
func (d *daemon) udpAddrs() []netip.AddrPort {
	if d.udp == nil {
		return nil
	}
	return d.udp.Addrs()
}

// httpAddrs returns the bound HTTP addresses (nil when HTTP is disabled).
func (d *daemon) httpAddrs() []netip.AddrPort {
	if d.http == nil {
		return nil
	}
	return d.http.Addrs()
}

// adminAddrs returns the admin listener's address (nil when disabled).
func (d *daemon) adminAddrs() []netip.AddrPort {
	if d.admin == nil {
		return nil
	}
	return d.admin.Addrs()
}

// run serves until ctx is done or a part fails, reloading the config on
// each signal from d.hup; then it stops every part and, once the
// frontends have stopped, writes the snapshot if one is configured. The
// admin listener stops last, so that /readyz says 503
// while the frontends finish their in-flight requests.
func (d *daemon) run(ctx context.Context) error {
	cfg, log := d.cfg, d.log
	log.Info("chihaya started", "version", versionString(), "udp", d.udp != nil, "http", d.http != nil, "admin", d.admin != nil)

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	adminCtx, cancelAdmin := context.WithCancel(context.Background())
	defer cancelAdmin()
	svcCtx, cancelSvc := context.WithCancel(context.Background())
	defer cancelSvc()
	var wg, adminWG sync.WaitGroup
	errc := make(chan error, 12)
	svcWait := d.svc.run(svcCtx, errc)
	wg.Go(func() { errc <- d.table.Run(runCtx) })
	if d.udp != nil {
		wg.Go(func() { errc <- d.udp.Serve(runCtx) })
	}
	if d.http != nil {
		wg.Go(func() { errc <- d.http.Serve(runCtx) })
	}
	if d.admin != nil {
		adminWG.Go(func() { errc <- d.admin.Serve(adminCtx) })
	}
	// The frontends' sockets have been bound since start, so what
	// arrives before their goroutines run waits in the kernel's queues.
	d.ready.Store(true)

	var first error
	for stopping := false; !stopping; {
		select {
		case <-d.hup:
			d.reload(d.path) // it logs what it did
		case <-ctx.Done():
			stopping = true
			log.Info("stopping", "timeout", cfg.shutdownTimeout())
		case first = <-errc:
			stopping = true
			if first == nil {
				first = errors.New("a server returned before shutdown")
			}
			log.Error("a server stopped unexpectedly; shutting down", "err", first)
		}
	}
	d.ready.Store(false)
	cancel()
	done := make(chan struct{})
	var snapErr error
	go func() {
		wg.Wait()
		// The frontends have stopped: the services send what they hold
		// a last time, each within its own bound, and then close.
		cancelSvc()
		svcWait()
		d.svc.close()
		// The snapshot is of one moment.
		// /readyz keeps saying 503 while it is written.
		snapErr = d.saveSnapshot()
		cancelAdmin()
		adminWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(cfg.shutdownTimeout()):
		return fmt.Errorf("shutdown did not finish within %v (tracker.shutdown_timeout)", cfg.shutdownTimeout())
	}
	close(errc)
	for err := range errc {
		if err != nil && first == nil {
			first = err
		}
	}
	if first == nil && snapErr != nil {
		first = snapErr
	} else if snapErr != nil {
		log.Error("snapshot not written", "err", snapErr)
	}
	if first != nil {
		return first
	}
	s := d.table.Stats()
	log.Info("stopped", "swarms", s.Swarms, "peers_v4", s.PeersV4, "peers_v6", s.PeersV6)
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "+dirty"
	}
	return "devel-" + rev
}
