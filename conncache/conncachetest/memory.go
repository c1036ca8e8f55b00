package conncachetest

import (
	"context"
	"crypto/rand"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/peertable"
)

// A Store is an in-memory stand-in for the shared store: pools opened on
// it share its state and see each other's batches, as processes sharing
// one Redis do. Tests of code above the Pool contract use it where a real
// server would only add setup; it passes Run like any driver. It is safe
// for concurrent use.
type Store struct {
	mu     sync.Mutex // guards the fields below
	swarms map[peertable.InfoHash]map[conncache.Origin]*memSwarm
	subs   map[*memSub]struct{}
}

type memSwarm struct {
	peers     map[netip.AddrPort]memPeer
	completed uint32
}

type memPeer struct {
	seeder    bool
	published time.Time
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{
		swarms: make(map[peertable.InfoHash]map[conncache.Origin]*memSwarm),
		subs:   make(map[*memSub]struct{}),
	}
}

// Open returns a new Pool on s with a random origin. The Pool implements
// Outage: Cut makes its operations fail and breaks its subscription.
func (s *Store) Open() *MemoryPool {
	p := &MemoryPool{s: s}
	rand.Read(p.origin[:])
	return p
}

// errCut is what a cut MemoryPool's operations return.
var errCut = errors.New("conncachetest: store unreachable (Cut)")

// A MemoryPool is a conncache.Pool on a Store.
type MemoryPool struct {
	s      *Store
	origin conncache.Origin

	mu   sync.Mutex // guards the fields below
	cut  bool
	subs []*memSub
}

// A memSub is one Subscribe call's queue.
type memSub struct {
	p      *MemoryPool
	mu     sync.Mutex // guards q
	q      []conncache.Event
	signal chan struct{} // capacity 1
}

func (b *memSub) push(e conncache.Event) {
	b.mu.Lock()
	b.q = append(b.q, e)
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

// Origin implements conncache.Pool.
func (p *MemoryPool) Origin() conncache.Origin { return p.origin }

func (p *MemoryPool) isCut() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cut
}

// Cut implements Outage.
func (p *MemoryPool) Cut() {
	p.mu.Lock()
	p.cut = true
	subs := slices.Clone(p.subs)
	p.mu.Unlock()
	for _, b := range subs {
		b.push(conncache.Event{Kind: conncache.EventBroken, Err: errCut})
	}
}

// Restore implements Outage.
func (p *MemoryPool) Restore() {
	p.mu.Lock()
	p.cut = false
	subs := slices.Clone(p.subs)
	p.mu.Unlock()
	for _, b := range subs {
		b.push(conncache.Event{Kind: conncache.EventSubscribed})
	}
}

// Ping implements conncache.Pool.
func (p *MemoryPool) Ping(ctx context.Context) error {
	if p.isCut() {
		return errCut
	}
	return nil
}

// Close implements conncache.Pool.
func (p *MemoryPool) Close() error { return nil }

// Load implements conncache.Pool.
func (p *MemoryPool) Load(ctx context.Context, since time.Time, fn func(o conncache.Origin, r conncache.Record)) error {
	if p.isCut() {
		return errCut
	}
	type item struct {
		o conncache.Origin
		r conncache.Record
	}
	var items []item
	p.s.mu.Lock()
	for ih, byOrigin := range p.s.swarms {
		for o, sw := range byOrigin {
			if o == p.origin {
				continue
			}
			for ap, mp := range sw.peers {
				if !mp.published.Before(since) {
					items = append(items, item{o, conncache.Record{Op: conncache.OpPut, InfoHash: ih, Peer: peertable.Peer{Addr: ap, Seeder: mp.seeder}}})
				}
			}
			if sw.completed > 0 {
				items = append(items, item{o, conncache.Record{Op: conncache.OpCompleted, InfoHash: ih, Completed: sw.completed}})
			}
		}
	}
	p.s.mu.Unlock()
	for _, it := range items {
		fn(it.o, it.r)
	}
	return nil
}

// Prune implements conncache.Pool.
func (p *MemoryPool) Prune(ctx context.Context, keep func(ih peertable.InfoHash) bool) error {
	if p.isCut() {
		return errCut
	}
	p.s.mu.Lock()
	var mine []peertable.InfoHash
	for ih, byOrigin := range p.s.swarms {
		if byOrigin[p.origin] != nil {
			mine = append(mine, ih)
		}
	}
	p.s.mu.Unlock()
	for _, ih := range mine {
		if !keep(ih) {
			p.s.mu.Lock()
			delete(p.s.swarms[ih], p.origin)
			p.s.mu.Unlock()
		}
	}
	return nil
}

