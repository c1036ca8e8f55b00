package admin

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/private"
	"github.com/chihaya/chihaya/udp"
)

// fakeSources reports fixed table counts and request counters that the
// test moves by hand.
type fakeSources struct {
	udp, http atomic.Uint64
}

func (f *fakeSources) sources(version string) Sources {
	return Sources{
		Version: version,
		UDP:     func() udp.Stats { return udp.Stats{Announces: f.udp.Load()} },
		HTTP: func() httpcompat.Stats {
			return httpcompat.Stats{Announce: httpcompat.Results{OK: f.http.Load()}}
		},
		Table: func() peertable.Stats { return peertable.Stats{Swarms: 1234, PeersV4: 5678, PeersV6: 91011} },
		Start: time.Now().Add(-(26*time.Hour + 3*time.Minute + 4*time.Second)),
		Cache: func() conncache.Stats {
			return conncache.Stats{Pending: 13, Lag: 1520 * time.Millisecond, Healthy: true}
		},
		Flush: func() flush.Stats {
			return flush.Stats{PendingKeys: 24, Backlog: 2*time.Minute + 3400*time.Millisecond}
		},
	}
}

// fillRates adds n samples, sampleEvery apart and ending at now, in
// which UDP runs at udpRate requests per second and HTTP at httpRate.
func fillRates(s *Server, f *fakeSources, now time.Time, n int, udpRate, httpRate uint64) {
	secs := uint64(sampleEvery / time.Second)
	for i := range n {
		f.udp.Add(udpRate * secs)
		f.http.Add(httpRate * secs)
		s.rates.add(now.Add(-time.Duration(n-1-i)*sampleEvery), s.totals())
	}
}

func render(t *testing.T, s *Server) string {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET / = %d, want 200", w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("GET / Content-Type = %q", ct)
	}
	return w.Body.String()
}

