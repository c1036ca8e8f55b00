package main

import (
	"errors"
	"math/bits"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// batchConn is the batched I/O both ipv4.PacketConn and ipv6.PacketConn
// offer (their Message types are the same type). On Linux a batch is one
// recvmmsg or sendmmsg.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

func newBatchConn(c *net.UDPConn, v6 bool) batchConn {
	if v6 {
		return ipv6.NewPacketConn(c)
	}
	return ipv4.NewPacketConn(c)
}

const (
	// scanEvery is how often a worker looks for requests that timed out;
	// a timeout is detected up to this much late.
	scanEvery = 10 * time.Millisecond
	// maxTries is how often a prefill announce is sent before it counts
	// as failed.
	maxTries = 5
	// recvBufLen holds the largest announce reply a tracker should send
	// (200 IPv6 peers) with room to spare; a longer one is "truncated".
	recvBufLen = 4096
)

// A slot is one request in flight. Its index is the low bits of the
// transaction ID, so a reply finds its slot without a map; the high bits
// count sends, so a late reply to an expired request does not match the
// slot's next request.
type slot struct {
	busy    bool
	kind    kind
	tries   uint8
	hashes  uint8 // info hashes in a scrape
	numWant int32
	txID    uint32
	sent    time.Duration // since the run started
	job     int64         // prefill job, or -1
}

// A worker owns one connected UDP socket and keeps a window of requests
// in flight on it: it sends into every free slot, reads replies in
// batches, and refills the slots they free. Everything here belongs to
// the worker's goroutine except c, whose counters others read.
type worker struct {
	tally
	cfg     *runConfig
	wl      *workload
	conn    *net.UDPConn
	bc      batchConn
	peerLen int
	pick    *picker
	start   time.Time // the run's start; times are offsets from it

	slots    []slot
	free     []int32 // indexes of idle slots, used as a stack
	slotBits uint
	seq      uint32
	inflight int

	// Connection ID state (BEP 15: usable for a minute after receipt).
	connID     uint64
	haveID     bool
	idAt       time.Duration // when connID was received
	connecting bool          // a connect is in flight
	lostRun    int           // requests lost since the last reply

	jobs prefillJobs

	rx         []ipv4.Message
	rxBufs     [][]byte
	out        *outbox
	pace       *pacer     // -rate's share of this socket, or nil
	hashes     [][20]byte // scratch for scrapes
	ann        announce
	deadline   time.Duration // read deadline currently set
	unexpected int           // count of unexpected read errors
}

// A retryJob is a prefill announce that timed out and is sent again.
type retryJob struct {
	job   int64
	tries uint8
}

// prefillJobs is one worker's share of -prefill: the jobs it must send
// again, and whether the workload has any new ones left.
type prefillJobs struct {
	retry []retryJob
	done  bool // no new job left to take
}

// next returns the next prefill job and how often it was sent before:
// first the retries, then new jobs from wl.
func (p *prefillJobs) next(wl *workload) (int64, uint8, bool) {
	if n := len(p.retry); n > 0 {
		r := p.retry[n-1]
		p.retry = p.retry[:n-1]
		return r.job, r.tries, true
	}
	if p.done {
		return 0, 0, false
	}
	j, ok := wl.takeJob()
	p.done = !ok
	return j, 0, ok
}

// again queues a job whose request was lost.
func (p *prefillJobs) again(job int64, tries uint8) {
	p.retry = append(p.retry, retryJob{job, tries})
}

// finished reports whether every job has been taken and none waits to
// be sent again.
func (p *prefillJobs) finished() bool { return p.done && len(p.retry) == 0 }

func newWorker(cfg *runConfig, wl *workload, conn *net.UDPConn, socket int, start time.Time) *worker {
	v6 := cfg.target.Addr().Is6()
	w := &worker{
		tally:    newTally(),
		cfg:      cfg,
		wl:       wl,
		conn:     conn,
		bc:       newBatchConn(conn, v6),
		peerLen:  peerLenIPv4,
		pick:     newPicker(wl, cfg.seed, socket),
		start:    start,
		slots:    make([]slot, cfg.window),
		slotBits: uint(bits.Len(uint(cfg.window - 1))),
		hashes:   make([][20]byte, 0, maxScrapeHashes),
	}
	if v6 {
		w.peerLen = peerLenIPv6
	}
	w.seq = uint32(w.pick.r.Uint64())
	for i := cfg.window - 1; i >= 0; i-- {
		w.free = append(w.free, int32(i))
	}
	w.rx = make([]ipv4.Message, cfg.batch)
	w.rxBufs = make([][]byte, cfg.batch)
	for i := range w.rx {
		w.rxBufs[i] = make([]byte, recvBufLen)
		w.rx[i].Buffers = [][]byte{w.rxBufs[i]}
	}
	w.out = newOutbox(cfg.window, cfg.gso && gsoSupported(conn))
	w.pace = newPacer(cfg.rate/float64(cfg.conns), cfg.window)
	return w
}

func (w *worker) now() time.Duration { return time.Since(w.start) }

func (w *worker) close() error { return w.conn.Close() }

// run keeps the window full until end, or until stop is closed, then
// waits up to the timeout for the replies still due, and returns. In
// prefill mode it returns once every job is answered or failed. Lost
// requests, refused sends and bad replies are counted, not returned; an
// error means the socket broke.
func (w *worker) run(end time.Duration, stop <-chan struct{}) error {
	lastScan := w.now()
	drainUntil := end + w.cfg.timeout
	for {
		now := w.now()
		select {
		case <-stop:
			stop = nil
			end, drainUntil = min(end, now), min(end, now)+w.cfg.timeout
		default:
		}
		if now-lastScan >= scanEvery {
			w.expire(now)
			lastScan = now
		}
		stopping := now >= end || (w.cfg.prefill > 0 && w.jobs.finished())
		if !stopping {
			if err := w.fill(now); err != nil {
				return err
			}
		}
		if stopping && w.inflight == 0 {
			return nil
		}
		if now >= drainUntil {
			return nil // whatever is left neither counts as lost nor answered
		}
		if w.deadline <= now {
			step := scanEvery
			if w.pace != nil {
				// Wake up for the next token, but not more than once a
				// millisecond: the bucket saves what a wait earns.
				step = min(step, max(time.Millisecond, w.pace.wait(now)))
			}
			w.deadline = now + step
			if w.deadline > end && now < end {
				w.deadline = end
			}
			if err := w.conn.SetReadDeadline(w.start.Add(w.deadline)); err != nil {
				return err
			}
		}
		n, err := w.bc.ReadBatch(w.rx, 0)
		if err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded):
				// Time to look for expired requests and the end.
			case errors.Is(err, syscall.ECONNREFUSED):
				w.c.refused.Add(1)
			default:
				// Transient errors (ENOBUFS, a stray ICMP error) must not
				// end a run; a socket that keeps failing does.
				w.readErr = err
				if w.unexpected++; w.unexpected > 1000 {
					return err
				}
			}
			continue
		}
		now = w.now()
		for i := range n {
			m := &w.rx[i]
			w.handle(w.rxBufs[i][:m.N], m.N >= recvBufLen, now)
		}
	}
}

