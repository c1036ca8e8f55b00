// Package admin serves the tracker's operations endpoints on a listener of
// their own, apart from the frontends: a status page for people at /,
// Prometheus metrics at /metrics, liveness at /healthz, readiness at
// /readyz and, when Config.Pprof is on, the runtime profiles at
// /debug/pprof/. It is meant for loopback or a
// private network: by default it listens on 127.0.0.1:6880, and nothing
// it serves is for BitTorrent clients.
//
// Metrics are read, not counted: a Server is given Sources, functions that
// return the frontends', the peer table's and the background workers' own
// counters (udp.Stats, httpcompat.Stats, peertable.Stats,
// conncache.Stats, flush.Stats, private.RulesStats), and calls them once
// per scrape of /metrics from a prometheus.Collector. So a request is
// counted once, by the frontend that answered it, and the hot path gains
// no label lookups and no client-library histogram. Request latency is
// the one thing measured per request: the frontend records it in an
// internal/latency.Histogram (two clock reads and two atomic adds), and
// the collector turns the snapshot into a Prometheus histogram at scrape
// time. The peer table's counts walk the whole table; a scrape every few
// seconds is fine, and concurrent scrapes are limited. Metrics go to a
// registry of the Server's own, never to prometheus.DefaultRegisterer, so
// that two Servers (as in tests) never collide.
//
// The Sources are plain functions rather than the servers themselves so
// that admin holds no frontend and cannot start or stop one; it imports
// udp, httpcompat, peertable, conncache and flush only for their Stats
// types, and none of them imports admin, so there is no cycle. Only
// cmd/chihaya wires a Server to the running parts.
//
// /healthz answers 200 whenever the Server answers at all: the process is
// alive. /readyz answers 200 only while the Server is serving and
// Sources.Ready reports true (the daemon says so once every frontend is
// serving, and stops saying so as it begins to stop); otherwise 503, so a
// load balancer takes the process out before its frontends close.
//
// The status page is HTML rendered on the server from status.html, with
// no script and nothing fetched from elsewhere: version and uptime, the
// peer table's counts, the health of each dependency in Sources.Health,
// and requests per second by protocol over the last ten minutes as an
// SVG line chart. It reloads itself every ten seconds. The chart's
// history is the one piece of state admin keeps: while Serve runs, a
// sampler reads the UDP and HTTP request counters every five seconds and
// keeps the rates between readings in a fixed ring of 120 points, so
// the page shows nothing from before Serve began.
//
// A Server is safe for concurrent use. Serve owns every goroutine it
// starts and returns only after they are done.
package admin
