package admin

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/chihaya/chihaya/flush"
)

// A Check is a dependency shown on the status page with its health.
type Check struct {
	// Name labels the row, such as "Redis".
	Name string
	// Probe reports nil when the dependency answers, or why it does not.
	// It must return soon after ctx is done. Nil means the dependency is
	// not configured.
	Probe func(ctx context.Context) error
}

// defaultChecks are the rows shown when Sources.Health is nil. The
// tracker has neither a connection cache nor storage yet, so both say
// "not configured" rather than pretend to be healthy.
var defaultChecks = []Check{{Name: "Redis"}, {Name: "PostgreSQL"}}

// probeTimeout bounds each health check while the page is rendered.
const probeTimeout = 2 * time.Second

//go:embed status.html
var statusHTML string

var statusTmpl = template.Must(template.New("status").Parse(statusHTML))

// statusPage is what status.html renders.
type statusPage struct {
	Version, GoVersion string
	Started, Uptime    string
	Table              bool // whether the peer table's counts are known
	Swarms             int
	PeersV4, PeersV6   int
	Rates              []rateRow
	Chart              chart
	Health             []healthRow
	Work               []workRow // empty when no Source for one is set
}

type rateRow struct {
	Protocol string
	Class    string // the chart's CSS class for this protocol's line
	On       bool
	Now      string // the latest rate, or "–" before two samples
}

// A workRow shows how one background worker keeps up: the connection
// cache's mirror, a flusher, the private rules.
type workRow struct {
	Name   string
	Status string // "ok", "error" or "" when the worker has no health
	Detail string
}

type healthRow struct {
	Name   string
	Status string // "ok", "not configured" or "error"
	Detail string
}

// Chart geometry, in SVG user units: the plot area sits inside a
// margin that holds the axis labels.
const (
	chartW, chartH      = 640, 180
	plotLeft, plotRight = 48, 632
	plotTop, plotBottom = 10, 156
	chartWindow         = historyLen * sampleEvery
	chartTicks          = 2 // y-axis intervals between 0 and the top
)

// A chart is an SVG line chart drawn on the server, one polyline per
// protocol that is on.
type chart struct {
	W, H   int
	Left   int
	Right  int
	Top    int
	Bottom int
	Lines  []chartLine
	YTicks []chartTick
	XTicks []chartTick
}

type chartLine struct {
	Class  string
	Points string // "x,y x,y …"
}

type chartTick struct {
	Pos    float64 // y for YTicks, x for XTicks
	Label  string
	Anchor string // an XTick's text-anchor, so that the end labels fit
}