// expire counts requests older than the timeout as lost and frees their
// slots. A prefill announce is queued again until it has had maxTries.
func (w *worker) expire(now time.Duration) {
	for i := range w.slots {
		s := &w.slots[i]
		if !s.busy || now-s.sent < w.cfg.timeout {
			continue
		}
		w.c.lost[s.kind].Add(1)
		if s.kind == kindConnect {
			w.connecting = false
		}
		if s.job >= 0 {
			if s.tries < maxTries {
				w.jobs.again(s.job, s.tries)
			} else {
				w.wl.prefillFailed.Add(1)
			}
		}
		w.release(int32(i))
		// A whole window lost in a row: the server may have restarted
		// with a new secret and be dropping our ID silently.
		if w.lostRun++; w.lostRun >= len(w.slots) {
			w.haveID = false
			w.lostRun = 0
		}
	}
}

func (w *worker) release(i int32) {
	w.slots[i].busy = false
	w.free = append(w.free, i)
	w.inflight--
}

// take claims a free slot for a request of kind k and returns it with a
// fresh transaction ID.
func (w *worker) take(k kind, now time.Duration) *slot {
	i := w.free[len(w.free)-1]
	w.free = w.free[:len(w.free)-1]
	w.seq++
	s := &w.slots[i]
	*s = slot{busy: true, kind: k, txID: w.seq<<w.slotBits | uint32(i), sent: now, job: -1}
	w.inflight++
	w.c.sent[k].Add(1)
	return s
}

