package httpcompat

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

// Full scrape reply (BEP 48 without info_hash): the scrape reply of every
// swarm, sorted by info hash, and the per-client interval as BEP 48's
// min_request_interval:
//
//	d
//	  5:files d
//	    20:<info hash> d 8:completei<n>e 10:downloadedi<n>e 10:incompletei<n>e e
//	    …
//	  e
//	  5:flags d 20:min_request_interval i<seconds>e e
//	e
//
// A reply is built from one walk of the peer table (peertable.Range, which
// takes no lock), kept gzip-compressed and served until it is
// Config.FullScrapeCache old; the first request after that builds the
// next while later ones wait for it, so there is one build at a time. A
// client that does not accept gzip gets the reply decompressed as it is
// written, so only the compressed copy stays in memory.

// maxScrapeSources bounds how many clients the full-scrape limit
// remembers: about 24 bytes each in a ring and as much again in a map.
const maxScrapeSources = 1 << 14

// gzipLevel trades build time for size. Info hashes are random bytes, so
// higher levels gain little: for 100,000 swarms (7.0 MB) BenchmarkFullScrapeBuild
// took 62 ms for 2.07 MB at BestSpeed, 79 ms for 2.06 MB at the default
// level and 193 ms for 2.02 MB at BestCompression (2 cores).
const gzipLevel = gzip.BestSpeed

// fullScrape is a Server's full-scrape state.
type fullScrape struct {
	table   *peertable.Table
	ttl     time.Duration
	flags   []byte // the encoded "flags" key and value
	refusal string // failure reason for a client that asks too often
	limit   *limiter
	log     *slog.Logger

	cur     atomic.Pointer[fullReply] // nil until the first build
	buildMu sync.Mutex                // held while building, so builds never overlap
	builds  atomic.Uint64             // replies built so far
}

// A fullReply is one built full scrape; it is never modified once
// published.
type fullReply struct {
	gz     []byte // the reply, gzip-compressed
	size   int    // the reply's length uncompressed
	swarms int
	built  time.Time
}

func newFullScrape(t *peertable.Table, cfg *Config) *fullScrape {
	secs := int64((cfg.FullScrapeEvery + time.Second - 1) / time.Second)
	flags := AppendString(nil, "flags")
	flags = append(flags, 'd')
	flags = AppendString(flags, "min_request_interval")
	flags = AppendInt(flags, secs)
	flags = append(flags, 'e')
	return &fullScrape{
		table:   t,
		ttl:     cfg.FullScrapeCache,
		flags:   flags,
		refusal: fmt.Sprintf("full scrape refused: at most one every %v per client", cfg.FullScrapeEvery),
		limit:   newLimiter(cfg.FullScrapeEvery, maxScrapeSources),
		log:     cfg.Logger,
	}
}

// serveFull answers a full scrape from client on w and returns nil, or
// returns a refusal in x.out for the caller to write.
func (s *Server) serveFull(x *exchange, w replyWriter, v *request, client netip.Addr) []byte {
	f := s.full
	now := s.now()
	if wait := f.limit.allow(sourceKey(client), now); wait > 0 {
		return appendFailure(x.out[:0], f.refusal, int((wait+time.Minute-1)/time.Minute))
	}
	rep, err := f.reply(now)
	if err != nil {
		s.stats.internal.Add(1)
		s.log.Error("full scrape failed", "proto", "http", "err", err)
		return appendFailure(x.out[:0], "internal error", 0)
	}
	if acceptsGzip(v.acceptEncoding) {
		w.startFull(len(rep.gz), true)
		w.Write(rep.gz)
		return nil
	}
	w.startFull(rep.size, false)
	if v.method == methodHead {
		return nil
	}
	// A write error is the client's doing (it went away, or WriteTimeout
	// passed); a read error would be ours.
	zr, err := gzip.NewReader(bytes.NewReader(rep.gz))
	buf := make([]byte, 32<<10)
	for err == nil {
		var n int
		n, err = zr.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil
			}
		}
	}
	if err != io.EOF {
		s.log.Error("full scrape: decompressing the cached reply", "proto", "http", "err", err)
	}
	return nil
}

// reply returns a full scrape built less than the cache time before now,
// building one if there is none.
func (f *fullScrape) reply(now time.Time) (*fullReply, error) {
	if rep := f.cur.Load(); rep != nil && now.Sub(rep.built) < f.ttl {
		return rep, nil
	}
	f.buildMu.Lock()
	defer f.buildMu.Unlock()
	if rep := f.cur.Load(); rep != nil && now.Sub(rep.built) < f.ttl {
		return rep, nil // built while we waited
	}
	rep, err := f.build(now)
	if err != nil {
		return nil, err
	}
	f.cur.Store(rep)
	return rep, nil
}

// A scraped swarm, as the build collects them before sorting.
type scraped struct {
	ih peertable.InfoHash
	c  peertable.Counts
}

