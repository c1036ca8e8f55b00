// Command chihaya is the tracker daemon. With no flags it runs a public
// tracker in memory on UDP port 6969, IPv4 and IPv6; -config names a TOML
// file (see chihaya.example.toml) for everything else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

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
	configPath := fs.String("config", "", "TOML configuration `file` (default: in-memory public tracker on UDP port 6969)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; options go before arguments, see -help", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stdout, "chihaya", versionString())
		return nil
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, cfg, newLogger(cfg, stderr))
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts, _ := cfg.logHandlerOptions() // checked by LoadConfig
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the tracker until ctx is done, then stops every part within
// the configured shutdown timeout.
func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	table, err := peertable.New(cfg.peertable())
	if err != nil {
		return err
	}
	core, err := tracker.New(cfg.tracker(), table)
	if err != nil {
		return err
	}
	var udpSrv *udp.Server
	if !cfg.UDP.Disabled {
		if udpSrv, err = udp.Listen(cfg.udp(log), core); err != nil {
			return err
		}
	}
	log.Info("chihaya started", "version", versionString(), "udp", !cfg.UDP.Disabled)

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	wg.Go(func() { errc <- table.Run(runCtx) })
	if udpSrv != nil {
		wg.Go(func() { errc <- udpSrv.Serve(runCtx) })
	}

	var first error
	select {
	case <-ctx.Done():
		log.Info("stopping", "timeout", cfg.shutdownTimeout())
	case first = <-errc:
		if first == nil {
			first = errors.New("a server returned before shutdown")
		}
		log.Error("a server stopped unexpectedly; shutting down", "err", first)
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
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
	if first != nil {
		return first
	}
	s := table.Stats()
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
