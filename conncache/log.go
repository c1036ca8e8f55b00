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
type changeLog struct {
	max     int64
	pending atomic.Int64 // entries in all shards
	dropped atomic.Uint64
	full    atomic.Bool // an entry was dropped since the last reset
	shards  [logShards]logShard
}

const logShards = 64

type logShard struct {
	mu        sync.Mutex // guards the fields below
	peers     map[logKey]logOp
	completed map[peertable.InfoHash]uint32
	_         [40]byte // keep shards on separate cache lines
}

// logKey is a peer of a swarm, without pointers (netip.AddrPort has one),
// so that the GC does not scan the maps.
type logKey struct {
	ih   peertable.InfoHash
	addr [16]byte
	port uint16
	v6   bool
}

type logOp uint8

const (
	logPut    logOp = 1
	logRemove logOp = 2
	logSeeder logOp = 4 // with logPut
)

func newChangeLog(max int) *changeLog {
	l := &changeLog{max: int64(max)}
	for i := range l.shards {
		l.shards[i].peers = make(map[logKey]logOp)
		l.shards[i].completed = make(map[peertable.InfoHash]uint32)
	}
	return l
}

func keyOf(ih *peertable.InfoHash, p *peertable.Peer) logKey {
	a := p.Addr.Addr()
	return logKey{ih: *ih, addr: a.As16(), port: p.Addr.Port(), v6: a.Is6()}
}

func (k *logKey) peer(op logOp) peertable.Peer {
	a := netip.AddrFrom16(k.addr)
	if !k.v6 {
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
	if _, ok := sh.peers[k]; !ok && !l.reserve() {
		sh.mu.Unlock()
		return
	}
	sh.peers[k] = op
	sh.mu.Unlock()
}

// noteCompleted records ih's completed count.
func (l *changeLog) noteCompleted(ih *peertable.InfoHash, n uint32) {
	sh := &l.shards[int(ih[0]^ih[7])%logShards]
	sh.mu.Lock()
	if _, ok := sh.completed[*ih]; !ok && !l.reserve() {
		sh.mu.Unlock()
		return
	}
	sh.completed[*ih] = n
	sh.mu.Unlock()
}

// reserve counts a new entry, or reports that the log is full and counts
// the change as dropped.
func (l *changeLog) reserve() bool {
	if l.pending.Add(1) > l.max {
		l.pending.Add(-1)
		l.dropped.Add(1)
		l.full.Store(true)
		return false
	}
	return true
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
	l.pending.Add(-int64(len(buf)))
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
	l.pending.Add(-int64(n))
}
