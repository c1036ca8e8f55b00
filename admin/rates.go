package admin

import (
	"context"
	"math"
	"sync"
	"time"
)

// The status page charts requests per second over the last
// historyLen*sampleEvery: ten minutes.
const (
	sampleEvery = 5 * time.Second
	historyLen  = 120
)

// totals are the request counters the chart follows, as read at one
// moment. A protocol whose frontend is off has on false.
type totals struct {
	udp, http     uint64
	udpOn, httpOn bool
}

// A ratePoint is the request rate per second of each protocol over the
// sampleEvery before at. NaN means "no value": the frontend is off, or
// its counter went backwards.
type ratePoint struct {
	at        time.Time
	udp, http float64
}

// A history is a fixed ring of the latest rate points. It is safe for
// concurrent use: the sampler adds, status pages read.
type history struct {
	mu     sync.Mutex // guards the fields below
	prev   totals
	prevAt time.Time // zero until the first sample
	pts    [historyLen]ratePoint
	next   int // where the next point goes
	n      int // points held, at most historyLen
}

// add records the counters read at now and, from the second call on,
// the rates since the previous reading. A reading less than half of
// sampleEvery after the previous one (or before it) is dropped: a rate
// over a few milliseconds says little.
func (h *history) add(now time.Time, cur totals) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.prevAt.IsZero() {
		dt := now.Sub(h.prevAt)
		if dt < sampleEvery/2 {
			return
		}
		h.pts[h.next] = ratePoint{
			at:   now,
			udp:  rate(h.prev.udp, cur.udp, cur.udpOn, dt.Seconds()),
			http: rate(h.prev.http, cur.http, cur.httpOn, dt.Seconds()),
		}
		h.next = (h.next + 1) % historyLen
		h.n = min(h.n+1, historyLen)
	}
	h.prev, h.prevAt = cur, now
}

func rate(prev, cur uint64, on bool, seconds float64) float64 {
	if !on || cur < prev {
		return math.NaN()
	}
	return float64(cur-prev) / seconds
}

// points appends the held points to dst, oldest first, and returns it.
func (h *history) points(dst []ratePoint) []ratePoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	start := (h.next - h.n + historyLen) % historyLen
	for i := range h.n {
		dst = append(dst, h.pts[(start+i)%historyLen])
	}
	return dst
}

// totals reads the request counters from the Sources: every UDP request
// that proved itself and every HTTP request answered, however answered.
func (s *Server) totals() totals {
	var t totals
	if s.src.UDP != nil {
		st := s.src.UDP()
		t.udp, t.udpOn = st.Connects+st.Announces+st.Scrapes, true
	}
	if s.src.HTTP != nil {
		st := s.src.HTTP()
		t.http = st.Announce.OK + st.Announce.Failures +
			st.Scrape.OK + st.Scrape.Failures +
			st.FullScrape.OK + st.FullScrape.Failures + st.NotFound
		t.httpOn = true
	}
	return t
}

// sample reads the counters every sampleEvery until ctx is done. Serve
// runs it.
func (s *Server) sample(ctx context.Context) {
	s.rates.add(time.Now(), s.totals())
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.rates.add(now, s.totals())
		}
	}
}
