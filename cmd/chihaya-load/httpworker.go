package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
)

// closeWait is the longest an HTTP worker waits for a server to close a
// connection after a reply that said (or, learnt from earlier
// connections, implied) it would; after that the worker closes it itself
// or, if the server only seemed to close after every reply, keeps it.
const closeWait = 50 * time.Millisecond

// dialPause is how long an HTTP worker waits after a failed connect
// before trying again, so that a tracker that is down is not hammered.
const dialPause = 10 * time.Millisecond

// An httpWorker keeps one HTTP/1.1 connection busy with one request at a
// time, opening a new connection whenever the server closes one, a
// request times out, or a reply leaves the connection out of step.
//
// A server that closes after every reply without saying so (opentracker
// does) costs a wasted request per connection if the worker only finds
// out by writing to the closed connection. So once a connection ended
// after exactly one reply, the worker waits, after each reply, for the
// server's close (one read that returns at once, as the close follows the
// reply), then connects for the next request. The server's side thus
// closes first, and the worker's ports never linger in TIME_WAIT. On
// loopback the kernel does most of the work of a connection's handshake
// and teardown on the core of the side that sends, mostly the
// generator's, so against such a server it is the connections, not the
// requests, that bound the generator.
//
// Everything here belongs to the worker's goroutine except the tally's
// counters, which others read.
type httpWorker struct {
	tally
	cfg    *runConfig
	wl     *workload
	pick   *picker
	start  time.Time // the run's start; times are offsets from it
	dialer net.Dialer
	addr   string // the target, for the dialer
	host   string // the Host header
	v6     bool

	conn        net.Conn // nil between connections
	rr          *replyReader
	served      int  // replies read on conn
	opened      bool // a connection was opened before; the next is a reconnect
	expectClose bool // the server closes after every reply without saying so

	req        []byte // the request being sent, built in place
	scratch    [1]byte
	hashes     [][20]byte // of the scrape being sent
	ann        announce
	jobs       prefillJobs
	unexpected int    // count of unexpected errors
	pace       *pacer // -rate's share of this connection, or nil
}

func newHTTPWorker(cfg *runConfig, wl *workload, socket int, start time.Time) *httpWorker {
	return &httpWorker{
		tally: newTally(),
		cfg:   cfg,
		wl:    wl,
		pick:  newPicker(wl, cfg.seed, socket),
		start: start,
		dialer: net.Dialer{
			Timeout:   cfg.timeout,
			KeepAlive: -1, // no probes: the worker never leaves it idle
		},
		addr:   cfg.target.String(),
		host:   cfg.target.String(),
		v6:     cfg.target.Addr().Is6(),
		rr:     newReplyReader(),
		req:    make([]byte, 0, 512+maxScrapeHashes*len("&info_hash=")+maxScrapeHashes*60),
		hashes: make([][20]byte, 0, maxScrapeHashes),
		pace:   newPacer(cfg.rate/float64(cfg.conns), 1),
	}
}

func (w *httpWorker) now() time.Duration { return time.Since(w.start) }

// close closes the connection, if one is open.
func (w *httpWorker) close() error {
	if w.conn == nil {
		return nil
	}
	err := w.conn.Close()
	w.conn = nil
	return err
}

// run sends requests until end, or until stop is closed, and returns once
// the request in flight has been answered or has timed out. In prefill
// mode it returns once every job is answered or failed. Failures are
// counted, not returned; an error means the worker gave up on a
// connection that failed in ways it does not understand.
func (w *httpWorker) run(end time.Duration, stop <-chan struct{}) error {
	defer w.close()
	// Each pass takes at least a system call, and end bounds them all.
	for {
		select {
		case <-stop:
			return nil
		default:
		}
		now := w.now()
		if now >= end {
			return nil
		}
		if !w.pace.take(now) {
			// Sleep for the next token, in steps short enough to see
			// stop and end.
			time.Sleep(min(w.pace.wait(now), scanEvery, end-now))
			continue
		}
		job, tries := int64(-1), uint8(0)
		if w.cfg.prefill > 0 {
			var ok bool
			if job, tries, ok = w.jobs.next(w.wl); !ok {
				return nil
			}
		}
		if err := w.exchange(now, job, tries); err != nil {
			return err
		}
	}
}

