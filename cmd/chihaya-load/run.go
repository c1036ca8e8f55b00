package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"net"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// A result is what a run measured.
type result struct {
	total         *snapshot // the measured interval
	errTexts      map[string]uint64
	prefilled     int64
	prefillFailed int64
	readErrs      []error
}

// run drives cfg.target with cfg.conns workers and returns what they
// measured between the end of the warmup and the end of the run, or, in
// prefill mode, over the whole run. Progress lines go to progress once a
// second unless cfg.quiet. ctx cuts the run short.
func run(ctx context.Context, cfg *runConfig, progress io.Writer) (*result, error) {
	mix, err := parseEventMix(cfg.events)
	if err != nil {
		return nil, err
	}
	wl := &workload{
		hashes:       infoHashes(cfg.seed, cfg.torrents),
		zipfS:        cfg.zipf,
		scrapeFrac:   cfg.scrape,
		scrapeHashes: cfg.scrapeHashes,
		events:       mix,
		numWant:      int32(cfg.numWant),
		peers:        cfg.peers,
		prefill:      cfg.prefill,
	}
	if cfg.wait > 0 {
		if err := waitReady(ctx, cfg, wl.hashes[len(wl.hashes)-1], progress); err != nil {
			return nil, err
		}
	}

	start := time.Now()
	workers, err := newLoaders(cfg, wl, start)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, w := range workers {
			w.close()
		}
	}()

	warmup, end := cfg.warmup, cfg.warmup+cfg.duration
	if cfg.prefill > 0 {
		warmup, end = 0, cfg.duration
	}
	stop := make(chan struct{}) // closed to end the run early
	var wg sync.WaitGroup
	errs := make([]error, len(workers))
	for i, w := range workers {
		wg.Go(func() { errs[i] = w.run(end, stop) })
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	snap := func() *snapshot {
		s := &snapshot{at: time.Since(start), cpu: cpuTime()}
		for _, w := range workers {
			s.add(w.tallied().c)
		}
		return s
	}
	var base, last, final *snapshot
	base = &snapshot{cpu: cpuTime()}
	last = base
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	warmed := time.NewTimer(warmup)
	ended := time.NewTimer(end)
	defer warmed.Stop()
	defer ended.Stop()
	cancelled := ctx.Done()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-warmed.C:
			base = snap()
		case <-ended.C:
			final = snap()
		case <-cancelled:
			cancelled = nil
			close(stop)
		case <-tick.C:
			s := snap()
			if !cfg.quiet {
				printProgress(progress, s.since(last), s.at, wl, cfg)
			}
			last = s
		}
	}
	if final == nil {
		final = snap()
	}
	if base.at > final.at {
		base = &snapshot{cpu: final.cpu} // cut short during the warmup
	}
	res := &result{
		total:         final.since(base),
		errTexts:      make(map[string]uint64),
		prefilled:     wl.prefillDone.Load(),
		prefillFailed: wl.prefillFailed.Load(),
	}
	for i, w := range workers {
		t := w.tallied()
		for text, n := range t.errTexts {
			res.errTexts[text] += n
		}
		if errs[i] != nil {
			return nil, fmt.Errorf("%s %d: %w", cfg.connNoun(), i, errs[i])
		}
		if t.readErr != nil {
			res.readErrs = append(res.readErrs, t.readErr)
		}
	}
	return res, nil
}

// A loader is one goroutine's share of the load: a UDP socket with its
// window of requests, or an HTTP connection with one request at a time.
type loader interface {
	// run sends requests until end (an offset from the run's start) or
	// until stop is closed, and returns once the requests in flight are
	// answered or timed out. It counts failures in its tally; an error
	// means it could not go on.
	run(end time.Duration, stop <-chan struct{}) error
	// tallied returns what the loader counted.
	tallied() *tally
	// close releases the loader's socket, once run has returned.
	close() error
}

// newLoaders returns cfg.conns loaders of cfg.proto.
func newLoaders(cfg *runConfig, wl *workload, start time.Time) ([]loader, error) {
	loaders := make([]loader, cfg.conns)
	if cfg.proto == protoHTTP {
		for i := range loaders {
			loaders[i] = newHTTPWorker(cfg, wl, i, start)
		}
		return loaders, nil
	}
	network := "udp4"
	if cfg.target.Addr().Is6() {
		network = "udp6"
	}
	raddr := net.UDPAddrFromAddrPort(cfg.target)
	for i := range loaders {
		conn, err := net.DialUDP(network, nil, raddr)
		if err != nil {
			for _, w := range loaders[:i] {
				w.close()
			}
			return nil, fmt.Errorf("dial %v: %w", cfg.target, err)
		}
		// Room for a window of replies that arrive while the worker
		// is busy; failure just leaves the system default.
		conn.SetReadBuffer(1 << 20)
		conn.SetWriteBuffer(1 << 20)
		loaders[i] = newWorker(cfg, wl, conn, i, start)
	}
	return loaders, nil
}

// printProgress writes one progress line for the second d ending at at.
func printProgress(w io.Writer, d *snapshot, at time.Duration, wl *workload, cfg *runConfig) {
	var b strings.Builder
	fmt.Fprintf(&b, "%5.0fs %8.0f req/s", at.Seconds(), d.rate(d.answered()))
	if cfg.scrape > 0 {
		fmt.Fprintf(&b, " (scrape %.0f)", d.rate(d.ok[kindScrape]))
	}
	fmt.Fprintf(&b, "  err %d  lost %d  invalid %d  p50 %dus  p99 %dus  cpu %.2f",
		d.errors(), d.lostTotal(), d.invalidTotal(), d.quantile(0.5), d.quantile(0.99), d.cores())
	if cfg.proto == protoHTTP {
		fmt.Fprintf(&b, "  reconnects %d", d.reconnects)
	}
	if cfg.prefill > 0 {
		fmt.Fprintf(&b, "  prefilled %d/%d", wl.prefillDone.Load(), cfg.prefill)
	}
	fmt.Fprintln(w, b.String())
}