func TestStatusPage(t *testing.T) {
	var f fakeSources
	s, err := newServer(Config{Logger: quiet}, f.sources("v1.2.3-test"))
	if err != nil {
		t.Fatal(err)
	}
	fillRates(s, &f, time.Now(), 30, 40, 7)
	body := render(t, s)
	for _, want := range []string{
		`<meta http-equiv="refresh" content="10">`,
		"version v1.2.3-test",
		runtime.Version(),
		"up 1d 2h 3m 4s",
		"<th>Swarms</th><td class=\"n\">1234</td>",
		"<th>Peers, IPv4</th><td class=\"n\">5678</td>",
		"<th>Peers, IPv6</th><td class=\"n\">91011</td>",
		`<span class="swatch udp"></span>UDP</td><td class="n">40.0/s</td>`,
		`<span class="swatch http"></span>HTTP</td><td class="n">7.0/s</td>`,
		`<svg id="rates"`,
		`<polyline class="udp" points="`,
		`<polyline class="http" points="`,
		`<th>Redis</th><td><span class="off">not configured</span>`,
		`<th>PostgreSQL</th><td><span class="off">not configured</span>`,
		`<h2>Background work</h2>`,
		`<th>Connection cache</th><td><span class="ok">ok</span> lag 1.5s, 13 pending</td>`,
		`<th>Swarm counts to PostgreSQL</th><td>backlog 2m3.4s, 24 swarms pending</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script") {
		t.Error("status page has a script; it needs none")
	}
	for _, external := range []string{"http://", "https://", "src=", "<link"} {
		if strings.Contains(body, external) {
			t.Errorf("status page has %q; it needs no external asset", external)
		}
	}
}

func TestStatusPageEscapes(t *testing.T) {
	src := Sources{
		Version: `<script>alert("v")</script>`,
		Health: []Check{
			{Name: "<b>Redis</b>", Probe: func(context.Context) error { return errors.New(`dial "x": <refused>`) }},
			{Name: "PostgreSQL", Probe: func(context.Context) error { return nil }},
			{Name: "Later"},
		},
	}
	s, err := newServer(Config{Logger: quiet}, src)
	if err != nil {
		t.Fatal(err)
	}
	body := render(t, s)
	for _, bad := range []string{"<script>", "<b>Redis", "<refused>"} {
		if strings.Contains(body, bad) {
			t.Errorf("status page has unescaped %q", bad)
		}
	}
	for _, want := range []string{
		"&lt;script&gt;alert(&#34;v&#34;)&lt;/script&gt;",
		`<th>&lt;b&gt;Redis&lt;/b&gt;</th><td><span class="error">error</span> dial &#34;x&#34;: &lt;refused&gt;</td>`,
		`<th>PostgreSQL</th><td><span class="ok">ok</span></td>`,
		`<th>Later</th><td><span class="off">not configured</span></td>`,
		// No table, no frontends: said so, with no lines drawn.
		`<p class="off">not available</p>`,
		`UDP</td><td class="off">off</td>`,
		`HTTP</td><td class="off">off</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(body, "<polyline") {
		t.Error("status page draws a line for a frontend that is off")
	}
}

func TestStatusPageOnlyAtRoot(t *testing.T) {
	s, err := newServer(Config{Logger: quiet}, Sources{})
	if err != nil {
		t.Fatal(err)
	}
	if code := status(s, "/nothing"); code != http.StatusNotFound {
		t.Errorf("GET /nothing = %d, want 404", code)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("POST", "/", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", w.Code)
	}
}

func TestHistoryRates(t *testing.T) {
	var h history
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	h.add(t0, totals{udp: 1000, http: 50, udpOn: true, httpOn: true})
	if pts := h.points(nil); len(pts) != 0 {
		t.Fatalf("after one sample, points = %v, want none", pts)
	}
	h.add(t0.Add(5*time.Second), totals{udp: 1500, http: 60, udpOn: true, httpOn: true})
	h.add(t0.Add(15*time.Second), totals{udp: 1500, http: 160, udpOn: true, httpOn: true})
	h.add(t0.Add(17*time.Second), totals{udp: 9999, http: 9999, udpOn: true, httpOn: true}) // too soon: dropped
	h.add(t0.Add(14*time.Second), totals{udp: 9999, http: 9999, udpOn: true, httpOn: true}) // clock went back: dropped
	h.add(t0.Add(20*time.Second), totals{udp: 10, http: 10009, udpOn: true})                // counter went back; HTTP off
	want := []ratePoint{
		{at: t0.Add(5 * time.Second), udp: 100, http: 2},
		{at: t0.Add(15 * time.Second), udp: 0, http: 10},
		{at: t0.Add(20 * time.Second), udp: math.NaN(), http: math.NaN()},
	}
	got := h.points(nil)
	if len(got) != len(want) {
		t.Fatalf("points = %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].at.Equal(want[i].at) || !same(got[i].udp, want[i].udp) || !same(got[i].http, want[i].http) {
			t.Errorf("point %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func same(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

func TestHistoryRingKeepsLatest(t *testing.T) {
	var h history
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range historyLen + 31 {
		h.add(t0.Add(time.Duration(i)*sampleEvery), totals{udp: uint64(i * i), udpOn: true})
	}
	got := h.points(nil)
	if len(got) != historyLen {
		t.Fatalf("%d points, want %d", len(got), historyLen)
	}
	for j, p := range got {
		i := j + 31 // the point from sample i-1 to sample i
		if want := t0.Add(time.Duration(i) * sampleEvery); !p.at.Equal(want) {
			t.Fatalf("point %d at %v, want %v", j, p.at, want)
		}
		if want := float64(i*i-(i-1)*(i-1)) / sampleEvery.Seconds(); p.udp != want {
			t.Errorf("point %d udp = %v, want %v", j, p.udp, want)
		}
	}
}

func TestDrawChart(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	pts := []ratePoint{
		{at: now.Add(-chartWindow - time.Second), udp: 1e6, http: 1e6}, // too old: left out, and of the scale
		{at: now.Add(-chartWindow), udp: 0, http: math.NaN()},
		{at: now, udp: 37, http: 10},
	}
	c := drawChart(now, pts, true, true)
	if len(c.Lines) != 2 {
		t.Fatalf("%d lines, want 2", len(c.Lines))
	}
	// The top of the scale is 50, the round number above 37.
	if want := "48.0,156.0 632.0,48.0"; c.Lines[0].Points != want {
		t.Errorf("udp line = %q, want %q", c.Lines[0].Points, want)
	}
	if want := "632.0,126.8"; c.Lines[1].Points != want {
		t.Errorf("http line = %q, want %q", c.Lines[1].Points, want)
	}
	if got := c.YTicks[len(c.YTicks)-1].Label; got != "50" {
		t.Errorf("top tick = %q, want 50", got)
	}
}

func TestNiceCeil(t *testing.T) {
	for _, tt := range []struct{ in, want float64 }{
		{0, 1}, {0.3, 1}, {1, 1}, {1.5, 2}, {2, 2}, {3, 5}, {7, 10}, {10, 10}, {11, 20}, {37, 50}, {999, 1000}, {1001, 2000},
	} {
		if got := niceCeil(tt.in); got != tt.want {
			t.Errorf("niceCeil(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestFormatUptime(t *testing.T) {
	for _, tt := range []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0s"}, {1500 * time.Millisecond, "1s"}, {62 * time.Second, "1m 2s"},
		{time.Hour, "1h 0m 0s"}, {49*time.Hour + 5*time.Second, "2d 1h 0m 5s"},
	} {
		if got := formatUptime(tt.in); got != tt.want {
			t.Errorf("formatUptime(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestSamplerStops serves a Server, so that its sampler runs, and checks
// that every goroutine is gone once Serve returns.
func TestSamplerStops(t *testing.T) {
	before := runtime.NumGoroutine()
	var f fakeSources
	s := listen(t, Config{}, f.sources("v"))
	stop := serve(t, s)
	if code, body := get(t, s, "/"); code != http.StatusOK || !strings.Contains(body, "version v") {
		t.Errorf("GET / = %d, %.80q…", code, body)
	}
	stop()
	waitGoroutines(t, before)
}

// TestStatusPageWork checks the background work rows: an unhealthy
// cache with dropped changes, both flushers and the private rules, and
// no section at all when none of them is set.
func TestStatusPageWork(t *testing.T) {
	s, err := newServer(Config{Logger: quiet}, Sources{
		Cache: func() conncache.Stats { return conncache.Stats{Lag: 42 * time.Millisecond, Pending: 7, Dropped: 3} },
		Flush: func() flush.Stats { return flush.Stats{} },
		Accounting: func() flush.Stats {
			return flush.Stats{PendingKeys: 5, Backlog: 9 * time.Second}
		},
		Rules: func() private.RulesStats { return private.RulesStats{Users: 41, Torrents: 42, Clients: 0} },
	})
	if err != nil {
		t.Fatal(err)
	}
	body := render(t, s)
	for _, want := range []string{
		`<th>Connection cache</th><td><span class="error">error</span> lag 42ms, 7 pending, 3 dropped</td>`,
		`<th>Swarm counts to PostgreSQL</th><td>backlog 0s, 0 swarms pending</td>`,
		`<th>Accounting to PostgreSQL</th><td>backlog 9s, 5 pairs pending</td>`,
		`<th>Private rules</th><td>41 users, 42 torrents, 0 clients</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("status page:\n%s", body)
	}

	s, err = newServer(Config{Logger: quiet}, Sources{})
	if err != nil {
		t.Fatal(err)
	}
	if body := render(t, s); strings.Contains(body, "Background work") {
		t.Error("status page has a Background work section with no Source for it")
	}
}

func TestFormatDuration(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "0s"},
		{0, "0s"},
		{1499 * time.Microsecond, "1ms"},
		{999 * time.Millisecond, "999ms"},
		{1520 * time.Millisecond, "1.5s"},
		{2*time.Minute + 3440*time.Millisecond, "2m3.4s"},
	} {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
