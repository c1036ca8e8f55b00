// Command chihaya-load drives a BEP 15 (UDP) tracker, or with -proto http
// an HTTP tracker, with many requests in flight and checks every reply it
// gets back.
//
// It opens -conns connected sockets, each with its own goroutine and
// source port; each keeps -window requests in flight, matched to replies
// by transaction ID. Replies are read in batches (recvmmsg), and the
// requests of a batch are sent in one sendmmsg, with requests of one kind
// packed into one UDP GSO buffer on Linux (-gso): the tracker still gets
// one datagram per request, but the generator pays the kernel's send path
// once per batch, which is what lets one core of it outrun one core of a
// tracker. A socket connects first and uses its connection ID for at most
// -connid-ttl (a minute, as BEP 15 allows), asking for the next one a
// little before; a whole window lost in a row also makes it reconnect.
//
// Requests are announces and scrapes (-scrape is the scrape fraction) of
// -torrents info hashes with Zipf popularity (-zipf), from -peers
// distinct peers per socket, with -events weights and -numwant. Every
// reply is checked: action, transaction ID, length, peer entries of the
// request's family (6 or 18 bytes, no IPv4-mapped addresses in IPv6
// replies), counts that cannot be negative or smaller than the peer list.
// A request not answered within -timeout counts as lost; a reply that
// breaks BEP 15 counts as invalid, by reason; error replies are counted
// with their text.
//
// -urldata PATH (such as /PASSKEY/announce, for a private tracker) is
// sent with every UDP announce as BEP 41 URL data, in options of at most
// 255 bytes, and is the path of every HTTP announce instead of /announce.
//
// -rate N holds the generator to N requests a second in all, each socket
// or connection to its share, instead of as fast as the tracker answers
// (for soak runs at a fraction of capacity).
//
// With -proto http it opens -conns HTTP/1.1 connections (64 unless
// given), each with its own goroutine and one request in flight:
// GET /announce (compact=1) and /scrape, with the same workload. Its
// client is its own, not net/http, which would cost more per request
// than the tracker: one reused request buffer, one write and a read or
// two per request, replies framed by Content-Length, by chunks or by the
// end of the connection. Connections are kept alive; when the server
// closes one, the worker connects again and counts a reconnect. A server
// that closes after every reply without saying so (opentracker) is
// recognised after its first connection; from then on the worker waits
// for that close after each reply instead of wasting a request on a dead
// connection. Each reply must be status 200 and one bencoded dictionary
// (keys sorted), with complete, incomplete and a positive interval, and a
// compact peer list of the client's family ("peers", 6 bytes a peer, or
// "peers6", 18) no longer than numwant or the swarm; a scrape's files
// must be among the hashes asked for. A "failure reason" counts as an
// error reply, with its text; a timeout or a connection that breaks
// before the reply counts as lost, and a refused connect as refused.
// Latency starts before the connect a request may need.
//
// Once a second a progress line goes to stderr. At the end a summary goes
// to stdout, ending in one line for scripts:
//
//	RESULT rps=… announce_rps=… scrape_rps=… p50_us=… p99_us=… errors=…
//	lost=… invalid=… answered=… seconds=… gen_cpu=… [prefilled=…]
//	[reconnects=…]
//
// rps counts valid, non-error replies per second after -warmup; gen_cpu
// is the CPU the generator used meanwhile, in cores; reconnects (HTTP
// only) counts the connections opened meanwhile beyond each worker's
// first.
//
// The info hashes depend only on -seed and their index, so a tracker in
// whitelist mode can be given them (chihaya-load -print-hashes -torrents N),
// and -probe (or -wait before a run) waits until an announce of the last
// one is answered, as a tracker that loads its whitelist in the
// background needs.
//
// -prefill N announces N distinct peers (event started) spread evenly over
// the torrents and exits. A tracker knows a peer by its address and
// announced port, and all of them come from one address, so a torrent can
// hold at most 65535 of them: 1,000,000 peers need 16 torrents or more.
//
// -responder ADDR runs a trivial batched BEP 15 server instead, which
// answers every request with a minimal valid reply, to measure the
// generator's own ceiling; -http-responder ADDR does the same over HTTP,
// keeping connections alive or, with -responder-close, closing each after
// its reply as opentracker does.
//
// The generator shares no code with the tracker's udp and httpcompat
// packages: it has its own encoders and decoders, so that the two cannot
// agree by construction.
package main