// Subscribe implements conncache.Pool.
func (p *MemoryPool) Subscribe(ctx context.Context, fn func(e *conncache.Event)) error {
	b := &memSub{p: p, signal: make(chan struct{}, 1)}
	p.mu.Lock()
	p.subs = append(p.subs, b)
	if !p.cut {
		b.q = append(b.q, conncache.Event{Kind: conncache.EventSubscribed})
		b.signal <- struct{}{}
	}
	p.mu.Unlock()
	p.s.mu.Lock()
	p.s.subs[b] = struct{}{}
	p.s.mu.Unlock()
	defer func() {
		p.s.mu.Lock()
		delete(p.s.subs, b)
		p.s.mu.Unlock()
		p.mu.Lock()
		p.subs = slices.DeleteFunc(p.subs, func(x *memSub) bool { return x == b })
		p.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.signal:
		}
		b.mu.Lock()
		q := b.q
		b.q = nil
		b.mu.Unlock()
		for i := range q {
			if ctx.Err() != nil {
				return nil
			}
			fn(&q[i])
		}
	}
}

// Begin implements conncache.Pool.
func (p *MemoryPool) Begin() conncache.Tx { return &memTx{p: p} }

type memTx struct {
	p       *MemoryPool
	recs    []conncache.Record // notified
	replace []memReplace
	n       int
	resync  bool
}

type memReplace struct {
	ih        peertable.InfoHash
	peers     []peertable.Peer
	completed uint32
}

func (t *memTx) Put(ih peertable.InfoHash, p peertable.Peer) {
	t.recs = append(t.recs, conncache.Record{Op: conncache.OpPut, InfoHash: ih, Peer: p})
	t.n++
}

func (t *memTx) Remove(ih peertable.InfoHash, p peertable.Peer) {
	t.recs = append(t.recs, conncache.Record{Op: conncache.OpRemove, InfoHash: ih, Peer: p})
	t.n++
}

func (t *memTx) SetCompleted(ih peertable.InfoHash, n uint32) {
	t.recs = append(t.recs, conncache.Record{Op: conncache.OpCompleted, InfoHash: ih, Completed: n})
	t.n++
}

func (t *memTx) Replace(ih peertable.InfoHash, peers []peertable.Peer, completed uint32) {
	t.replace = append(t.replace, memReplace{ih, slices.Clone(peers), completed})
	t.n += max(1, len(peers))
}

func (t *memTx) Resync()  { t.resync = true }
func (t *memTx) Len() int { return t.n }

func (t *memTx) Commit(ctx context.Context) error {
	recs, repl, resync := t.recs, t.replace, t.resync
	t.recs, t.replace, t.n, t.resync = nil, nil, 0, false
	if t.p.isCut() {
		return errCut
	}
	s, o := t.p.s, t.p.origin
	now := time.Now()
	s.mu.Lock()
	swarm := func(ih peertable.InfoHash) *memSwarm {
		byOrigin := s.swarms[ih]
		if byOrigin == nil {
			byOrigin = make(map[conncache.Origin]*memSwarm)
			s.swarms[ih] = byOrigin
		}
		sw := byOrigin[o]
		if sw == nil {
			sw = &memSwarm{peers: make(map[netip.AddrPort]memPeer)}
			byOrigin[o] = sw
		}
		return sw
	}
	for _, r := range repl {
		delete(s.swarms[r.ih], o)
		sw := swarm(r.ih)
		for _, p := range r.peers {
			sw.peers[p.Addr] = memPeer{p.Seeder, now}
		}
		sw.completed = r.completed
	}
	for _, r := range recs {
		sw := swarm(r.InfoHash)
		switch r.Op {
		case conncache.OpPut:
			sw.peers[r.Peer.Addr] = memPeer{r.Peer.Seeder, now}
		case conncache.OpRemove:
			delete(sw.peers, r.Peer.Addr)
		case conncache.OpCompleted:
			sw.completed = r.Completed
		}
	}
	var subs []*memSub
	for b := range s.subs {
		if b.p != t.p {
			subs = append(subs, b)
		}
	}
	s.mu.Unlock()
	for _, b := range subs {
		if b.p.isCut() {
			continue // lost, as Pub/Sub loses messages
		}
		if len(recs) > 0 {
			b.push(conncache.Event{Kind: conncache.EventBatch, Origin: o, Records: slices.Clone(recs)})
		}
		if resync {
			b.push(conncache.Event{Kind: conncache.EventResync, Origin: o})
		}
	}
	return nil
}
