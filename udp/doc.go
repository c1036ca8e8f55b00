// Package udp is chihaya's BEP 15 frontend: it answers connect, announce
// and scrape requests over UDP from one tracker.Tracker, with BEP 41 URL
// data passed on to the tracker (private mode reads the passkey there).
//
// # Who owns what
//
// The Server owns the wire: sockets, connection IDs, the codec, the
// per-source rate limits and whether the IP field is believed. The
// announce policy is the tracker's: an announce reaches it with the
// client's num_want as sent and, as tracker.AnnounceRequest.MaxPeers,
// the most peers that fit a reply of Config.MaxPacket; the tracker
// resolves the two against its DefaultNumWant and MaxNumWant, and a
// reload of those reaches UDP through tracker.Tracker.SetConfig alone.
// What may change while a Server serves is its Policy (SetPolicy) and its
// rate limits (SetLimits, which takes the tracker.Limits every frontend
// takes); the rest of Config needs a new Server.
//
// # Sockets and workers
//
// For each listen address a Server opens Config.Workers sockets bound to
// the same port with SO_REUSEPORT; each socket has one worker goroutine
// that owns it and all its buffers. A worker reads up to Config.Batch
// datagrams with one recvmmsg, answers them in place and sends the
// replies with one sendmmsg (elsewhere than Linux, one datagram per
// call). In steady state a request allocates nothing: requests are parsed
// into values the worker reuses, peers are appended by the tracker
// straight into the worker's reply buffer, and replies are addressed to
// the sockaddr the request came from.
//
// # Reply source address
//
// A socket bound to a wildcard address (0.0.0.0 or ::, the defaults)
// receives datagrams sent to any of the host's addresses, and left to
// itself the kernel would send each reply from whichever address routing
// picks. On a multi-homed host that may not be the one the client wrote
// to, and a client on a connected socket, or behind a NAT, drops a reply
// from any other address. So on Linux a wildcard-bound socket turns on
// IP_PKTINFO (IPv4) or IPV6_RECVPKTINFO (IPv6): recvmmsg reports each
// datagram's destination in a control message, into a buffer each slot
// of the batch owns, and sendmmsg sends the reply with an IP_PKTINFO or
// IPV6_PKTINFO message naming that address as its source (for IPv4 the
// kernel's ipi_spec_dst, which is the destination of a unicast datagram)
// and leaving the interface to routing. A socket bound to one address
// has its source fixed already and carries no control messages.
// Elsewhere than Linux the kernel picks the source, so a multi-homed
// host should list each of its addresses in Config.Addrs there.
//
// # Invariants
//
//   - On Linux a reply to a unicast request leaves from the address the
//     request was sent to, whether the socket is bound to that address
//     or to a wildcard.
//   - IPv4 peers go only to IPv4 clients and IPv6 peers only to IPv6
//     clients, decided by the source address of the request (4-in-6
//     addresses unmapped). IPv6 sockets are IPV6_V6ONLY.
//   - Only a connect request is answered without a valid connection ID,
//     and its 16-byte reply is no larger than the request. Any other
//     request without a valid ID gets no reply at all; one with a valid
//     ID that cannot be parsed gets a BEP 15 error naming the fault.
//   - Only the text of a *ParseError or *tracker.ClientError is sent to a
//     client; any other error goes out as "internal error".
//   - An announce reply fits Config.MaxPacket, headers included: the
//     tracker is given the peers that fit as its MaxPeers, and a longer
//     answer would be cut to them.
//   - No request, however malformed, makes a parser read out of bounds,
//     loop, or hold more than MaxURLData bytes of URL data.
//
// # Connection IDs
//
// A connection ID is a keyed hash (SipHash-2-4) of the client's IP
// address and the time of issue, so any worker and any process sharing
// Config.Secret can check it without state. It binds the IP but not the
// port: a NAT may move a client to a new source port within the minute
// BEP 15 lets it reuse an ID, and the port adds nothing against spoofing.
// An ID is valid for two minutes plus Config.ConnIDGrace; one stamped
// more than a second in the future is refused.
//
// # Rate limits
//
// Config.ConnectRate and Config.AnnounceRate, off by default, limit how
// often each source, an IPv4 address or an IPv6 /64, may connect and
// announce; SetLimits replaces them (and their bursts) while serving. Each worker has its own limiters (package
// internal/ratelimit): a fixed table of 2×4096 token buckets, 64 KiB per
// limit, indexed by a hash of the source under a random per-worker seed.
// Memory is fixed however many sources there are; sources whose buckets
// collide share them, which only ever limits them more strictly, so
// under a flood from many addresses the table turns into a limit on all
// of them together (4096 buckets times the rate, per worker). Checking
// costs a few nanoseconds and allocates nothing.
//
// A connect over the limit gets no reply: its source is unproven, so a
// reply would be as good as an answer to a spoofer. An announce is
// charged only once its connection ID is valid, so a spoofer cannot use
// up a victim's announce budget (a spoofed flood of connects can use up
// its connect budget, as with any per-address limit); over the limit it
// too gets no reply rather than BEP 15's error. The error would cost a
// reply per dropped request to a client that is already sending too
// much, while silence makes a BEP 15 client back off by itself (it
// retries after 15·2^n seconds). Scrapes are not limited. Dropped requests are counted in
// Stats.RateLimited.
//
// The limits are per worker. On Linux SO_REUSEPORT picks a socket by a
// hash of the 4-tuple, so all of one source port's datagrams reach one
// worker and a client using one port is held to the configured rate;
// one spreading its requests over many source ports can reach up to
// Config.Workers times the rate per listen address. Where there is no
// SO_REUSEPORT, the workers share one socket and any of them may read a
// datagram, so the same Workers× bound holds. The clock is read once per
// batch in whole seconds, so budgets come back a second's worth at a
// time.
//
// # Concurrency
//
// A Server's methods are safe for concurrent use. Serve blocks until its
// context is done or Close is called, then pushes the workers out of
// their system calls with a deadline, waits for them and closes the
// sockets. Errors are logged through Config.Logger, never once per
// packet; per-packet outcomes are counted in Stats.
//
// The codec is exported for clients, load generators and fuzzing:
// ParseConnect, ParseAnnounce and ParseScrape read requests without
// allocating once their destination has capacity, and AppendConnect,
// AppendAnnounce and AppendScrape write them.
package udp