// status renders the page. Concurrent renders are limited like scrapes:
// each walks the peer table.
func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	select {
	case s.pages <- struct{}{}:
		defer func() { <-s.pages }()
	default:
		http.Error(w, "too many status requests", http.StatusServiceUnavailable)
		return
	}
	var buf bytes.Buffer
	if err := statusTmpl.Execute(&buf, s.statusPage(r.Context(), time.Now())); err != nil {
		s.log.Error("status page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}

// statusPage gathers what the page shows as of now.
func (s *Server) statusPage(ctx context.Context, now time.Time) statusPage {
	p := statusPage{
		Version:   s.src.Version,
		GoVersion: runtime.Version(),
		Started:   s.start.UTC().Format("2006-01-02 15:04:05 UTC"),
		Uptime:    formatUptime(now.Sub(s.start)),
	}
	if p.Version == "" {
		p.Version = "unknown"
	}
	if s.src.Table != nil {
		st := s.src.Table()
		p.Table, p.Swarms, p.PeersV4, p.PeersV6 = true, st.Swarms, st.PeersV4, st.PeersV6
	}
	pts := s.rates.points(nil)
	udpRow := rateRow{Protocol: "UDP", Class: "udp", On: s.src.UDP != nil, Now: "–"}
	httpRow := rateRow{Protocol: "HTTP", Class: "http", On: s.src.HTTP != nil, Now: "–"}
	if n := len(pts); n > 0 {
		udpRow.Now, httpRow.Now = formatRate(pts[n-1].udp), formatRate(pts[n-1].http)
	}
	p.Rates = []rateRow{udpRow, httpRow}
	p.Chart = drawChart(now, pts, udpRow.On, httpRow.On)

	checks := s.src.Health
	if checks == nil {
		checks = defaultChecks
	}
	for _, c := range checks {
		p.Health = append(p.Health, probe(ctx, c))
	}
	p.Work = s.work()
	return p
}

// work reads the background workers' Stats for the page.
func (s *Server) work() []workRow {
	var rows []workRow
	if s.src.Cache != nil {
		st := s.src.Cache()
		r := workRow{Name: "Connection cache", Status: "ok",
			Detail: fmt.Sprintf("lag %s, %d pending", formatDuration(st.Lag), st.Pending)}
		if !st.Healthy {
			r.Status = "error"
		}
		if st.Dropped > 0 {
			r.Detail += fmt.Sprintf(", %d dropped", st.Dropped)
		}
		rows = append(rows, r)
	}
	for _, f := range []struct {
		name, keys string
		stats      func() flush.Stats
	}{
		{"Swarm counts to PostgreSQL", "swarms", s.src.Flush},
		{"Accounting to PostgreSQL", "pairs", s.src.Accounting},
	} {
		if f.stats == nil {
			continue
		}
		st := f.stats()
		rows = append(rows, workRow{Name: f.name,
			Detail: fmt.Sprintf("backlog %s, %d %s pending", formatDuration(st.Backlog), st.PendingKeys, f.keys)})
	}
	if s.src.Rules != nil {
		st := s.src.Rules()
		rows = append(rows, workRow{Name: "Private rules",
			Detail: fmt.Sprintf("%d users, %d torrents, %d clients", st.Users, st.Torrents, st.Clients)})
	}
	return rows
}

// formatDuration writes d to a tenth of a second, or to the millisecond
// below a second: "1.5s", "2m3.4s", "12ms", "0s".
func formatDuration(d time.Duration) string {
	if d < time.Second {
		return max(d, 0).Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func probe(ctx context.Context, c Check) healthRow {
	if c.Probe == nil {
		return healthRow{Name: c.Name, Status: "not configured"}
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if err := c.Probe(ctx); err != nil {
		return healthRow{Name: c.Name, Status: "error", Detail: err.Error()}
	}
	return healthRow{Name: c.Name, Status: "ok"}
}

// drawChart lays out pts, the last chartWindow before now, in the plot
// area. The y axis runs from 0 to a round number above the highest rate.
func drawChart(now time.Time, pts []ratePoint, udpOn, httpOn bool) chart {
	c := chart{W: chartW, H: chartH, Left: plotLeft, Right: plotRight, Top: plotTop, Bottom: plotBottom}
	shown := func(p ratePoint) bool { return now.Sub(p.at) <= chartWindow && !p.at.After(now) }
	top := 0.0
	for _, p := range pts {
		for _, v := range []float64{p.udp, p.http} {
			if shown(p) && !math.IsNaN(v) {
				top = max(top, v)
			}
		}
	}
	top = niceCeil(top)
	x := func(at time.Time) float64 {
		age := now.Sub(at).Seconds() / chartWindow.Seconds()
		return plotRight - age*(plotRight-plotLeft)
	}
	y := func(v float64) float64 { return plotBottom - v/top*(plotBottom-plotTop) }
	line := func(class string, v func(ratePoint) float64) {
		var b strings.Builder
		for _, p := range pts {
			if !shown(p) || math.IsNaN(v(p)) {
				continue
			}
			if b.Len() > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", x(p.at), y(v(p)))
		}
		c.Lines = append(c.Lines, chartLine{Class: class, Points: b.String()})
	}
	if udpOn {
		line("udp", func(p ratePoint) float64 { return p.udp })
	}
	if httpOn {
		line("http", func(p ratePoint) float64 { return p.http })
	}
	for i := range chartTicks + 1 {
		v := top * float64(i) / chartTicks
		c.YTicks = append(c.YTicks, chartTick{Pos: y(v), Label: strconv.FormatFloat(v, 'g', 4, 64)})
	}
	for i, t := range []chartTick{{Label: "−10 min", Anchor: "start"}, {Label: "−5 min", Anchor: "middle"}, {Label: "now", Anchor: "end"}} {
		t.Pos = plotLeft + float64(i)*(plotRight-plotLeft)/2
		c.XTicks = append(c.XTicks, t)
	}
	return c
}

// niceCeil returns the least of 1, 2 or 5 times a power of ten that is
// at least v, and 1 for v <= 1.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func formatRate(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + "/s"
}

// formatUptime writes d as days, hours, minutes and seconds, leaving
// out leading zero units: "3d 4h 0m 12s", "5m 2s".
func formatUptime(d time.Duration) string {
	d = max(d, 0).Truncate(time.Second)
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h, m, sec := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh %dm %ds", days, h, m, sec)
	case h > 0:
		return fmt.Sprintf("%dh %dm %ds", h, m, sec)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}
