package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/internal/ratelimit"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// internalErrorText is all a client learns of an error that is not a
// *tracker.ClientError or *ParseError.
const internalErrorText = "internal error"

// A message is one slot of a worker's batch: a datagram read into buf
// and the reply written into out. Both buffers are allocated once, when
// the worker is made, and reused for every datagram that lands in the
// slot.
type message struct {
	buf []byte         // maxRequestLen+1 bytes, so a longer datagram shows
	n   int            // bytes received
	src netip.AddrPort // sender, unmapped
	out []byte         // reply; empty means none. cap is Server.replyLen
}

// counters are one worker's share of Stats. Each worker has its own, so
// workers never write to the same cache line; Stats sums them.
type counters struct {
	connects       atomic.Uint64
	announces      atomic.Uint64
	scrapes        atomic.Uint64
	errorReplies   atomic.Uint64
	badConnIDs     atomic.Uint64
	malformed      atomic.Uint64
	internalErrors atomic.Uint64
	readErrors     atomic.Uint64
	writeErrors    atomic.Uint64
	rateLimited    atomic.Uint64
	_              [64]byte
}

// A worker owns one socket's reads and writes, its batch of messages and
// the request values it parses into; nothing in it is shared with other
// workers, and its goroutine is the only one touching it (Stats reads
// only the atomic counters).
type worker struct {
	s     *Server
	conn  *net.UDPConn // nil in benchmarks of handle
	io    batchConn
	msgs  []message
	ann   AnnounceRequest
	treq  tracker.AnnounceRequest
	scr   ScrapeRequest
	pre   []peertable.Prefetch // the batch's requests, for core.Prefetch
	stats counters

	// The worker's own rate limits, nil when off, built from limits.
	limits        *tracker.Limits
	connectLimit  *ratelimit.Limiter
	announceLimit *ratelimit.Limiter

	// batchAnswered counts the batch's answered connects, announces and
	// scrapes, for the latency histograms.
	batchAnswered [3]uint64

	lastInternalLog time.Time
	lastInternalErr error
	internalSince   uint64 // internal errors not yet logged
}

