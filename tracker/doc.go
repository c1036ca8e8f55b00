// Package tracker is the core that every frontend calls: it validates an
// announce, applies it to the peer table and picks the peers to return, so
// that a client gets the same swarm whichever protocol it speaks.
//
// A Tracker is safe for concurrent use; its methods never block on I/O.
// Peers are appended to a caller's buffer, and the Tracker keeps no
// reference to it or to any request field after a call returns. Errors it
// returns are *ClientError values whose text may be sent to the client.
package tracker
