package admin

import (
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/httpcompat"
	"github.com/chihaya/chihaya/internal/latency"
)

// Metric names. Counters are totals since the process started (each
// frontend counts from its Listen); gauges are read at scrape time.
//
//	chihaya_requests_total{protocol,action,result}   counter
//	    udp:  action connect, announce, scrape; result "" (each proven
//	          request once, answered or refused; refusals are in
//	          chihaya_udp_error_replies_total)
//	    http: action announce, scrape, full_scrape; result ok, failure
//	          action "", result not_found (404 and 405)
//	chihaya_udp_error_replies_total                   counter
//	chihaya_udp_bad_connection_ids_total              counter
//	chihaya_udp_malformed_requests_total              counter
//	chihaya_errors_total{protocol,kind}               counter
//	    udp: kind internal, read, write; http: kind internal
//	chihaya_swarms                                    gauge
//	chihaya_peers{family}                             gauge, ipv4 or ipv6
//	chihaya_build_info{version,go_version}            gauge, always 1
//	chihaya_request_duration_seconds{protocol,action} histogram
//	    http: action announce, scrape, full_scrape; udp: as UDPLatency
//	          reports them. Buckets double from 50µs to 1.6384s.
//
// With Sources.Cache, the connection cache's mirror between processes:
//
//	chihaya_cache_published_total                     counter
//	chihaya_cache_applied_total                       counter
//	chihaya_cache_pending                             gauge
//	chihaya_cache_dropped_total                       counter
//	chihaya_cache_errors_total                        counter
//	chihaya_cache_reloads_total                       counter
//	chihaya_cache_republishes_total                   counter
//	chihaya_cache_lag_seconds                         gauge
//	chihaya_cache_healthy                             gauge, 0 or 1
//
// With Sources.Flush (kind "swarms") or Sources.Accounting (kind
// "accounting"), the writes to PostgreSQL:
//
//	chihaya_flush_flushes_total{kind}                 counter
//	chihaya_flush_rows_total{kind}                    counter
//	chihaya_flush_errors_total{kind}                  counter
//	chihaya_flush_pending_keys{kind}                  gauge
//	chihaya_flush_backlog_seconds{kind}               gauge
//	chihaya_flush_last_success_timestamp_seconds{kind} gauge, 0 before one
//
// With Sources.Rules, private mode's users, torrents and clients:
//
//	chihaya_private_users                             gauge
//	chihaya_private_torrents                          gauge
//	chihaya_private_clients                           gauge
//	chihaya_private_reloads_total                     counter
//	chihaya_private_notifications_total               counter
//	chihaya_private_errors_total                      counter
//	chihaya_private_last_reload_timestamp_seconds     gauge, 0 before one
//
// plus the client library's process_* and go_* collectors.
var (
	requestsDesc = prometheus.NewDesc("chihaya_requests_total",
		"Requests by frontend protocol, action and result.",
		[]string{"protocol", "action", "result"}, nil)
	udpErrorRepliesDesc = prometheus.NewDesc("chihaya_udp_error_replies_total",
		"BEP 15 error replies sent.", nil, nil)
	udpBadConnIDsDesc = prometheus.NewDesc("chihaya_udp_bad_connection_ids_total",
		"UDP requests dropped because their connection ID was invalid or expired.", nil, nil)
	udpMalformedDesc = prometheus.NewDesc("chihaya_udp_malformed_requests_total",
		"UDP requests that could not be parsed.", nil, nil)
	errorsDesc = prometheus.NewDesc("chihaya_errors_total",
		"Failures on the tracker's side: internal errors answered as such, failed socket reads and writes.",
		[]string{"protocol", "kind"}, nil)
	swarmsDesc = prometheus.NewDesc("chihaya_swarms",
		"Swarms (info hashes with at least one peer) in the peer table.", nil, nil)
	peersDesc = prometheus.NewDesc("chihaya_peers",
		"Peers in the peer table by address family.", []string{"family"}, nil)
	buildInfoDesc = prometheus.NewDesc("chihaya_build_info",
		"Always 1; the labels say which build is running.", []string{"version", "go_version"}, nil)
	durationDesc = prometheus.NewDesc("chihaya_request_duration_seconds",
		"Time to handle a request, from its start until the reply was written.",
		[]string{"protocol", "action"}, nil)

	cachePublishedDesc = prometheus.NewDesc("chihaya_cache_published_total",
		"Connection cache changes stored and notified to other processes.", nil, nil)
	cacheAppliedDesc = prometheus.NewDesc("chihaya_cache_applied_total",
		"Other processes' connection cache changes applied here.", nil, nil)
	cachePendingDesc = prometheus.NewDesc("chihaya_cache_pending",
		"Connection cache changes waiting for the next batch.", nil, nil)
	cacheDroppedDesc = prometheus.NewDesc("chihaya_cache_dropped_total",
		"Connection cache changes dropped because too many were pending.", nil, nil)
	cacheErrorsDesc = prometheus.NewDesc("chihaya_cache_errors_total",
		"Failed operations on the connection cache's store.", nil, nil)
	cacheReloadsDesc = prometheus.NewDesc("chihaya_cache_reloads_total",
		"Full reloads of other processes' state from the connection cache.", nil, nil)
	cacheRepublishesDesc = prometheus.NewDesc("chihaya_cache_republishes_total",
		"Full republishes of this process's state to the connection cache.", nil, nil)
	cacheLagDesc = prometheus.NewDesc("chihaya_cache_lag_seconds",
		"Time since the connection cache's store last took a batch.", nil, nil)
	cacheHealthyDesc = prometheus.NewDesc("chihaya_cache_healthy",
		"1 while no operation on the connection cache's store is failing, else 0.", nil, nil)

	flushesDesc = prometheus.NewDesc("chihaya_flush_flushes_total",
		"Batches committed to PostgreSQL.", []string{"kind"}, nil)
	flushRowsDesc = prometheus.NewDesc("chihaya_flush_rows_total",
		"Rows sent in batches committed to PostgreSQL.", []string{"kind"}, nil)
	flushErrorsDesc = prometheus.NewDesc("chihaya_flush_errors_total",
		"Failed attempts to commit a batch to PostgreSQL.", []string{"kind"}, nil)
	flushPendingDesc = prometheus.NewDesc("chihaya_flush_pending_keys",
		"Keys not yet committed to PostgreSQL: swarms, or (user, torrent) pairs.", []string{"kind"}, nil)
	flushBacklogDesc = prometheus.NewDesc("chihaya_flush_backlog_seconds",
		"Age of the oldest data not yet committed to PostgreSQL; 0 when everything is.", []string{"kind"}, nil)
	flushLastSuccessDesc = prometheus.NewDesc("chihaya_flush_last_success_timestamp_seconds",
		"Unix time of the last batch committed to PostgreSQL; 0 before the first.", []string{"kind"}, nil)

	privateUsersDesc = prometheus.NewDesc("chihaya_private_users",
		"Users held by private mode's rules, enabled or not.", nil, nil)
	privateTorrentsDesc = prometheus.NewDesc("chihaya_private_torrents",
		"Torrents held by private mode's rules, allowed or not.", nil, nil)
	privateClientsDesc = prometheus.NewDesc("chihaya_private_clients",
		"Allowed peer_id prefixes; 0 allows every client.", nil, nil)
	privateReloadsDesc = prometheus.NewDesc("chihaya_private_reloads_total",
		"Full reloads of private mode's rules that succeeded.", nil, nil)
	privateNotificationsDesc = prometheus.NewDesc("chihaya_private_notifications_total",
		"Change notifications received for private mode's rules.", nil, nil)
	privateErrorsDesc = prometheus.NewDesc("chihaya_private_errors_total",
		"Failed queries, connections and malformed rows while loading private mode's rules.", nil, nil)
	privateLastReloadDesc = prometheus.NewDesc("chihaya_private_last_reload_timestamp_seconds",
		"Unix time of the last full reload of private mode's rules that succeeded; 0 before the first.", nil, nil)
)

