package admin

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chihaya/chihaya/httpcompat"
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
		errorsDesc, swarmsDesc, peersDesc, buildInfoDesc,
	} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
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
}