// build walks the table and returns its full scrape, stamped now.
func (f *fullScrape) build(now time.Time) (*fullReply, error) {
	start := time.Now()
	// Sized from the previous build, so that a table of steady size is
	// collected and compressed without regrowing.
	var all []scraped
	var gz bytes.Buffer
	if prev := f.cur.Load(); prev != nil {
		all = make([]scraped, 0, prev.swarms+prev.swarms/8)
		gz.Grow(len(prev.gz) + len(prev.gz)/8)
	}
	f.table.Range(func(ih peertable.InfoHash, c peertable.Counts) bool {
		all = append(all, scraped{ih, c})
		return true
	})
	slices.SortFunc(all, func(a, b scraped) int { return bytes.Compare(a.ih[:], b.ih[:]) })

	zw, err := gzip.NewWriterLevel(&gz, gzipLevel)
	if err != nil {
		return nil, fmt.Errorf("full scrape: %w", err)
	}
	// The reply goes to the compressor in chunks, so it is never whole
	// in memory uncompressed.
	const chunk = 32 << 10
	buf := make([]byte, 0, chunk+256)
	size := 0
	write := func() error {
		size += len(buf)
		_, err := zw.Write(buf)
		buf = buf[:0]
		return err
	}
	buf = append(buf, 'd')
	buf = AppendString(buf, "files")
	buf = append(buf, 'd')
	for i := range all {
		buf = appendFile(buf, &all[i].ih, all[i].c)
		if len(buf) >= chunk {
			if err := write(); err != nil {
				return nil, fmt.Errorf("full scrape: compress: %w", err)
			}
		}
	}
	buf = append(buf, 'e')
	buf = append(buf, f.flags...)
	buf = append(buf, 'e')
	if err := write(); err != nil {
		return nil, fmt.Errorf("full scrape: compress: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("full scrape: compress: %w", err)
	}
	rep := &fullReply{
		gz:     bytes.Clone(gz.Bytes()), // without the buffer's spare room
		size:   size,
		swarms: len(all),
		built:  now,
	}
	f.builds.Add(1)
	f.log.Debug("full scrape built", "proto", "http", "swarms", rep.swarms,
		"bytes", rep.size, "gzip_bytes", len(rep.gz), "took", time.Since(start))
	return rep, nil
}

// acceptsGzip reports whether Accept-Encoding values accept gzip: named
// (or as x-gzip) with a non-zero weight, or matched by "*" when not named.
func acceptsGzip(vals []string) bool {
	named, star := -1, -1 // -1 not mentioned, 0 refused, 1 accepted
	for _, v := range vals {
		for item := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(item, ";")
			ok := 1
			if zeroWeight(params) {
				ok = 0
			}
			switch name = strings.TrimSpace(name); {
			case strings.EqualFold(name, "gzip"), strings.EqualFold(name, "x-gzip"):
				named = ok
			case name == "*":
				star = ok
			}
		}
	}
	if named >= 0 {
		return named == 1
	}
	return star == 1
}

// zeroWeight reports whether the parameters of an Accept-Encoding item
// give it q=0, which means "not acceptable" (RFC 9110, section 12.4.2).
func zeroWeight(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(k), "q") {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" || v[0] != '0' {
			return false
		}
		rest, dot := strings.CutPrefix(v[1:], ".")
		return (rest == "" || dot) && strings.Trim(rest, "0") == ""
	}
	return false
}

// sourceKey is what the full-scrape limit counts as one client: an IPv4
// address, or an IPv6 /64, which a subscriber usually holds whole. IPv4
// keys are v4-mapped, so they never meet an IPv6 /64.
func sourceKey(a netip.Addr) [16]byte {
	b := a.As16()
	if !a.Is4() {
		clear(b[8:])
	}
	return b
}

// A limiter lets each source through at most once per interval. It
// remembers at most len(ring) sources, forgetting the oldest first, so a
// flood of sources cannot grow it: beyond that many sources per
// interval, the oldest may come back early. It is safe for concurrent
// use.
type limiter struct {
	every time.Duration

	mu    sync.Mutex // guards the fields below
	epoch time.Time  // the first allow's time; entries count from it
	last  map[[16]byte]time.Duration
	// ring holds the allowed sources in the order they were allowed,
	// oldest at head, n of them. last has an entry for a source only
	// while its newest ring entry is in the ring, so it never holds more.
	ring    []limited // allocated by the first allow
	head, n int
	size    int // len(ring)
}

type limited struct {
	key [16]byte
	at  time.Duration // since epoch
}

func newLimiter(every time.Duration, maxSources int) *limiter {
	return &limiter{every: every, size: maxSources, last: make(map[[16]byte]time.Duration)}
}

// allow records a request from key at now and returns 0 if it may go
// ahead, or else how long the source has left to wait.
func (l *limiter) allow(key [16]byte, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ring == nil {
		l.epoch, l.ring = now, make([]limited, l.size)
	}
	at := now.Sub(l.epoch)
	if prev, ok := l.last[key]; ok && at-prev < l.every {
		return l.every - (at - prev)
	}
	// Forget the sources whose interval has passed, and the oldest one
	// if the ring is full.
	for l.n > 0 && (l.n == len(l.ring) || at-l.ring[l.head].at >= l.every) {
		old := l.ring[l.head]
		if prev, ok := l.last[old.key]; ok && prev == old.at {
			delete(l.last, old.key)
		}
		l.head = (l.head + 1) % len(l.ring)
		l.n--
	}
	l.ring[(l.head+l.n)%len(l.ring)] = limited{key, at}
	l.n++
	l.last[key] = at
	return 0
}