// exchange sends one request, a prefill job if job >= 0, and checks its
// reply. The request's time starts before the connect it may need, as a
// client's would.
func (w *httpWorker) exchange(now time.Duration, job int64, tries uint8) error {
	k := kindAnnounce
	if job < 0 && w.pick.scrape() {
		k = kindScrape
		w.hashes = w.pick.scrapeHashes(w.hashes[:0])
		w.req = appendHTTPScrape(w.req[:0], w.host, w.hashes)
	} else {
		a := &w.ann
		if job >= 0 {
			w.wl.prefillJob(a, job)
			tries++
		} else {
			w.pick.announce(a)
		}
		w.req = appendHTTPAnnounce(w.req[:0], w.host, a)
	}
	deadline := w.start.Add(now + w.cfg.timeout)

	// A kept-alive connection the server has just closed fails the first
	// attempt without a reply; the request then goes once more, on a new
	// connection.
	var rep httpReply
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		if w.conn == nil {
			if err := w.dial(deadline); err != nil {
				w.failed(job, tries, badNone)
				if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrDeadlineExceeded) {
					return nil
				}
				return w.unexpectedErr(err)
			}
		}
		if attempt == 0 {
			w.c.sent[k].Add(1)
		}
		reused := w.served > 0
		if err = w.conn.SetDeadline(deadline); err == nil {
			if _, err = w.conn.Write(w.req); err == nil {
				rep, err = w.rr.read(w.conn)
			}
		}
		if err == nil {
			break
		}
		served := w.served
		w.close()
		if attempt == 0 && reused && idleClosed(err) {
			w.c.serverClosed.Add(1)
			w.expectClose = served == 1
			continue
		}
		return w.lostOrInvalid(k, err, job, tries)
	}
	w.served++
	done := w.now()
	w.c.record(done - now)
	w.check(k, rep, job, tries)
	if rep.close || w.expectClose {
		w.awaitClose(done, rep.close)
	}
	return nil
}

// idleClosed reports whether err is how a request fails on a kept-alive
// connection the server closed before it arrived: no reply at all, or a
// reset for writing to a closed socket.
func idleClosed(err error) bool {
	return err == errIdleClosed || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// lostOrInvalid counts a request whose reply did not come or could not be
// read; the connection is closed already.
func (w *httpWorker) lostOrInvalid(k kind, err error, job int64, tries uint8) error {
	why := badNone
	switch err {
	case errShortReply:
		why = badShort
	case errBadHTTP:
		why = badHTTP
	case errReplyTooLong:
		why = badTruncated
	}
	if why != badNone {
		w.c.invalid[why].Add(1)
		w.failed(job, maxTries, why)
		return nil
	}
	w.c.lost[k].Add(1)
	w.failed(job, tries, badNone)
	if errors.Is(err, os.ErrDeadlineExceeded) || idleClosed(err) {
		return nil
	}
	return w.unexpectedErr(err)
}

// failed accounts for a prefill job that got no valid reply: it is tried
// again unless it has had maxTries or got an invalid one (why).
func (w *httpWorker) failed(job int64, tries uint8, why bad) {
	switch {
	case job < 0:
	case why == badNone && tries < maxTries:
		w.jobs.again(job, tries)
	default:
		w.wl.prefillFailed.Add(1)
	}
}

// unexpectedErr remembers an error the worker has no counter for, and
// gives up after many.
func (w *httpWorker) unexpectedErr(err error) error {
	w.readErr = err
	if w.unexpected++; w.unexpected > 1000 {
		return err
	}
	return nil
}

// dial opens a connection. A refused one is counted as refused, any
// other failure as a lost connect; either is followed by a short pause.
func (w *httpWorker) dial(deadline time.Time) error {
	w.dialer.Deadline = deadline
	conn, err := w.dialer.Dial("tcp", w.addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			w.c.refused.Add(1)
		} else {
			w.c.lost[kindConnect].Add(1)
		}
		time.Sleep(dialPause)
		return err
	}
	w.c.sent[kindConnect].Add(1)
	if w.opened {
		w.c.reconnects.Add(1)
	}
	w.opened = true
	w.conn, w.served = conn, 0
	w.rr.reset()
	return nil
}

// awaitClose waits up to closeWait, from now, for the server to close the
// connection after a reply. said is whether the reply announced it.
func (w *httpWorker) awaitClose(now time.Duration, said bool) {
	if w.rr.buffered() > 0 {
		w.close() // more than the reply: out of step
		return
	}
	err := w.conn.SetReadDeadline(w.start.Add(now + closeWait))
	if err == nil {
		_, err = w.conn.Read(w.scratch[:])
	}
	switch {
	case err == io.EOF:
		w.c.serverClosed.Add(1)
		// The server has closed its end; a reset rather than a FIN
		// from this one spares the kernel the rest of the goodbye (an
		// ACK, and a TIME_WAIT socket for the server), which on
		// loopback is work done on the generator's core.
		if tc, ok := w.conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	case errors.Is(err, os.ErrDeadlineExceeded) && !said:
		w.expectClose = false // it keeps connections open after all
		return
	}
	w.close()
}

// check counts a reply to a request of kind k.
func (w *httpWorker) check(k kind, rep httpReply, job int64, tries uint8) {
	why := badStatus
	var failure []byte
	if rep.status == 200 {
		if k == kindScrape {
			failure, why = checkHTTPScrape(rep.body, w.hashes)
		} else {
			failure, why = checkHTTPAnnounce(rep.body, w.v6, w.ann.NumWant)
		}
	}
	switch {
	case why == badStatus:
		w.c.invalid[why].Add(1)
		w.failed(job, maxTries, why)
		w.readErr = fmt.Errorf("HTTP status %d", rep.status)
	case why != badNone:
		w.c.invalid[why].Add(1)
		w.failed(job, maxTries, why)
	case failure != nil:
		w.c.errs[k].Add(1)
		w.noteError(string(failure))
		w.failed(job, maxTries, badNone)
	default:
		w.c.ok[k].Add(1)
		if job >= 0 {
			w.wl.prefillDone.Add(1)
		}
	}
}
