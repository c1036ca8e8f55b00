// Package tracker is the core that every frontend calls: it validates an
// announce, applies it to the peer table and picks the peers to return, so
// that a client gets the same swarm whichever protocol it speaks.
//
// # Who owns what
//
// The tracker owns the announce policy: the intervals, and how many peers
// an announce gets. A frontend passes the client's num_want as the client
// sent it (AnnounceRequest.NumWant) together with the room its reply has
// (AnnounceRequest.MaxPeers: UDP's datagram size, nothing for HTTP), and
// Announce resolves them against Config.DefaultNumWant and
// Config.MaxNumWant in one place. The policy lives only in the Tracker's
// Config: SetConfig is where a reload lands, and no frontend keeps a copy
// of it. A frontend that sizes buffers by MaxNumWant reads it from Config
// when it needs it, so a reload reaches it too.
//
// The frontends own their wire formats, their sockets and connections,
// and what they allow before calling the core: per-source rate limits,
// which they all take in one shape, Limits, checked by Limits.Check.
//
// # Concurrency and memory
//
// A Tracker is safe for concurrent use; its methods never block on I/O.
// Peers are appended to a caller's buffer, and the Tracker keeps no
// reference to it or to any request field after a call returns. Errors it
// returns are *ClientError values whose text may be sent to the client.
package tracker
