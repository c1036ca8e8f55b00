// Package conncachetest is the conformance suite every conncache driver
// runs: Run(t, open) opens pools as if each were a tracker process and
// checks the Pool and Tx contract between them.
package conncachetest

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/peertable"
)

// An Outage is a Pool whose connection to the store a test can cut and
// restore. Pools that implement it are also checked for reporting a
// broken subscription and re-establishing it.
type Outage interface {
	conncache.Pool
	Cut()
	Restore()
}

// wait bounds every wait for an event. Nothing is timed: it only turns a
// hang into a failure.
const wait = 10 * time.Second

// Run checks the driver behind open. Each call of open must return a new
// Pool (a new origin); pools opened with the same t must share a store
// namespace (key prefix) that no other t uses. Run closes the pools.
func Run(t *testing.T, open func(t *testing.T) conncache.Pool) {
	t.Run("Origins", func(t *testing.T) {
		a, b := open(t), open(t)
		defer a.Close()
		defer b.Close()
		if a.Origin() == b.Origin() {
			t.Errorf("two pools share origin %v", a.Origin())
		}
		if err := a.Ping(ctx(t)); err != nil {
			t.Errorf("Ping = %v", err)
		}
	})
	t.Run("PutRemoveCompleted", func(t *testing.T) { testPutRemove(t, open) })
	t.Run("Replace", func(t *testing.T) { testReplace(t, open) })
	t.Run("Prune", func(t *testing.T) { testPrune(t, open) })
	t.Run("LoadSince", func(t *testing.T) { testLoadSince(t, open) })
	t.Run("Large", func(t *testing.T) { testLarge(t, open) })
	t.Run("Broken", func(t *testing.T) { testBroken(t, open) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return c
}

// Hash returns a test info hash.
func Hash(b byte) peertable.InfoHash {
	var ih peertable.InfoHash
	for i := range ih {
		ih[i] = b + byte(i)
	}
	return ih
}

var (
	v4 = peertable.Peer{Addr: netip.MustParseAddrPort("10.0.0.1:6881")}
	v6 = peertable.Peer{Addr: netip.MustParseAddrPort("[2001:db8::1]:6882"), Seeder: true}
)

// A sub collects a pool's events.
type sub struct {
	events chan conncache.Event
	cancel context.CancelFunc
	done   chan struct{}
}

func subscribe(t *testing.T, p conncache.Pool) *sub {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	s := &sub{events: make(chan conncache.Event, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		p.Subscribe(c, func(e *conncache.Event) {
			ev := *e
			ev.Records = slices.Clone(e.Records)
			select {
			case s.events <- ev:
			case <-c.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(wait):
			t.Error("Subscribe did not return after its context was cancelled")
		}
	})
	s.next(t, conncache.EventSubscribed)
	return s
}

// next returns the next event of kind k, skipping others.
func (s *sub) next(t *testing.T, k conncache.EventKind) conncache.Event {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case e := <-s.events:
			if e.Kind == k {
				return e
			}
		case <-deadline:
			t.Fatalf("no event of kind %d within %v", k, wait)
		}
	}
}

// load returns what p loads, as origin-less sorted records.
func load(t *testing.T, p conncache.Pool, since time.Time) []conncache.Record {
	t.Helper()
	var recs []conncache.Record
	if err := p.Load(ctx(t), since, func(o conncache.Origin, r conncache.Record) {
		if o == p.Origin() {
			t.Errorf("Load returned a record of the pool's own origin: %+v", r)
		}
		recs = append(recs, r)
	}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	sortRecords(recs)
	return recs
}

func sortRecords(recs []conncache.Record) {
	slices.SortFunc(recs, func(a, b conncache.Record) int {
		if c := slices.Compare(a.InfoHash[:], b.InfoHash[:]); c != 0 {
			return c
		}
		if a.Op != b.Op {
			return int(a.Op) - int(b.Op)
		}
		return a.Peer.Addr.Compare(b.Peer.Addr)
	})
}

func commit(t *testing.T, tx conncache.Tx) {
	t.Helper()
	if err := tx.Commit(ctx(t)); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if tx.Len() != 0 {
		t.Errorf("Len after Commit = %d, want 0", tx.Len())
	}
}

func testPutRemove(t *testing.T, open func(t *testing.T) conncache.Pool) {
	a, b := open(t), open(t)
	defer a.Close()
	defer b.Close()
	sa, sb := subscribe(t, a), subscribe(t, b)
	ih := Hash(1)

	tx := a.Begin()
	tx.Put(ih, v4)
	tx.Put(ih, v6)
	tx.SetCompleted(ih, 3)
	if tx.Len() != 3 {
		t.Errorf("Len = %d, want 3", tx.Len())
	}
	commit(t, tx)

	want := []conncache.Record{
		{Op: conncache.OpPut, InfoHash: ih, Peer: v4},
		{Op: conncache.OpPut, InfoHash: ih, Peer: v6},
		{Op: conncache.OpCompleted, InfoHash: ih, Completed: 3},
	}
	sortRecords(want)
	e := sb.next(t, conncache.EventBatch)
	if e.Origin != a.Origin() {
		t.Errorf("batch origin = %v, want %v", e.Origin, a.Origin())
	}
	sortRecords(e.Records)
	if !slices.Equal(e.Records, want) {
		t.Errorf("notified records = %+v, want %+v", e.Records, want)
	}
	if got := load(t, b, time.Now().Add(-time.Minute)); !slices.Equal(got, want) {
		t.Errorf("b.Load = %+v, want %+v", got, want)
	}
	if got := load(t, a, time.Now().Add(-time.Minute)); len(got) != 0 {
		t.Errorf("a.Load (own state only) = %+v, want nothing", got)
	}

	tx = a.Begin()
	tx.Remove(ih, v4)
	commit(t, tx)
	e = sb.next(t, conncache.EventBatch)
	if want := []conncache.Record{{Op: conncache.OpRemove, InfoHash: ih, Peer: v4}}; !slices.Equal(e.Records, want) {
		t.Errorf("notified records = %+v, want %+v", e.Records, want)
	}
	want = []conncache.Record{
		{Op: conncache.OpPut, InfoHash: ih, Peer: v6},
		{Op: conncache.OpCompleted, InfoHash: ih, Completed: 3},
	}
	if got := load(t, b, time.Now().Add(-time.Minute)); !slices.Equal(got, want) {
		t.Errorf("b.Load after Remove = %+v, want %+v", got, want)
	}

	// b's own batch reaches a but not b itself: a's next batch is the
	// first thing b sees.
	tx = b.Begin()
	tx.Put(ih, v4)
	commit(t, tx)
	if e := sa.next(t, conncache.EventBatch); e.Origin != b.Origin() {
		t.Errorf("a got a batch of origin %v, want %v", e.Origin, b.Origin())
	}
	tx = a.Begin()
	tx.Put(Hash(2), v4)
	commit(t, tx)
	if e := sb.next(t, conncache.EventBatch); e.Origin != a.Origin() || e.Records[0].InfoHash != Hash(2) {
		t.Errorf("b's next batch = %+v from %v, want a's put in Hash(2)", e.Records, e.Origin)
	}
}

func testReplace(t *testing.T, open func(t *testing.T) conncache.Pool) {
	a, b := open(t), open(t)
	defer a.Close()
	defer b.Close()
	sb := subscribe(t, b)
	ih := Hash(3)
	tx := a.Begin()
	tx.Put(ih, v4)
	tx.SetCompleted(ih, 1)
	commit(t, tx)
	sb.next(t, conncache.EventBatch)

	tx = a.Begin()
	tx.Replace(ih, []peertable.Peer{v6}, 5)
	tx.Replace(Hash(4), nil, 0)
	tx.Resync()
	commit(t, tx)
	sb.next(t, conncache.EventResync)
	want := []conncache.Record{
		{Op: conncache.OpPut, InfoHash: ih, Peer: v6},
		{Op: conncache.OpCompleted, InfoHash: ih, Completed: 5},
	}
	if got := load(t, b, time.Now().Add(-time.Minute)); !slices.Equal(got, want) {
		t.Errorf("b.Load after Replace = %+v, want %+v", got, want)
	}
}

func testPrune(t *testing.T, open func(t *testing.T) conncache.Pool) {
	a, b := open(t), open(t)
	defer a.Close()
	defer b.Close()
	tx := a.Begin()
	tx.Put(Hash(5), v4)
	tx.Put(Hash(6), v4)
	commit(t, tx)
	tx = b.Begin()
	tx.Put(Hash(5), v6)
	commit(t, tx)
	if err := a.Prune(ctx(t), func(ih peertable.InfoHash) bool { return ih == Hash(6) }); err != nil {
		t.Fatalf("Prune: %v", err)
	}
	want := []conncache.Record{{Op: conncache.OpPut, InfoHash: Hash(6), Peer: v4}}
	if got := load(t, b, time.Now().Add(-time.Minute)); !slices.Equal(got, want) {
		t.Errorf("b.Load after a.Prune = %+v, want %+v", got, want)
	}
	// b's state is not a's to prune.
	c := open(t)
	defer c.Close()
	if got := load(t, c, time.Now().Add(-time.Minute)); len(got) != 2 {
		t.Errorf("c.Load = %+v, want a's Hash(6) and b's Hash(5)", got)
	}
}

func testLoadSince(t *testing.T, open func(t *testing.T) conncache.Pool) {
	a, b := open(t), open(t)
	defer a.Close()
	defer b.Close()
	tx := a.Begin()
	tx.Put(Hash(7), v4)
	tx.SetCompleted(Hash(7), 2)
	commit(t, tx)
	// Peers published before since are skipped; counts are kept.
	want := []conncache.Record{{Op: conncache.OpCompleted, InfoHash: Hash(7), Completed: 2}}
	if got := load(t, b, time.Now().Add(time.Hour)); !slices.Equal(got, want) {
		t.Errorf("b.Load(since an hour ahead) = %+v, want %+v", got, want)
	}
}

func testLarge(t *testing.T, open func(t *testing.T) conncache.Pool) {
	a, b := open(t), open(t)
	defer a.Close()
	defer b.Close()
	sb := subscribe(t, b)
	const n = 5000 // several notification messages, several script calls
	tx := a.Begin()
	var peers []peertable.Peer
	for i := range n {
		p := peertable.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1000)}
		peers = append(peers, p)
		tx.Put(Hash(8), p)
	}
	commit(t, tx)
	got := 0
	for got < n {
		got += len(sb.next(t, conncache.EventBatch).Records)
	}
	if got != n {
		t.Errorf("notified %d records, want %d", got, n)
	}
	tx = a.Begin()
	tx.Replace(Hash(8), peers[:n/2], 0)
	commit(t, tx)
	if recs := load(t, b, time.Now().Add(-time.Minute)); len(recs) != n/2 {
		t.Errorf("b.Load after Replace with %d peers = %d records", n/2, len(recs))
	}
}

func testBroken(t *testing.T, open func(t *testing.T) conncache.Pool) {
	p := open(t)
	defer p.Close()
	o, ok := p.(Outage)
	if !ok {
		t.Skip("the pool does not implement Outage")
	}
	s := subscribe(t, o)
	o.Cut()
	s.next(t, conncache.EventBroken)
	tx := o.Begin()
	tx.Put(Hash(9), v4)
	if err := tx.Commit(ctx(t)); err == nil {
		t.Error("Commit during an outage = nil, want an error")
	}
	o.Restore()
	s.next(t, conncache.EventSubscribed)
	tx = o.Begin()
	tx.Put(Hash(9), v4)
	commit(t, tx)
}
