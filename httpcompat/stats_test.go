package httpcompat

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chihaya/chihaya/internal/latency"
)

// TestStats checks that each request lands in exactly one counter: by
// action and by whether it was answered or refused.
func TestStats(t *testing.T) {
	s, _, _ := newFullServer(t, Config{})
	ih := hashOf("stats")
	requests := []struct{ method, target string }{
		{"GET", "/announce?" + announceQuery(ih, 6881, "0", "")},    // ok
		{"GET", "/pk/announce?" + announceQuery(ih, 6882, "1", "")}, // ok
		{"GET", "/announce?info_hash=short"},                        // failure
		{"GET", "/scrape?info_hash=" + escape(ih[:])},               // ok
		{"GET", "/scrape?info_hash=bad"},                            // failure
		{"GET", "/scrape"},                                          // full, ok
		{"GET", "/scrape"},                                          // full, rate limited
		{"GET", "/nope"},                                            // not found
		{"POST", "/announce"},                                       // not allowed
	}
	for _, rq := range requests {
		r := httptest.NewRequest(rq.method, rq.target, nil)
		r.RemoteAddr = "192.0.2.1:1234"
		s.ServeHTTP(httptest.NewRecorder(), r)
	}
	want := Stats{
		Announce:   Results{OK: 2, Failures: 1},
		Scrape:     Results{OK: 1, Failures: 1},
		FullScrape: Results{OK: 1, Failures: 1},
		NotFound:   2,
	}
	got := s.Stats()
	// Every request counted by action is also timed, once.
	for _, r := range []*Results{&got.Announce, &got.Scrape, &got.FullScrape} {
		if n := r.Latency.Count(); n != r.OK+r.Failures {
			t.Errorf("Latency.Count() = %d for %d requests", n, r.OK+r.Failures)
		}
		r.Latency = latency.Snapshot{}
	}
	if got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

// slowWriter takes delay to write each reply, like a client that reads
// slowly.
type slowWriter struct {
	*httptest.ResponseRecorder
	delay time.Duration
}

func (w slowWriter) Write(b []byte) (int, error) {
	time.Sleep(w.delay)
	return w.ResponseRecorder.Write(b)
}

// TestLatency checks that a request's time is counted under its action
// and includes writing the reply, and that requests for other paths are
// not timed.
func TestLatency(t *testing.T) {
	s, _, _ := newFullServer(t, Config{})
	ih := hashOf("latency")
	const delay = 4 * time.Millisecond
	for _, target := range []string{
		"/announce?" + announceQuery(ih, 6881, "0", ""),
		"/nope",
	} {
		r := httptest.NewRequest("GET", target, nil)
		r.RemoteAddr = "192.0.2.1:1234"
		s.ServeHTTP(slowWriter{httptest.NewRecorder(), delay}, r)
	}
	st := s.Stats()
	if n := st.Scrape.Latency.Count() + st.FullScrape.Latency.Count(); n != 0 {
		t.Errorf("%d scrapes timed, want 0", n)
	}
	l := st.Announce.Latency
	if n := l.Count(); n != 1 {
		t.Fatalf("Announce.Latency.Count() = %d, want 1", n)
	}
	if l.Sum < delay {
		t.Errorf("Announce.Latency.Sum = %v, want at least the %v the reply took to write", l.Sum, delay)
	}
	for i := range latency.Buckets {
		if latency.UpperBound(i) < delay && l.Counts[i] != 0 {
			t.Errorf("Announce.Latency.Counts[%d] (up to %v) = %d, want 0: the reply took %v to write",
				i, latency.UpperBound(i), l.Counts[i], delay)
		}
	}
}