// fill sends a request in every free slot, as one batch: a connect when
// the connection ID is missing or about to expire, otherwise announces
// and scrapes.
func (w *worker) fill(now time.Duration) error {
	o := w.out
	o.reset()
	age := now - w.idAt
	if w.haveID && age >= w.cfg.connIDTTL {
		w.haveID = false // BEP 15: a client must not use an ID longer
	}
	// Ask for a new ID a little early, so the window need not stall.
	if (!w.haveID || age >= w.cfg.connIDTTL*9/10) && !w.connecting && len(w.free) > 0 {
		s := w.take(kindConnect, now)
		w.connecting = true
		start := len(o.bufs[kindConnect])
		o.bufs[kindConnect] = appendConnect(o.bufs[kindConnect], s.txID)
		o.added(kindConnect, start)
	}
	for w.haveID && len(w.free) > 0 && w.pace.take(now) {
		job, tries := int64(-1), uint8(0)
		if w.cfg.prefill > 0 {
			var ok bool
			if job, tries, ok = w.jobs.next(w.wl); !ok {
				break
			}
		}
		if job < 0 && w.pick.scrape() {
			s := w.take(kindScrape, now)
			w.hashes = w.pick.scrapeHashes(w.hashes[:0])
			s.hashes = uint8(len(w.hashes))
			start := len(o.bufs[kindScrape])
			o.bufs[kindScrape] = appendScrape(o.bufs[kindScrape], w.connID, s.txID, w.hashes...)
			o.added(kindScrape, start)
		} else {
			s := w.take(kindAnnounce, now)
			a := &w.ann
			if job >= 0 {
				w.wl.prefillJob(a, job)
				s.job, s.tries = job, tries+1
			} else {
				w.pick.announce(a)
			}
			a.ConnID, a.TxID = w.connID, s.txID
			s.numWant = a.NumWant
			start := len(o.bufs[kindAnnounce])
			o.bufs[kindAnnounce] = appendAnnounce(o.bufs[kindAnnounce], a)
			o.added(kindAnnounce, start)
		}
	}
	return w.send()
}

// handle checks one reply and frees its slot.
func (w *worker) handle(b []byte, truncated bool, now time.Duration) {
	action, txID, ok := replyHeader(b)
	if !ok {
		w.c.invalid[badShort].Add(1)
		return
	}
	i := int32(txID & (1<<w.slotBits - 1))
	if int(i) >= len(w.slots) || !w.slots[i].busy || w.slots[i].txID != txID {
		w.c.invalid[badStale].Add(1)
		return
	}
	s := w.slots[i]
	w.release(i)
	w.lostRun = 0
	if s.kind != kindConnect {
		w.c.record(now - s.sent)
	}
	var why bad
	switch {
	case truncated:
		why = badTruncated
	case action == actionError:
		w.c.errs[s.kind].Add(1)
		w.noteError(errorText(b))
		if s.kind == kindConnect {
			w.connecting = false
		}
		if s.job >= 0 {
			w.wl.prefillFailed.Add(1)
		}
		return
	case action != uint32(s.kind):
		why = badAction
	case s.kind == kindConnect:
		var id uint64
		if id, why = parseConnect(b); why == badNone {
			w.connID, w.haveID, w.idAt = id, true, now
		}
		w.connecting = false
	case s.kind == kindAnnounce:
		_, why = parseAnnounce(b, w.peerLen, s.numWant)
	case s.kind == kindScrape:
		why = parseScrape(b, int(s.hashes))
	}
	if why != badNone {
		w.c.invalid[why].Add(1)
		if s.job >= 0 {
			w.wl.prefillFailed.Add(1)
		}
		return
	}
	w.c.ok[s.kind].Add(1)
	if s.job >= 0 {
		w.wl.prefillDone.Add(1)
	}
}
