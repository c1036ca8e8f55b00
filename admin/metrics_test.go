package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/internal/latency"
	"github.com/chihaya/chihaya/private"
)

// scrape returns the body of /metrics from s's handler.
func scrape(t *testing.T, s *Server) string {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("/metrics = %d %q, want 200", w.Code, w.Body)
	}
	return w.Body.String()
}

// snapshot records ds into a fresh Histogram and returns its Snapshot.
func snapshot(ds ...time.Duration) latency.Snapshot {
	var h latency.Histogram
	for _, d := range ds {
		h.Observe(d)
	}
	return h.Snapshot()
}

// TestMetricsFromStats checks that the connection cache's, the flushers'
// and the rules' Stats and both protocols' latency histograms reach
// /metrics with the values the Sources report.
func TestMetricsFromStats(t *testing.T) {
	lastFlush := time.Unix(1_700_000_000, 500_000_000)
	s, err := newServer(Config{Logger: quiet}, Sources{
		HTTP: func() httpcompat.Stats {
			return httpcompat.Stats{Announce: httpcompat.Results{
				OK: 3,
				// 40µs and 50µs in the first bucket, 70µs in (50µs,
				// 100µs], 3s above every bound.
				Latency: snapshot(40*time.Microsecond, 50*time.Microsecond, 70*time.Microsecond, 3*time.Second),
			}}
		},
		UDPLatency: func() map[string]latency.Snapshot {
			return map[string]latency.Snapshot{"connect": snapshot(time.Millisecond)}
		},
		Cache: func() conncache.Stats {
			return conncache.Stats{
				Published: 11, Applied: 12, Pending: 13, Dropped: 14, Errors: 15,
				Reloads: 16, Republishes: 17, Lag: 1500 * time.Millisecond, Healthy: true,
			}
		},
		Flush: func() flush.Stats {
			return flush.Stats{Flushes: 21, Rows: 22, Errors: 23, PendingKeys: 24, Backlog: 2 * time.Second, LastSuccess: lastFlush}
		},
		Accounting: func() flush.Stats { return flush.Stats{Flushes: 31, Rows: 32, Errors: 33, PendingKeys: 34} },
		Rules: func() private.RulesStats {
			return private.RulesStats{Users: 41, Torrents: 42, Clients: 43, Reloads: 44, Notifications: 45, Errors: 46}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	body := scrape(t, s)
	for _, want := range []string{
		`chihaya_request_duration_seconds_bucket{action="announce",protocol="http",le="5e-05"} 2`,
		`chihaya_request_duration_seconds_bucket{action="announce",protocol="http",le="0.0001"} 3`,
		`chihaya_request_duration_seconds_bucket{action="announce",protocol="http",le="1.6384"} 3`,
		`chihaya_request_duration_seconds_bucket{action="announce",protocol="http",le="+Inf"} 4`,
		`chihaya_request_duration_seconds_sum{action="announce",protocol="http"} 3.00016`,
		`chihaya_request_duration_seconds_count{action="announce",protocol="http"} 4`,
		`chihaya_request_duration_seconds_count{action="scrape",protocol="http"} 0`,
		`chihaya_request_duration_seconds_count{action="full_scrape",protocol="http"} 0`,
		`chihaya_request_duration_seconds_bucket{action="connect",protocol="udp",le="0.0008"} 0`,
		`chihaya_request_duration_seconds_bucket{action="connect",protocol="udp",le="0.0016"} 1`,
		`chihaya_request_duration_seconds_count{action="connect",protocol="udp"} 1`,

		"\nchihaya_cache_published_total 11\n",
		"\nchihaya_cache_applied_total 12\n",
		"\nchihaya_cache_pending 13\n",
		"\nchihaya_cache_dropped_total 14\n",
		"\nchihaya_cache_errors_total 15\n",
		"\nchihaya_cache_reloads_total 16\n",
		"\nchihaya_cache_republishes_total 17\n",
		"\nchihaya_cache_lag_seconds 1.5\n",
		"\nchihaya_cache_healthy 1\n",

		`chihaya_flush_flushes_total{kind="swarms"} 21`,
		`chihaya_flush_rows_total{kind="swarms"} 22`,
		`chihaya_flush_errors_total{kind="swarms"} 23`,
		`chihaya_flush_pending_keys{kind="swarms"} 24`,
		`chihaya_flush_backlog_seconds{kind="swarms"} 2`,
		`chihaya_flush_last_success_timestamp_seconds{kind="swarms"} 1.7000000005e+09`,
		`chihaya_flush_flushes_total{kind="accounting"} 31`,
		`chihaya_flush_rows_total{kind="accounting"} 32`,
		`chihaya_flush_errors_total{kind="accounting"} 33`,
		`chihaya_flush_pending_keys{kind="accounting"} 34`,
		`chihaya_flush_backlog_seconds{kind="accounting"} 0`,
		`chihaya_flush_last_success_timestamp_seconds{kind="accounting"} 0`,

		"\nchihaya_private_users 41\n",
		"\nchihaya_private_torrents 42\n",
		"\nchihaya_private_clients 43\n",
		"\nchihaya_private_reloads_total 44\n",
		"\nchihaya_private_notifications_total 45\n",
		"\nchihaya_private_errors_total 46\n",
		"\nchihaya_private_last_reload_timestamp_seconds 0\n",
		"# TYPE chihaya_request_duration_seconds histogram",
		"# TYPE chihaya_cache_lag_seconds gauge",
		"# TYPE chihaya_flush_rows_total counter",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// TestMetricsUnhealthyCache checks chihaya_cache_healthy's 0.
func TestMetricsUnhealthyCache(t *testing.T) {
	s, err := newServer(Config{Logger: quiet}, Sources{
		Cache: func() conncache.Stats { return conncache.Stats{Healthy: false} },
	})
	if err != nil {
		t.Fatal(err)
	}
	if body := scrape(t, s); !strings.Contains(body, "\nchihaya_cache_healthy 0\n") {
		t.Errorf("/metrics lacks chihaya_cache_healthy 0:\n%s", body)
	}
}
