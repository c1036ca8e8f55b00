package httpcompat

import (
	"net/http/httptest"
	"testing"
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
	if got := s.Stats(); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}
