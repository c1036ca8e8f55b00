package httpcompat

import (
	"bytes"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/internal/latency"
)

// Stats are a Server's request counters since it was made, for logs and
// metrics. Every request is counted once, in exactly one field.
type Stats struct {
	// Announce, Scrape and FullScrape count requests of each action by
	// how they were answered. A scrape that names no info_hash is a full
	// scrape, answered or refused.
	Announce   Results
	Scrape     Results
	FullScrape Results
	// NotFound counts requests for a path that is not ours (404) or with
	// a method other than GET and HEAD (405).
	NotFound uint64
	// InternalErrors counts announces and full scrapes that failed inside
	// the tracker and were refused with "internal error"; they are also
	// in their action's Failures.
	InternalErrors uint64
	// RateLimited counts announces refused by Config.AnnounceRate; they
	// are also in Announce.Failures.
	RateLimited uint64
}

// Results split one action's requests by their answer.
type Results struct {
	// OK counts replies with data; Failures counts bencoded refusals (a
	// "failure reason", such as a bad query or a rate limit).
	OK       uint64
	Failures uint64
	// Latency holds how long each of those requests took, from the
	// moment its first bytes were read until its reply was handed to the
	// connection's output buffer (or, through ServeHTTP, from the call
	// until the reply was written to the http.ResponseWriter).
	Latency latency.Snapshot
}

// counters are the live Stats. They sit in their own cache lines, away
// from the Server's read-mostly fields, since every request writes one.
type counters struct {
	_           [64]byte
	requests    [nActions][nResults]atomic.Uint64
	latency     [nActions]latency.Histogram
	notFound    atomic.Uint64
	internal    atomic.Uint64
	rateLimited atomic.Uint64
	_           [64]byte
}

// action and result index counters.requests.
type action uint8

const (
	actionAnnounce action = iota
	actionScrape
	actionFullScrape
	nActions
)

type result uint8

const (
	resultOK result = iota
	resultFailure
	nResults
)

// failurePrefix starts every refusal appendFailure writes.
var failurePrefix = []byte("d14:failure reason")

// count records one reply of a to out; a nil out is a reply written by
// its handler, which counted nothing as a failure.
func (c *counters) count(a action, out []byte) {
	r := resultOK
	if bytes.HasPrefix(out, failurePrefix) {
		r = resultFailure
	}
	c.requests[a][r].Add(1)
}

// observe records how long one request of a took.
func (c *counters) observe(a action, d time.Duration) { c.latency[a].Observe(d) }

// Stats returns the counters. Each is read atomically, but not all at
// one instant: under load they may disagree by the requests in flight.
func (s *Server) Stats() Stats {
	c := s.stats
	load := func(a action) Results {
		return Results{
			OK:       c.requests[a][resultOK].Load(),
			Failures: c.requests[a][resultFailure].Load(),
			Latency:  c.latency[a].Snapshot(),
		}
	}
	return Stats{
		Announce:       load(actionAnnounce),
		Scrape:         load(actionScrape),
		FullScrape:     load(actionFullScrape),
		NotFound:       c.notFound.Load(),
		InternalErrors: c.internal.Load(),
		RateLimited:    c.rateLimited.Load(),
	}
}
