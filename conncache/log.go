package conncache

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/chihaya/chihaya/peertable"
)

// changeLog coalesces local changes until the publisher takes them: one
// entry per (swarm, peer) holding the latest operation, and one per swarm
// holding the latest completed count. It is sharded so that announces of
// different peers rarely share a lock; its maps keep their capacity when
// drained, so that noting a change allocates nothing once the log has
// seen as many entries as it holds at a time.
//
// The bound on entries is kept with credits: a shard takes them from the
// shared counter a chunk at a time, so that announces on different cores
// rarely write the same cache line, and keeps what it has not used when
// drained. The spare credits (fewer than logShards per chunk) may make the
// log drop changes a little before it holds max entries, never after;
// chunks are small enough for that to be a small part of max, and 1, so
// exact, for a max under logShards*256.
type changeLog struct {
	max      int64
	chunk    int64        // credits a shard takes at a time
	reserved atomic.Int64 // credits taken: entries in all shards, plus their spares
	dropped  atomic.Uint64
	full     atomic.Bool // an entry was dropped since the last reset
	shards   [logShards]logShard
}

const logShards = 64

type logShard struct {
	mu        sync.Mutex // guards the fields below
	peers     map[logKey]logOp
	completed map[peertable.InfoHash]uint32
	spare     int64    // credits taken and not used yet
	_         [32]byte // keep shards on separate cache lines
}

// logKey is a peer of a swarm, without pointers (netip.AddrPort has one),
// so that the GC does not scan the maps, and without padding, so that the
// maps hash and compare it as 40 bytes of plain memory in one go.
type logKey struct {
	ih   peertable.InfoHash
	addr [16]byte
	port uint16
	v6   uint16 // 1 for IPv6, else 0
}

type logOp uint8

const (
	logPut    logOp = 1
	logRemove logOp = 2
	logSeeder logOp = 4 // with logPut
)

func newChangeLog(maxPending int) *changeLog {
	l := &changeLog{max: int64(maxPending), chunk: int64(min(64, max(1, maxPending/(logShards*256))))}
	for i := range l.shards {
		l.shards[i].peers = make(map[logKey]logOp)
		l.shards[i].completed = make(map[peertable.InfoHash]uint32)
	}
	return l
}

func keyOf(ih *peertable.InfoHash, p *peertable.Peer) logKey {
	a := p.Addr.Addr()
	k := logKey{ih: *ih, addr: a.As16(), port: p.Addr.Port()}
	if a.Is6() {
		k.v6 = 1
	}
	return k
}

func (k *logKey) peer(op logOp) peertable.Peer {
	a := netip.AddrFrom16(k.addr)
	if k.v6 == 0 {
		a = a.Unmap()
	}
	return peertable.Peer{Addr: netip.AddrPortFrom(a, k.port), Seeder: op&logSeeder != 0}
}

// shardOf mixes bytes of the info hash (already uniform) with the peer's
// port and address, so that one busy swarm spreads over all shards.
func shardOf(ih *peertable.InfoHash, k *logKey) int {
	return int(ih[0]^ih[7]^byte(k.port)^byte(k.port>>8)^k.addr[15]^k.addr[14]) % logShards
}

// note records op for p in ih, replacing any earlier entry for it.
func (l *changeLog) note(ih *peertable.InfoHash, p *peertable.Peer, op logOp) {
	k := keyOf(ih, p)
	sh := &l.shards[shardOf(ih, &k)]
	sh.mu.Lock()
	// One map operation in the common case: a new entry shows in the
	// length, and is taken back if the log is full.
	n := len(sh.peers)
	sh.peers[k] = op
	if len(sh.peers) > n && !l.reserveLocked(sh) {
		delete(sh.peers, k)
	}
	sh.mu.Unlock()
}

// noteCompleted records ih's completed count.
func (l *changeLog) noteCompleted(ih *peertable.InfoHash, n uint32) {
	sh := &l.shards[int(ih[0]^ih[7])%logShards]
	sh.mu.Lock()
	had := len(sh.completed)
	sh.completed[*ih] = n
	if len(sh.completed) > had && !l.reserveLocked(sh) {
		delete(sh.completed, *ih)
	}
	sh.mu.Unlock()
}

// reserveLocked spends one of sh's credits on a new entry, taking more if
// it has none, or reports that the log is full and counts the change as
// dropped.
func (l *changeLog) reserveLocked(sh *logShard) bool {
	if sh.spare > 0 {
		sh.spare--
		return true
	}
	if l.reserved.Add(l.chunk) <= l.max {
		sh.spare = l.chunk - 1
		return true
	}
	l.reserved.Add(-l.chunk)
	if l.chunk > 1 { // the last few credits, one at a time
		if l.reserved.Add(1) <= l.max {
			return true
		}
		l.reserved.Add(-1)
	}
	l.dropped.Add(1)
	l.full.Store(true)
	return false
}

// len returns the number of entries.
func (l *changeLog) len() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.peers) + len(sh.completed)
		sh.mu.Unlock()
	}
	return n
}

// drained is a log entry taken out by drain.
type drained struct {
	k         logKey
	op        logOp
	completed uint32 // for entries of the completed map (k has only ih)
}

// drain empties the log into tx: peer changes first, then completed
// counts, so that a receiver has the swarm before its count. Entries are
// copied out under each shard's lock and encoded after it, so announces
// wait for a copy, not for the encoding. buf is reused between calls. It
// returns the number of changes and the buffer.
func (l *changeLog) drain(tx Tx, buf []drained) (int, []drained) {
	buf = buf[:0]
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, op := range sh.peers {
			buf = append(buf, drained{k: k, op: op})
		}
		clear(sh.peers)
		sh.mu.Unlock()
	}
	peers := len(buf)
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for ih, c := range sh.completed {
			buf = append(buf, drained{k: logKey{ih: ih}, completed: c})
		}
		clear(sh.completed)
		sh.mu.Unlock()
	}
	l.reserved.Add(-int64(len(buf)))
	for i := range buf {
		d := &buf[i]
		switch {
		case i >= peers:
			tx.SetCompleted(d.k.ih, d.completed)
		case d.op&logRemove != 0:
			tx.Remove(d.k.ih, d.k.peer(d.op))
		default:
			tx.Put(d.k.ih, d.k.peer(d.op))
		}
	}
	return len(buf), buf
}

// reset drops every entry (a full republish supersedes them) and clears
// the overflow mark.
func (l *changeLog) reset() {
	// Cleared first: a drop while the shards are emptied marks the log
	// again, and the next republish covers it.
	l.full.Store(false)
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.peers) + len(sh.completed)
		clear(sh.peers)
		clear(sh.completed)
		sh.mu.Unlock()
	}
	l.reserved.Add(-int64(n))
}
