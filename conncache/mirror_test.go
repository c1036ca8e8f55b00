package conncache

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

// recorder is a Pool that keeps what is committed, for tests of the Mirror
// that need no store.
type recorder struct {
	origin Origin
	recs   []Record
}

func (r *recorder) Origin() Origin                 { return r.origin }
func (r *recorder) Begin() Tx                      { return &recTx{r: r} }
func (r *recorder) Ping(ctx context.Context) error { return nil }
func (r *recorder) Load(ctx context.Context, since time.Time, fn func(o Origin, r Record)) error {
	return nil
}
func (r *recorder) Subscribe(ctx context.Context, fn func(e *Event)) error {
	<-ctx.Done()
	return nil
}
func (r *recorder) Prune(ctx context.Context, keep func(ih peertable.InfoHash) bool) error {
	return nil
}
func (r *recorder) Close() error { return nil }

type recTx struct {
	r    *recorder
	recs []Record
}

func (t *recTx) Put(ih peertable.InfoHash, p peertable.Peer) {
	t.recs = append(t.recs, Record{Op: OpPut, InfoHash: ih, Peer: p})
}
func (t *recTx) Remove(ih peertable.InfoHash, p peertable.Peer) {
	t.recs = append(t.recs, Record{Op: OpRemove, InfoHash: ih, Peer: p})
}
func (t *recTx) SetCompleted(ih peertable.InfoHash, n uint32) {
	t.recs = append(t.recs, Record{Op: OpCompleted, InfoHash: ih, Completed: n})
}
func (t *recTx) Replace(ih peertable.InfoHash, peers []peertable.Peer, completed uint32) {}
func (t *recTx) Resync()                                                                 {}
func (t *recTx) Len() int                                                                { return len(t.recs) }
func (t *recTx) Commit(ctx context.Context) error {
	t.r.recs = append(t.r.recs, t.recs...)
	t.recs = nil
	return nil
}

func newTestMirror(tb testing.TB, maxPending int) (*Mirror, *recorder) {
	tb.Helper()
	local, err := peertable.New(peertable.Config{PeerLifetime: time.Minute})
	if err != nil {
		tb.Fatal(err)
	}
	r := &recorder{}
	return NewMirror(r, local, Config{PeerLifetime: time.Minute, MaxPending: maxPending}), r
}

func ihOf(i int) peertable.InfoHash {
	var ih peertable.InfoHash
	copy(ih[:], fmt.Sprintf("%020d", i))
	return ih
}

func peerOf(i int, v6 bool) peertable.Peer {
	if v6 {
		return peertable.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(i)}), uint16(1000+i))}
	}
	return peertable.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), uint16(1000+i))}
}

func TestChangedCoalesces(t *testing.T) {
	m, r := newTestMirror(t, 0)
	ih := ihOf(1)
	p4, p6 := peerOf(1, false), peerOf(2, true)
	m.Changed(ih, p4, peertable.ChangeAdded, peertable.Result{})
	m.Changed(ih, p4, peertable.ChangeNone, peertable.Result{})
	seeder := p4
	seeder.Seeder = true
	m.Changed(ih, seeder, peertable.ChangeRole, peertable.Result{Completed: true, Counts: peertable.Counts{Completed: 4}})
	m.Changed(ih, p6, peertable.ChangeAdded, peertable.Result{})
	m.Expired(ih, p6)
	if got := m.Stats().Pending; got != 3 {
		t.Errorf("Pending = %d, want 3 (two peers and a count)", got)
	}
	if !m.flush(context.Background()) {
		t.Fatal("flush failed")
	}
	want := map[Record]bool{
		{Op: OpPut, InfoHash: ih, Peer: seeder}:       true,
		{Op: OpRemove, InfoHash: ih, Peer: p6}:        true,
		{Op: OpCompleted, InfoHash: ih, Completed: 4}: true,
	}
	if len(r.recs) != len(want) {
		t.Errorf("committed %+v, want %d records", r.recs, len(want))
	}
	for _, rec := range r.recs {
		if !want[rec] {
			t.Errorf("committed unexpected %+v", rec)
		}
	}
	if r.recs[len(r.recs)-1].Op != OpCompleted {
		t.Errorf("last record %+v, want the count after the peers", r.recs[len(r.recs)-1])
	}
	if st := m.Stats(); st.Pending != 0 || st.Published != 3 {
		t.Errorf("Stats after flush = %+v, want Pending 0, Published 3", st)
	}
}

func TestChangedOverflow(t *testing.T) {
	m, _ := newTestMirror(t, 10)
	for i := range 15 {
		m.Changed(ihOf(1), peerOf(i, false), peertable.ChangeAdded, peertable.Result{})
	}
	st := m.Stats()
	if st.Pending != 10 || st.Dropped != 5 {
		t.Errorf("Stats = %+v, want Pending 10, Dropped 5", st)
	}
	// A known peer still updates in place when the log is full.
	m.Changed(ihOf(1), peerOf(3, false), peertable.ChangeRemoved, peertable.Result{})
	if got := m.Stats().Dropped; got != 5 {
		t.Errorf("Dropped after updating a queued peer = %d, want 5", got)
	}
	m.republish.Store(false)
	m.sync(context.Background())
	if m.republish.Load() || m.Stats().Pending != 0 || m.Stats().Republishes != 1 {
		t.Errorf("after sync on a full log: republish pending %v, Stats %+v; want a republish and an empty log", m.republish.Load(), m.Stats())
	}
}

func TestChangedDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	m, _ := newTestMirror(t, 0)
	const n = 1000
	res := peertable.Result{}
	var ihs [10]peertable.InfoHash
	for i := range ihs {
		ihs[i] = ihOf(i)
	}
	for i := range n {
		m.Changed(ihs[i%10], peerOf(i, i%2 == 0), peertable.ChangeAdded, res)
	}
	m.flush(context.Background())
	i := 0
	if a := testing.AllocsPerRun(10*n, func() {
		m.Changed(ihs[i%10], peerOf(i%n, i%2 == 0), peertable.ChangeRefresh, res)
		i++
	}); a != 0 {
		t.Errorf("Changed allocated %v times per call, want 0", a)
	}
}

func BenchmarkChanged(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			m, _ := newTestMirror(b, 0)
			ihs := make([]peertable.InfoHash, 64)
			for i := range ihs {
				ihs[i] = ihOf(i)
			}
			peers := make([]peertable.Peer, n)
			for i := range peers {
				peers[i] = peerOf(i, false)
			}
			res := peertable.Result{}
			for i := range n {
				m.Changed(ihs[i%64], peers[i], peertable.ChangeAdded, res)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				m.Changed(ihs[i%64], peers[i%n], peertable.ChangeRefresh, res)
				i++
			}
		})
		b.Run(fmt.Sprintf("peers=%d/parallel", n), func(b *testing.B) {
			m, _ := newTestMirror(b, 0)
			peers := make([]peertable.Peer, n)
			for i := range peers {
				peers[i] = peerOf(i, false)
			}
			res := peertable.Result{}
			for i := range n {
				m.Changed(ihOf(i%64), peers[i], peertable.ChangeAdded, res)
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(seq.Add(1)) * 7919
				ih := ihOf(i % 64)
				for pb.Next() {
					m.Changed(ih, peers[i%n], peertable.ChangeRefresh, res)
					i++
				}
			})
		})
	}
}
