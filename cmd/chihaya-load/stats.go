package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// A kind is what a request asks for; counters are kept per kind.
type kind uint8

const (
	kindConnect kind = iota
	kindAnnounce
	kindScrape
	numKinds
)

var kindNames = [numKinds]string{"connect", "announce", "scrape"}

// Latency histogram: log-linear buckets over microseconds. Values below
// 2*histSub have a bucket each; above that every power of two is split
// into histSub buckets, so a quantile is off by at most 1/histSub (3%).
const (
	histSubBits = 5
	histSub     = 1 << histSubBits
	histMaxUs   = 1<<27 - 1 // about 134 s; slower replies land here
	histBuckets = (27 - histSubBits + 1) * histSub
)

// histBucket returns the bucket of a latency of us microseconds.
func histBucket(us uint64) int {
	if us > histMaxUs {
		us = histMaxUs
	}
	if us < 2*histSub {
		return int(us)
	}
	e := bits.Len64(us) - histSubBits - 1
	return (e+1)*histSub + int(us>>e) - histSub
}

// histLow returns the smallest latency, in microseconds, of bucket i.
func histLow(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	return uint64(i%histSub+histSub) << e
}

// counters are one worker's running totals. The worker adds; the
// reporter reads them at any time, so every field is atomic.
type counters struct {
	sent    [numKinds]atomic.Uint64
	ok      [numKinds]atomic.Uint64 // valid replies other than errors
	errs    [numKinds]atomic.Uint64 // error replies (action 3)
	lost    [numKinds]atomic.Uint64 // no reply within the timeout
	invalid [numBad]atomic.Uint64   // replies that break BEP 15
	refused atomic.Uint64           // ICMP port unreachable, or (HTTP) a refused connection
	hist    [histBuckets]atomic.Uint64

	// HTTP only; sent[kindConnect] counts connections opened.
	reconnects   atomic.Uint64 // connections opened after a loader's first
	serverClosed atomic.Uint64 // connections the server closed after a reply
}

// record counts a latency of an answered announce or scrape.
func (c *counters) record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	c.hist[histBucket(uint64(us))].Add(1)
}

// A tally is what one loader (a UDP worker or an HTTP connection) counts.
// The reporter reads c at any time; errTexts and readErr belong to the
// loader's goroutine until it returns.
type tally struct {
	c        *counters
	errTexts map[string]uint64 // error reply texts; see noteError
	readErr  error             // last unexpected error, for the summary
}

// maxErrTexts bounds how many distinct error texts a loader remembers;
// the rest are counted under "(other)".
const maxErrTexts = 32

func newTally() tally {
	return tally{c: new(counters), errTexts: make(map[string]uint64)}
}

// tallied returns t; it makes every type that embeds a tally a loader's
// source of counts.
func (t *tally) tallied() *tally { return t }

// noteError counts an error reply by its text.
func (t *tally) noteError(text string) {
	if _, ok := t.errTexts[text]; !ok && len(t.errTexts) >= maxErrTexts {
		text = "(other)"
	}
	t.errTexts[text]++
}

// A snapshot is a copy of counters at one moment, or a sum or difference
// of such copies.
type snapshot struct {
	at      time.Duration // since the run started
	cpu     time.Duration // CPU time of the whole process
	sent    [numKinds]uint64
	ok      [numKinds]uint64
	errs    [numKinds]uint64
	lost    [numKinds]uint64
	invalid [numBad]uint64
	refused uint64
	hist    [histBuckets]uint64

	reconnects   uint64
	serverClosed uint64
}

// add adds the current values of c to s.
func (s *snapshot) add(c *counters) {
	for k := range numKinds {
		s.sent[k] += c.sent[k].Load()
		s.ok[k] += c.ok[k].Load()
		s.errs[k] += c.errs[k].Load()
		s.lost[k] += c.lost[k].Load()
	}
	for i := range c.invalid {
		s.invalid[i] += c.invalid[i].Load()
	}
	s.refused += c.refused.Load()
	s.reconnects += c.reconnects.Load()
	s.serverClosed += c.serverClosed.Load()
	for i := range c.hist {
		s.hist[i] += c.hist[i].Load()
	}
}

// since returns the counts accumulated between old and s.
func (s *snapshot) since(old *snapshot) *snapshot {
	d := &snapshot{at: s.at - old.at, cpu: s.cpu - old.cpu}
	for k := range numKinds {
		d.sent[k] = s.sent[k] - old.sent[k]
		d.ok[k] = s.ok[k] - old.ok[k]
		d.errs[k] = s.errs[k] - old.errs[k]
		d.lost[k] = s.lost[k] - old.lost[k]
	}
	for i := range s.invalid {
		d.invalid[i] = s.invalid[i] - old.invalid[i]
	}
	d.refused = s.refused - old.refused
	d.reconnects = s.reconnects - old.reconnects
	d.serverClosed = s.serverClosed - old.serverClosed
	for i := range s.hist {
		d.hist[i] = s.hist[i] - old.hist[i]
	}
	return d
}

// answered is the number of valid non-error announce and scrape replies.
func (s *snapshot) answered() uint64 {
	return s.ok[kindAnnounce] + s.ok[kindScrape]
}

// errors is the number of error replies, connects included.
func (s *snapshot) errors() uint64 {
	var n uint64
	for _, v := range s.errs {
		n += v
	}
	return n
}

// lostTotal is the number of requests of any kind that timed out.
func (s *snapshot) lostTotal() uint64 {
	var n uint64
	for _, v := range s.lost {
		n += v
	}
	return n
}

// invalidTotal is the number of replies that broke BEP 15.
func (s *snapshot) invalidTotal() uint64 {
	var n uint64
	for _, v := range s.invalid {
		n += v
	}
	return n
}

// rate returns n per second over the snapshot's span.
func (s *snapshot) rate(n uint64) float64 {
	if s.at <= 0 {
		return 0
	}
	return float64(n) / s.at.Seconds()
}

// cores returns the CPU the generator used over the snapshot's span, in
// cores: near 1 per core it may use means the generator, not the tracker,
// set the pace.
func (s *snapshot) cores() float64 {
	if s.at <= 0 {
		return 0
	}
	return s.cpu.Seconds() / s.at.Seconds()
}

// quantile returns the latency, in microseconds, below which a fraction
// q of the recorded latencies fall: the middle of the bucket that holds
// it. It returns 0 when nothing was recorded.
func (s *snapshot) quantile(q float64) uint64 {
	var total uint64
	for _, v := range s.hist {
		total += v
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total-1)) + 1
	var seen uint64
	for i, v := range s.hist {
		seen += v
		if seen >= rank {
			lo, hi := histLow(i), histLow(i+1)
			return lo + (hi-lo)/2
		}
	}
	return histMaxUs
}

// max returns the lowest latency of the highest non-empty bucket.
func (s *snapshot) max() uint64 {
	for i := len(s.hist) - 1; i >= 0; i-- {
		if s.hist[i] != 0 {
			return histLow(i)
		}
	}
	return 0
}
