package tracker

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

// Config holds the announce policy, the same for every frontend. Zero
// values mean "use the default". SetConfig is the one way to change it
// while serving: frontends keep no copy of it.
type Config struct {
	// Interval is how long clients are asked to wait between announces.
	// Zero means 30 minutes.
	Interval time.Duration
	// MinInterval is the shortest wait a client must respect. Zero means
	// 5 minutes. It must not exceed Interval.
	MinInterval time.Duration
	// DefaultNumWant is the number of peers given when a client does not
	// say (BEP 15's -1, HTTP without numwant). Zero means 50.
	DefaultNumWant int
	// MaxNumWant caps what a client may ask for. Zero means 200. A
	// frontend whose reply has less room says so in
	// AnnounceRequest.MaxPeers, and the smaller bound applies. Frontends
	// that size buffers by it read it from Tracker.Config, which follows
	// SetConfig.
	MaxNumWant int
}

// numWant is how many peers an announce under c is given: asked, or
// DefaultNumWant when asked is negative, then at most MaxNumWant and at
// most room when room is positive (the frontend's AnnounceRequest.MaxPeers).
// This is the only place numwant is resolved.
func (c *Config) numWant(asked, room int) int {
	want := asked
	if want < 0 {
		want = c.DefaultNumWant
	}
	want = min(want, c.MaxNumWant)
	if room > 0 {
		want = min(want, room)
	}
	return want
}

func (c *Config) setDefaults() error {
	if c.Interval == 0 {
		c.Interval = 30 * time.Minute
	}
	if c.MinInterval == 0 {
		c.MinInterval = min(5*time.Minute, c.Interval)
	}
	if c.DefaultNumWant == 0 {
		c.DefaultNumWant = 50
	}
	if c.MaxNumWant == 0 {
		c.MaxNumWant = 200
	}
	switch {
	case c.Interval < time.Second || c.Interval > 24*time.Hour:
		return fmt.Errorf("tracker: Interval %v out of range (1s to 24h)", c.Interval)
	case c.MinInterval < 0 || c.MinInterval > c.Interval:
		return fmt.Errorf("tracker: MinInterval %v must be between 0 and Interval (%v)", c.MinInterval, c.Interval)
	case c.DefaultNumWant < 0 || c.MaxNumWant < 0:
		return fmt.Errorf("tracker: DefaultNumWant and MaxNumWant must not be negative")
	case c.DefaultNumWant > c.MaxNumWant:
		return fmt.Errorf("tracker: DefaultNumWant %d exceeds MaxNumWant %d", c.DefaultNumWant, c.MaxNumWant)
	}
	return nil
}

// Tracker answers announces and scrapes from one peer table.
type Tracker struct {
	// cfg is swapped whole by SetConfig; Announce loads it once, so a
	// reply never mixes two policies.
	cfg   atomic.Pointer[Config]
	peers *peertable.Table
	hooks Hooks // set before serving (SetHooks), read-only after
}

// New returns a Tracker over peers, or an error naming the Config field
// that is out of range.
func New(cfg Config, peers *peertable.Table) (*Tracker, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if peers == nil {
		panic("tracker: New with nil peer table")
	}
	t := &Tracker{peers: peers}
	t.cfg.Store(&cfg)
	return t, nil
}

// Config returns the configuration in effect, defaults filled in.
func (t *Tracker) Config() Config { return *t.cfg.Load() }

// SetConfig replaces the announce policy, checked as New checks it, for
// every announce that starts after it returns. On error the policy in
// effect is kept. The peer table is not touched.
func (t *Tracker) SetConfig(cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	t.cfg.Store(&cfg)
	return nil
}

// SetHooks connects the core to a mirror, private-mode rules and
// accounting. It must be called before the Tracker serves its first
// request; hooks are not swapped while requests run.
func (t *Tracker) SetHooks(h Hooks) { t.hooks = h }

// Peers returns the table the Tracker serves.
func (t *Tracker) Peers() *peertable.Table { return t.peers }

// AnnounceRequest is an announce as every frontend delivers it.
type AnnounceRequest struct {
	InfoHash peertable.InfoHash
	PeerID   [20]byte
	// Addr is the peer's address (the source address unless config allows
	// an override, always unmapped) with the port it announced.
	Addr       netip.AddrPort
	Uploaded   uint64
	Downloaded uint64
	Left       uint64
	Event      peertable.Event
	// NumWant is how many peers the client asked for, as it said it;
	// negative means Config.DefaultNumWant. The tracker caps it.
	NumWant int
	// MaxPeers is the most peers the frontend's reply can carry (UDP: what
	// fits Config.MaxPacket); zero means the frontend sets no limit of its
	// own. It must not be negative.
	MaxPeers int
	Key      uint32
	// URLData is the BEP 41 URL data (UDP) or request path (HTTP); it
	// carries the passkey in private mode. Valid only during the call.
	URLData []byte
}