func newWorker(s *Server, conn *net.UDPConn) (*worker, error) {
	w := &worker{
		s:    s,
		conn: conn,
		msgs: make([]message, s.cfg.Batch),
		ann:  AnnounceRequest{URLData: make([]byte, 0, MaxURLData)},
		scr:  ScrapeRequest{InfoHashes: make([]peertable.InfoHash, 0, MaxScrapeInfoHashes)},
		pre:  make([]peertable.Prefetch, 0, prefetchPerMessage*s.cfg.Batch),
	}
	// One slab each for requests and replies keeps a batch's buffers
	// together in memory.
	in := make([]byte, s.cfg.Batch*(maxRequestLen+1))
	out := make([]byte, s.cfg.Batch*s.replyLen)
	for i := range w.msgs {
		m := &w.msgs[i]
		m.buf = in[i*(maxRequestLen+1) : (i+1)*(maxRequestLen+1) : (i+1)*(maxRequestLen+1)]
		m.out = out[i*s.replyLen : i*s.replyLen : (i+1)*s.replyLen]
	}
	if err := w.setLimits(s.limits.Load()); err != nil {
		return nil, err
	}
	if conn != nil {
		if err := w.io.init(conn, w.msgs); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// run answers batches of datagrams until the Server stops.
func (w *worker) run() {
	w.s.running.Add(1)
	defer w.s.running.Add(-1)
	var backoff time.Duration
	for {
		n, err := w.io.read(w.msgs)
		if err != nil {
			if w.s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			w.stats.readErrors.Add(1)
			// Back off as net/http's accept loop does, logging once per
			// run of failures rather than once per failure.
			if backoff == 0 {
				w.s.log.Error("udp: read failed", "addr", w.conn.LocalAddr().String(), "err", err)
				backoff = 5 * time.Millisecond
			} else {
				backoff = min(2*backoff, time.Second)
			}
			select {
			case <-w.s.closed:
				return
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		now := time.Now() // the batch's clock; one more read times it
		w.refreshLimits()
		w.prefetch(w.msgs[:n])
		for i := range n {
			w.handle(&w.msgs[i], now.Unix())
		}
		if err := w.io.write(w.msgs[:n], &w.stats.writeErrors); err != nil {
			if w.s.stopping.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			w.stats.writeErrors.Add(1)
		}
		took := time.Since(now)
		for i, c := range w.batchAnswered {
			w.s.latency[i].ObserveN(took, c)
			w.batchAnswered[i] = 0
		}
		if w.internalSince > 0 && now.Sub(w.lastInternalLog) >= time.Minute {
			w.logInternal(now)
		}
	}
}

// handle answers one datagram, leaving the reply (if any) in m.out. Only
// a connect with the right protocol ID is answered without a valid
// connection ID, and its reply is no larger than the request.
func (w *worker) handle(m *message, now int64) {
	m.out = m.out[:0]
	b := m.buf[:m.n]
	if len(b) < headerLen || m.src.Port() == 0 {
		w.stats.malformed.Add(1)
		return
	}
	action := binary.BigEndian.Uint32(b[8:])
	txID := binary.BigEndian.Uint32(b[12:])
	addr := m.src.Addr()
	if action == actionConnect {
		if _, err := ParseConnect(b); err != nil {
			w.stats.malformed.Add(1)
			return
		}
		if !w.allow(w.connectLimit, addr, now) {
			return
		}
		w.stats.connects.Add(1)
		w.batchAnswered[latConnect]++
		m.out = appendConnectReply(m.out, txID, w.s.ids.issue(addr, now))
		return
	}
	if !w.s.ids.valid(binary.BigEndian.Uint64(b), addr, now) {
		w.stats.badConnIDs.Add(1)
		return
	}
	switch {
	case len(b) > maxRequestLen:
		w.refuse(m, txID, errRequestTooLarge)
	case action == actionAnnounce:
		if !w.allow(w.announceLimit, addr, now) {
			return
		}
		w.stats.announces.Add(1)
		w.batchAnswered[latAnnounce]++
		w.announce(m, b, txID)
	case action == actionScrape:
		w.stats.scrapes.Add(1)
		w.batchAnswered[latScrape]++
		w.scrape(m, b, txID)
	default:
		w.refuse(m, txID, errUnknownAction)
	}
}

// prefetchPerMessage is how many info hashes a worker prefetches per
// message of its batch, on average: an announce names one, a scrape up to
// 74, and beyond this share a scrape's swarms are not worth the wait.
const prefetchPerMessage = 4

// prefetch hands the swarms and peers that msgs name to core.Prefetch
// before any of them is answered, so that the table's cache misses for
// the whole batch overlap (see peertable.Table.Prefetch). It reads the
// datagrams as they came: one that turns out malformed or unauthenticated
// costs a wasted read and is answered (or not) as if it had never been
// prefetched. An announce is prefetched with its source address, so one
// that names another (the IP field, when allowed) gets no benefit.
func (w *worker) prefetch(msgs []message) {
	pre := w.pre[:0]
	for i := range msgs {
		m := &msgs[i]
		b := m.buf[:m.n]
		if len(b) < headerLen || len(b) > maxRequestLen {
			continue
		}
		switch binary.BigEndian.Uint32(b[8:]) {
		case actionAnnounce:
			if len(b) >= announceLen && len(pre) < cap(pre) {
				pre = append(pre, peertable.Prefetch{
					InfoHash: peertable.InfoHash(b[16:]),
					Addr:     netip.AddrPortFrom(m.src.Addr(), binary.BigEndian.Uint16(b[96:])),
				})
			}
		case actionScrape:
			for off := headerLen; off+len(peertable.InfoHash{}) <= len(b) && len(pre) < cap(pre); off += len(peertable.InfoHash{}) {
				pre = append(pre, peertable.Prefetch{InfoHash: peertable.InfoHash(b[off:])})
			}
		}
	}
	if len(pre) > 0 {
		w.s.core.Prefetch(pre)
	}
	w.pre = pre
}

// refreshLimits applies limits set by SetLimits since the last batch.
func (w *worker) refreshLimits() {
	if l := w.s.limits.Load(); l != w.limits {
		w.setLimits(l) // checked by SetLimits
	}
}

// setLimits rebuilds the worker's limiters for l (checked already).
func (w *worker) setLimits(l *tracker.Limits) error {
	w.limits = l
	w.connectLimit, w.announceLimit = nil, nil
	var err error
	if l.ConnectRate > 0 {
		if w.connectLimit, err = ratelimit.New(l.ConnectRate, l.ConnectBurst, rateBuckets); err != nil {
			return fmt.Errorf("ConnectRate: %w", err)
		}
	}
	if l.AnnounceRate > 0 {
		if w.announceLimit, err = ratelimit.New(l.AnnounceRate, l.AnnounceBurst, rateBuckets); err != nil {
			return fmt.Errorf("AnnounceRate: %w", err)
		}
	}
	return nil
}

// Indexes of Server.latency and worker.batchAnswered.
const (
	latConnect = iota
	latAnnounce
	latScrape
)

// rateBuckets is the size of each row of a worker's rate limiters: two
// rows of 4096 int64s, 64 KiB a limiter.
const rateBuckets = 4096

// allow reports whether addr is within limit l (nil means no limit) at
// now, Unix seconds, and counts it in Stats if not.
func (w *worker) allow(l *ratelimit.Limiter, addr netip.Addr, now int64) bool {
	if l == nil {
		return true
	}
	if ok, _ := l.Allow(ratelimit.Key(addr), now*int64(time.Second)); ok {
		return true
	}
	w.stats.rateLimited.Add(1)
	return false
}

func (w *worker) announce(m *message, b []byte, txID uint32) {
	r := &w.ann
	if err := ParseAnnounce(b, r); err != nil {
		w.refuse(m, txID, err)
		return
	}
	// The reply's family is the source's: the IP field may only name
	// another IPv4 address, and only when the operator allows it.
	ip := m.src.Addr()
	pol := w.s.policy.Load()
	maxPeers, peerLen := w.s.maxPeers6, peertable.PeerLenV6
	if ip.Is4() {
		maxPeers, peerLen = w.s.maxPeers4, peertable.PeerLenV4
		// Only a unicast address may stand in for the source: a
		// multicast, broadcast or loopback one would make peers send
		// traffic where the announcer cannot receive it.
		if o := netip.AddrFrom4(r.IP); pol.AllowIPOverride && o.IsGlobalUnicast() {
			ip = o
		}
	}
	t := &w.treq
	*t = tracker.AnnounceRequest{
		InfoHash:   r.InfoHash,
		PeerID:     r.PeerID,
		Addr:       netip.AddrPortFrom(ip, r.Port),
		Uploaded:   r.Uploaded,
		Downloaded: r.Downloaded,
		Left:       r.Left,
		Event:      r.Event,
		NumWant:    int(r.NumWant), // the tracker resolves it, within MaxPeers
		MaxPeers:   maxPeers,
		Key:        r.Key,
		URLData:    r.URLData,
	}
	// The tracker appends peers straight after the reply header.
	res, err := w.s.core.Announce(t, m.out[:announceReplyLen])
	t.URLData = nil
	if err != nil {
		w.refuse(m, txID, err)
		return
	}
	peers := res.Peers
	if limit := maxPeers * peerLen; len(peers) > limit {
		peers = peers[:limit] // never outgrow MaxPacket, whatever the table does
	}
	m.out = append(m.out[:announceReplyLen], peers...) // a no-op copy when in place
	putAnnounceReply(m.out, txID, res.Interval, res.Counts)
}

func (w *worker) scrape(m *message, b []byte, txID uint32) {
	r := &w.scr
	if err := ParseScrape(b, r); err != nil {
		w.refuse(m, txID, err)
		return
	}
	m.out = appendScrapeReply(m.out, txID)
	for _, ih := range r.InfoHashes {
		m.out = appendScrapeCounts(m.out, w.s.core.Scrape(ih))
	}
}

// refuse answers with a BEP 15 error. Only the text of a *ParseError or
// a *tracker.ClientError reaches the client.
func (w *worker) refuse(m *message, txID uint32, err error) {
	var msg string
	switch e := err.(type) {
	case *ParseError:
		w.stats.malformed.Add(1)
		msg = e.Error()
	case *tracker.ClientError:
		msg = e.Error()
	default:
		if ce := (*tracker.ClientError)(nil); errors.As(err, &ce) {
			msg = ce.Error()
			break
		}
		w.stats.internalErrors.Add(1)
		if w.lastInternalLog.IsZero() {
			// The first is logged at once; later ones once a minute.
			w.lastInternalLog = time.Now()
			w.s.log.Error("udp: tracker failed", "err", err)
		} else {
			w.internalSince++
			w.lastInternalErr = err
		}
		msg = internalErrorText
	}
	w.stats.errorReplies.Add(1)
	m.out = appendErrorReply(m.out[:0], txID, msg)
}

// logInternal reports internal errors counted since the last report, at
// most once a minute per worker.
func (w *worker) logInternal(now time.Time) {
	w.s.log.Error("udp: tracker failed", "count", w.internalSince, "since", w.lastInternalLog, "last_err", w.lastInternalErr)
	w.lastInternalLog, w.lastInternalErr, w.internalSince = now, nil, 0
}