// A collector reads Sources when /metrics is scraped. It keeps no state:
// the counters it reports are the frontends' own.
type collector struct {
	src Sources
}

func newCollector(src Sources) *collector { return &collector{src: src} }

// Describe sends every Desc, whether or not its source is set, so that the
// registry checks them all once.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		requestsDesc, udpErrorRepliesDesc, udpBadConnIDsDesc, udpMalformedDesc,
		errorsDesc, swarmsDesc, peersDesc, buildInfoDesc, durationDesc,
		cachePublishedDesc, cacheAppliedDesc, cachePendingDesc, cacheDroppedDesc,
		cacheErrorsDesc, cacheReloadsDesc, cacheRepublishesDesc, cacheLagDesc,
		cacheHealthyDesc,
		flushesDesc, flushRowsDesc, flushErrorsDesc, flushPendingDesc,
		flushBacklogDesc, flushLastSuccessDesc,
		privateUsersDesc, privateTorrentsDesc, privateClientsDesc,
		privateReloadsDesc, privateNotificationsDesc, privateErrorsDesc,
		privateLastReloadDesc,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gaugeF := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) { gaugeF(d, float64(v), labels...) }
	gauge(buildInfoDesc, 1, c.src.Version, runtime.Version())
	if c.src.UDP != nil {
		st := c.src.UDP()
		counter(requestsDesc, st.Connects, "udp", "connect", "")
		counter(requestsDesc, st.Announces, "udp", "announce", "")
		counter(requestsDesc, st.Scrapes, "udp", "scrape", "")
		counter(udpErrorRepliesDesc, st.ErrorReplies)
		counter(udpBadConnIDsDesc, st.BadConnIDs)
		counter(udpMalformedDesc, st.Malformed)
		counter(errorsDesc, st.InternalErrors, "udp", "internal")
		counter(errorsDesc, st.ReadErrors, "udp", "read")
		counter(errorsDesc, st.WriteErrors, "udp", "write")
	}
	if c.src.UDPLatency != nil {
		for action, l := range c.src.UDPLatency() {
			ch <- histogram(durationDesc, l, "udp", action)
		}
	}
	if c.src.HTTP != nil {
		st := c.src.HTTP()
		for _, a := range []struct {
			name string
			r    httpcompat.Results
		}{
			{"announce", st.Announce},
			{"scrape", st.Scrape},
			{"full_scrape", st.FullScrape},
		} {
			counter(requestsDesc, a.r.OK, "http", a.name, "ok")
			counter(requestsDesc, a.r.Failures, "http", a.name, "failure")
			ch <- histogram(durationDesc, a.r.Latency, "http", a.name)
		}
		counter(requestsDesc, st.NotFound, "http", "", "not_found")
		counter(errorsDesc, st.InternalErrors, "http", "internal")
	}
	if c.src.Table != nil {
		st := c.src.Table()
		gauge(swarmsDesc, st.Swarms)
		gauge(peersDesc, st.PeersV4, "ipv4")
		gauge(peersDesc, st.PeersV6, "ipv6")
	}
	if c.src.Cache != nil {
		st := c.src.Cache()
		counter(cachePublishedDesc, st.Published)
		counter(cacheAppliedDesc, st.Applied)
		gauge(cachePendingDesc, st.Pending)
		counter(cacheDroppedDesc, st.Dropped)
		counter(cacheErrorsDesc, st.Errors)
		counter(cacheReloadsDesc, st.Reloads)
		counter(cacheRepublishesDesc, st.Republishes)
		gaugeF(cacheLagDesc, st.Lag.Seconds())
		gauge(cacheHealthyDesc, boolInt(st.Healthy))
	}
	for _, f := range []struct {
		kind  string
		stats func() flush.Stats
	}{
		{"swarms", c.src.Flush},
		{"accounting", c.src.Accounting},
	} {
		if f.stats == nil {
			continue
		}
		st := f.stats()
		counter(flushesDesc, st.Flushes, f.kind)
		counter(flushRowsDesc, st.Rows, f.kind)
		counter(flushErrorsDesc, st.Errors, f.kind)
		gauge(flushPendingDesc, st.PendingKeys, f.kind)
		gaugeF(flushBacklogDesc, st.Backlog.Seconds(), f.kind)
		gaugeF(flushLastSuccessDesc, unixSeconds(st.LastSuccess), f.kind)
	}
	if c.src.Rules != nil {
		st := c.src.Rules()
		gauge(privateUsersDesc, st.Users)
		gauge(privateTorrentsDesc, st.Torrents)
		gauge(privateClientsDesc, st.Clients)
		counter(privateReloadsDesc, st.Reloads)
		counter(privateNotificationsDesc, st.Notifications)
		counter(privateErrorsDesc, st.Errors)
		gaugeF(privateLastReloadDesc, unixSeconds(st.LastReload))
	}
}

// histogram converts s to a Prometheus histogram: cumulative counts by
// upper bound in seconds, the last bucket being +Inf.
func histogram(d *prometheus.Desc, s latency.Snapshot, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, latency.Buckets)
	var n uint64
	for i := range latency.Buckets {
		n += s.Counts[i]
		// Not Duration.Seconds, which adds whole and fractional
		// seconds and so writes 1.6384s as 1.6383999999999999.
		buckets[float64(latency.UpperBound(i))/1e9] = n
	}
	n += s.Counts[latency.Buckets]
	return prometheus.MustNewConstHistogram(d, n, s.Sum.Seconds(), buckets, labels...)
}

// unixSeconds returns t as seconds since the Unix epoch, and 0 for the
// zero Time, Prometheus's way of saying "never".
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