// AnnounceResponse is what the frontends encode.
type AnnounceResponse struct {
	Interval    uint32 // seconds
	MinInterval uint32 // seconds
	Counts      peertable.Counts
	// Peers holds compact peers of the requester's family (6 bytes each
	// for IPv4, 18 for IPv6), appended to the buffer given to Announce.
	Peers []byte
}

// Announce applies req to the swarm and appends the chosen peers to peers:
// req.NumWant of them, or Config.DefaultNumWant if that is negative, at
// most Config.MaxNumWant and at most req.MaxPeers if it is set, and none
// for a stopped event. Once the swarm and the peer exist and peers has
// room for that many, it does not allocate.
func (t *Tracker) Announce(req *AnnounceRequest, peers []byte) (AnnounceResponse, error) {
	if req.Addr.Port() == 0 {
		return AnnounceResponse{}, ErrInvalidPort
	}
	if req.Event > peertable.EventStopped {
		return AnnounceResponse{}, ErrInvalidEvent
	}
	addr := req.Addr.Addr()
	if !addr.IsValid() || addr.Is4In6() || addr.IsUnspecified() {
		return AnnounceResponse{}, ErrInvalidAddress
	}
	h := &t.hooks
	var grant Grant
	if h.Auth != nil {
		g, err := h.Auth.Authorize(Passkey(req.URLData), req)
		if err != nil {
			return AnnounceResponse{}, err
		}
		grant = g
		if h.Accountant != nil {
			h.Accountant.Prefetch(grant, req) // resolves while the table works
		}
	}
	cfg := t.cfg.Load()
	want := cfg.numWant(req.NumWant, req.MaxPeers)
	if req.Event == peertable.EventStopped {
		want = 0 // a peer that leaves needs no peers
	}
	event := req.Event
	if event == peertable.EventCompleted && req.Left != 0 {
		// A client still missing data has not completed anything; taken
		// at its word it would count a download on every announce.
		event = peertable.EventNone
	}
	a := peertable.Announce{
		InfoHash: req.InfoHash,
		Addr:     req.Addr,
		Event:    event,
		Seeder:   req.Left == 0,
		NumWant:  want,
	}
	start := len(peers)
	peers, res := t.peers.Announce(&a, peers)
	if h.Mirror != nil && res.Change != peertable.ChangeNone {
		h.Mirror.Changed(a.InfoHash, peertable.Peer{Addr: a.Addr, Seeder: a.Seeder}, res.Change, res)
	}
	if h.Remote != nil {
		// Other processes' peers fill what the local swarm could not.
		// A peer that moved between processes may be counted by both
		// until one of them forgets it.
		size := peertable.PeerLenV4
		if addr.Is6() {
			size = peertable.PeerLenV6
		}
		var rc peertable.Counts
		if got := (len(peers) - start) / size; want > got {
			local := len(peers)
			peers, rc = h.Remote.Select(a.InfoHash, a.Addr, a.Seeder, want-got, peers)
			peers = dedupe(peers, start, local, size)
		} else {
			rc = h.Remote.Scrape(a.InfoHash)
		}
		res.Counts = addCounts(res.Counts, rc)
	}
	if h.Accountant != nil && h.Auth != nil {
		h.Accountant.Account(grant, req)
	}
	return AnnounceResponse{
		Interval:    uint32(cfg.Interval / time.Second),
		MinInterval: uint32(cfg.MinInterval / time.Second),
		Counts:      res.Counts,
		Peers:       peers[start:],
	}, nil
}

// Prefetch passes requests that a frontend is about to answer to the
// local peer table's Prefetch, which reads ahead the memory they will
// need. A frontend holding a batch of requests (the UDP worker) calls it
// once for the batch; it changes nothing.
func (t *Tracker) Prefetch(reqs []peertable.Prefetch) { t.peers.Prefetch(reqs) }

// Scrape returns the counts of the swarm ih; an unknown swarm has all zeros.
func (t *Tracker) Scrape(ih peertable.InfoHash) peertable.Counts {
	c := t.peers.Scrape(ih)
	if r := t.hooks.Remote; r != nil {
		c = addCounts(c, r.Scrape(ih))
	}
	return c
}

// dedupe drops from peers[local:] the peers that peers[start:local]
// already holds: a client that announced to this process and, before,
// to another is in both tables until the other forgets it. Both runs
// are at most one reply long, so the quadratic scan is cheap, and it
// runs only when the local swarm could not fill the reply.
func dedupe(peers []byte, start, local, size int) []byte {
	if local == start {
		return peers
	}
	out := local
	for i := local; i < len(peers); i += size {
		p := peers[i : i+size]
		dup := false
		for j := start; j < local; j += size {
			if string(peers[j:j+size]) == string(p) {
				dup = true
				break
			}
		}
		if !dup {
			out += copy(peers[out:], p)
		}
	}
	return peers[:out]
}

func addCounts(a, b peertable.Counts) peertable.Counts {
	return peertable.Counts{
		Seeders:   a.Seeders + b.Seeders,
		Leechers:  a.Leechers + b.Leechers,
		Completed: a.Completed + b.Completed,
	}
}
