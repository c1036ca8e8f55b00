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

	// Accounting keeps an Aux record beside every peer (private mode needs
	// the user and the last reported totals to compute deltas). When false,
	// no memory is spent on it.
	Accounting bool

	// Swarms is roughly how many swarms the table will hold. It sizes the
	// swarm index (one shard per 16 swarms, rounded to a power of two), so
	// that creating or removing a swarm copies a few dozen pointers, not
	// thousands. It is a hint, not a limit. Zero means 65,536.
	Swarms int
}

// Aux is what private mode remembers about a peer beside its address.
type Aux struct {
	User       uint32
	Uploaded   uint64
	Downloaded uint64
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
	// Aux is stored with the peer when Config.Accounting is set.
	Aux Aux
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
	// Prev is the Aux stored for this peer before this announce; PrevFound
	// says whether there was one (Config.Accounting only).
	Prev      Aux
	PrevFound bool
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
