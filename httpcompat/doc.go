// Package httpcompat serves BitTorrent's HTTP tracker protocol — announce
// (BEP 3, with BEP 7 peers6, BEP 23 compact peers, BEP 24 external ip) and
// scrape (BEP 48) — over the same tracker core and peer table as the UDP
// frontend, for clients that cannot speak UDP.
//
// A Server listens on /announce and /scrape, and on /{passkey}/announce
// and /{passkey}/scrape for private mode (the request path reaches the
// core as AnnounceRequest.URLData). Refusals are bencoded replies with a
// "failure reason" and status 200, as clients expect; only unknown paths
// (404) and methods other than GET and HEAD (405) get an HTTP error.
//
// Replies are compact (BEP 23) unless the client sends compact=0; then
// "peers" is BEP 3's list of dictionaries, each with "ip" and "port" but no
// "peer id": the peer table keeps no peer IDs (20 bytes a peer), so every
// client is answered as if it had sent no_peer_id. A scrape names up to
// Config.MaxScrape info hashes and is refused beyond that. A scrape that
// names none (a full scrape) is refused unless Config.FullScrape is on;
// then it gets every swarm from a gzip-compressed reply built at most once
// per Config.FullScrapeCache, and each client (an IPv4 address or an IPv6
// /64) gets at most one per Config.FullScrapeEvery (see fullscrape.go).
//
// The announce policy is the tracker's, not the Server's: an announce
// reaches the core with the client's numwant as sent (absent means the
// tracker's DefaultNumWant) and no room of HTTP's own
// (tracker.AnnounceRequest.MaxPeers unset), and the tracker caps it at
// its MaxNumWant. Buffers for peers and replies are sized from the
// tracker's MaxNumWant in effect as requests come, not once at Listen,
// so a reload that raises or lowers it through tracker.Tracker.SetConfig
// reaches HTTP with no call on the Server. What is the Server's own and
// may change while it serves is its Policy (SetPolicy) and its rate
// limit (SetLimits, which takes the tracker.Limits every frontend takes,
// ignoring the connect fields: HTTP has no connect step).
//
// Config.AnnounceRate, off by default, limits how often each client (an
// IPv4 address or an IPv6 /64) may announce; an announce over the limit
// is refused with "rate limited" and BEP 31's "retry in". The limit lives
// in a fixed-size table of buckets indexed by a keyed hash of the client
// (package internal/ratelimit, shared with the UDP frontend), so its
// memory does not grow with the number of clients, and clients that
// collide are only limited more strictly. One mutex guards it, held for
// a few nanoseconds per announce. Slow clients and connection floods are
// bounded by Config.ReadHeaderTimeout and Config.MaxConns: beyond
// MaxConns, connections wait in the kernel's accept queue, not in ours.
// An idle connection holds 1 KiB of buffer; larger buffers are borrowed
// from pools only while a request is read or answered. A pooled buffer
// grows to what the tracker's MaxNumWant needs and is kept until a lower
// MaxNumWant no longer needs it.
//
// Families never mix: the client's address, never a v4-mapped one, picks
// the peers it is given — IPv4 clients get "peers", IPv6 clients get
// "peers6" (and an empty "peers"). IPv6 listeners are IPv6-only. The
// client's address is the connection's peer, or, when that peer is a
// configured trusted proxy, what the proxy's header says; the ip, ipv4 and
// ipv6 parameters are ignored unless Config.AllowIPParam is set.
//
// Serve speaks HTTP/1.1 itself (conn.go, request.go, response.go), not
// through net/http, whose own work was most of an announce's cost: one
// goroutine per connection parses each request head in place, answers
// it and writes the replies of a pipelined burst with one write. It
// serves HTTP/1.0 and HTTP/1.1 with keep-alive and pipelining, GET and
// HEAD; a request body is read and dropped up to 64 KiB, and anything it
// does not serve — a chunked or larger body, HTTP/2, a malformed head,
// or one longer than Config.MaxHeaderBytes — gets an HTTP error and the
// connection is closed. TLS is left to a reverse proxy. ServeHTTP is the
// same core as an http.Handler, for mounting in a net/http server.
//
// The hot path is lean: the request head and the query are scanned in
// place (ParseAnnounce, ParseScrape) into fixed arrays, and replies are
// built with an append-style bencoder (AppendInt, AppendString, …) in
// buffers borrowed from a per-Server pool, so a kept-alive announce
// allocates nothing in steady state, HTTP included.
//
// A Server is safe for concurrent use; Serve owns every goroutine it
// starts (an accept loop per listener, one per connection) and returns
// only after they are done. A panic while answering a request is logged
// with its stack and closes that connection only. Nothing a caller passes
// in is kept after a call returns. The full scrape's two locks (its build
// and its per-client limit) never nest; the connection set's lock nests
// in neither.
package httpcompat