// print writes the summary and the RESULT line.
func (r *result) print(w io.Writer, cfg *runConfig) {
	t := r.total
	fam := "IPv4"
	if cfg.target.Addr().Is6() {
		fam = "IPv6"
	}
	mode := fmt.Sprintf("measured %.2fs after %v warmup", t.at.Seconds(), cfg.warmup)
	if cfg.prefill > 0 {
		mode = fmt.Sprintf("prefill of %d peers over %d torrents, %.2fs", cfg.prefill, cfg.torrents, t.at.Seconds())
	}
	if cfg.proto == protoHTTP {
		fmt.Fprintf(w, "target    http://%v (%s), %d connections x 1 in flight, %s\n", cfg.target, fam, cfg.conns, mode)
	} else {
		fmt.Fprintf(w, "target    %v (%s), %d sockets x %d in flight, %s\n", cfg.target, fam, cfg.conns, cfg.window, mode)
	}
	fmt.Fprintf(w, "answered  %d = %.0f req/s (announce %.0f/s, scrape %.0f/s)\n",
		t.answered(), t.rate(t.answered()), t.rate(t.ok[kindAnnounce]), t.rate(t.ok[kindScrape]))
	if cfg.proto == protoHTTP {
		fmt.Fprintf(w, "sent      announce %d, scrape %d\n", t.sent[kindAnnounce], t.sent[kindScrape])
		if t.sent[kindConnect] == 0 && t.serverClosed == 0 {
			fmt.Fprintf(w, "conns     none opened or closed by the server\n")
		} else {
			fmt.Fprintf(w, "conns     %d opened (%d reconnects), %d closed by the server after a reply: %.2f requests per connection\n",
				t.sent[kindConnect], t.reconnects, t.serverClosed, perConn(t))
		}
	} else {
		fmt.Fprintf(w, "sent      connect %d, announce %d, scrape %d\n",
			t.sent[kindConnect], t.sent[kindAnnounce], t.sent[kindScrape])
	}
	fmt.Fprintf(w, "errors    %d%s\n", t.errors(), perKind(&t.errs))
	fmt.Fprintf(w, "lost      %d%s\n", t.lostTotal(), perKind(&t.lost))
	fmt.Fprintf(w, "invalid   %d", t.invalidTotal())
	for i, n := range t.invalid {
		if n > 0 {
			fmt.Fprintf(w, " %s=%d", badNames[i], n)
		}
	}
	fmt.Fprintln(w)
	switch {
	case t.refused > 0 && cfg.proto == protoHTTP:
		fmt.Fprintf(w, "refused   %d connects (is the tracker running?)\n", t.refused)
	case t.refused > 0:
		fmt.Fprintf(w, "refused   %d (ICMP port unreachable: is the tracker running?)\n", t.refused)
	}
	fmt.Fprintf(w, "latency   p50 %dus  p90 %dus  p99 %dus  p99.9 %dus  max %dus\n",
		t.quantile(0.5), t.quantile(0.9), t.quantile(0.99), t.quantile(0.999), t.max())
	if t.cpu > 0 {
		fmt.Fprintf(w, "cpu       %.2f cores used by the generator (GOMAXPROCS %d): %.0f req/s per core\n",
			t.cores(), runtime.GOMAXPROCS(0), t.rate(t.answered())/t.cores())
	}
	texts := slices.SortedFunc(maps.Keys(r.errTexts), func(a, b string) int {
		return cmp.Or(-cmp.Compare(r.errTexts[a], r.errTexts[b]), strings.Compare(a, b))
	})
	for _, s := range texts {
		fmt.Fprintf(w, "error     %q x %d (whole run)\n", s, r.errTexts[s])
	}
	for _, err := range r.readErrs {
		fmt.Fprintf(w, "read      %v\n", err)
	}
	if cfg.prefill > 0 {
		fmt.Fprintf(w, "prefill   %d of %d peers acknowledged, %d failed\n", r.prefilled, cfg.prefill, r.prefillFailed)
	}
	fmt.Fprintf(w, "RESULT rps=%.0f announce_rps=%.0f scrape_rps=%.0f p50_us=%d p99_us=%d errors=%d lost=%d invalid=%d answered=%d seconds=%.2f gen_cpu=%.2f",
		t.rate(t.answered()), t.rate(t.ok[kindAnnounce]), t.rate(t.ok[kindScrape]),
		t.quantile(0.5), t.quantile(0.99), t.errors(), t.lostTotal(), t.invalidTotal(), t.answered(), t.at.Seconds(), t.cores())
	if cfg.prefill > 0 {
		fmt.Fprintf(w, " prefilled=%d", r.prefilled)
	}
	if cfg.proto == protoHTTP {
		fmt.Fprintf(w, " reconnects=%d", t.reconnects)
	}
	fmt.Fprintln(w)
}

// perConn returns the requests sent per connection opened over s, or 0
// when none was opened.
func perConn(s *snapshot) float64 {
	if s.sent[kindConnect] == 0 {
		return 0
	}
	return float64(s.sent[kindAnnounce]+s.sent[kindScrape]) / float64(s.sent[kindConnect])
}

// perKind formats nonzero per-kind counts as " (connect 1, announce 2)".
func perKind(n *[numKinds]uint64) string {
	var parts []string
	for k, v := range n {
		if v > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", kindNames[k], v))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
