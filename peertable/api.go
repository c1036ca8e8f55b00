package peertable

import (
	"net/netip"
	"time"
)

// InfoHash identifies a swarm. A BitTorrent v2 (SHA-256) info hash arrives
// truncated to its first 20 bytes, as clients send it to trackers.
type InfoHash [20]byte

// Event is what an announce reports, numbered as in BEP 15.
type Event uint8

const (
	EventNone      Event = 0
	EventCompleted Event = 1
	EventStarted   Event = 2
	EventStopped   Event = 3
)

// Config configures a Table. Zero values mean "use the default".
type Config struct {
	// PeerLifetime is how long a peer stays in its swarm after its last
	// announce, rounded up to the table's clock unit (a second up to about
	// 2 hours, 1/8192 of it above). Zero means 31 minutes. It must be at
	// most 12 hours, which keeps 16-bit last-seen stamps unambiguous.
	PeerLifetime time.Duration

	// Swarms is roughly how many swarms the table will hold. It sizes the
	// swarm index (one shard per 16 swarms, rounded to a power of two), so
	// that creating or removing a swarm copies a few dozen pointers, not
	// thousands. It is a hint, not a limit. Zero means 65,536.
	Swarms int

	// RefreshEvery is the refresh period that decides ChangeRefresh: a
	// re-announce reports it when it falls in a later period than the
	// peer's previous announce, so a peer that keeps announcing is
	// reported at least once every two periods, and a peer that
	// announces less often than once a period on every announce. Zero
	// means PeerLifetime/4.
	RefreshEvery time.Duration

	// OnExpire, if set, is called by Sweep for every peer it removes,
	// with the swarm's lock held: it must be quick and must not call the
	// Table. A mirror uses it to publish expiries.
	OnExpire func(ih InfoHash, p Peer)
}

// Announce is one peer's announce as the table needs it.
type Announce struct {
	InfoHash InfoHash
	// Addr is the peer's address (unmapped) and announced port. Its family
	// picks the set the peer lives in and the peers it is given. A peer
	// with port 0 is kept and counted but never handed out (the tracker
	// refuses such announces anyway).
	Addr    netip.AddrPort
	Event   Event
	Seeder  bool // left == 0
	NumWant int  // at most this many peers are appended; <= 0 means none
}

// Counts are a swarm's totals over both address families.
type Counts struct {
	Seeders   uint32
	Leechers  uint32
	Completed uint32 // completed downloads seen since the swarm was created
}

// Result is what Announce reports besides the peers.
type Result struct {
	Counts Counts
	// Change is what the announce changed (see Change).
	Change Change
	// Completed reports that this announce counted a completed download
	// (event completed from a peer not known as a seeder).
	Completed bool
}

// Stats are table-wide totals, for logs and metrics.
type Stats struct {
	Swarms  int
	PeersV4 int
	PeersV6 int
}

// Compact peer sizes: address bytes then the port, big-endian (BEP 15,
// BEP 23, BEP 7).
const (
	PeerLenV4 = 4 + 2
	PeerLenV6 = 16 + 2
)

// A Change says what an announce changed in the table, for a cache that
// mirrors the table to other processes (conncache): they must learn of new
// peers, role changes and departures at once, and of a peer that is merely
// still there often enough to keep it, but not of every re-announce.
type Change uint8

const (
	// ChangeNone: a re-announce of a known peer in the same role, within
	// the same refresh period (Config.RefreshEvery) as its previous one.
	ChangeNone Change = iota
	// ChangeRefresh: as ChangeNone, but the first announce of the peer
	// in a new refresh period. Mirrors republish the peer so that copies
	// elsewhere do not expire.
	ChangeRefresh
	// ChangeAdded: the peer was not in the swarm.
	ChangeAdded
	// ChangeRole: the peer turned from leecher to seeder or back.
	ChangeRole
	// ChangeRemoved: the peer stopped and was removed.
	ChangeRemoved
)

// Peer is one peer as Table.AppendPeers and Config.OnExpire report it.
type Peer struct {
	Addr   netip.AddrPort
	Seeder bool
}
