package conncache_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/conncache/conncachetest"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

func TestMemoryConformance(t *testing.T) {
	stores := make(map[*testing.T]*conncachetest.Store)
	conncachetest.Run(t, func(t *testing.T) conncache.Pool {
		s := stores[t]
		if s == nil {
			s = conncachetest.NewStore()
			stores[t] = s
		}
		return s.Open()
	})
}

// proc is one tracker process over a memory store.
type proc struct {
	pool   *conncachetest.MemoryPool
	local  *peertable.Table
	mirror *conncache.Mirror
	tr     *tracker.Tracker
}

func startProc(t *testing.T, s *conncachetest.Store) *proc {
	t.Helper()
	cfg := conncache.Config{
		PeerLifetime: time.Minute,
		SyncInterval: 10 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	p := &proc{pool: s.Open()}
	var err error
	p.local, err = peertable.New(peertable.Config{
		PeerLifetime: cfg.PeerLifetime,
		OnExpire:     func(ih peertable.InfoHash, pr peertable.Peer) { p.mirror.Expired(ih, pr) },
	})
	if err != nil {
		t.Fatal(err)
	}
	p.mirror = conncache.NewMirror(p.pool, p.local, cfg)
	p.tr, err = tracker.New(tracker.Config{}, p.local)
	if err != nil {
		t.Fatal(err)
	}
	p.tr.SetHooks(tracker.Hooks{Remote: p.mirror.Remote(), Mirror: p.mirror})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.mirror.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Mirror.Run did not return after its context was cancelled")
		}
	})
	return p
}

func (p *proc) announce(t *testing.T, ih peertable.InfoHash, port uint16, ev peertable.Event) {
	t.Helper()
	req := tracker.AnnounceRequest{InfoHash: ih, Addr: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), port), Event: ev, Left: 1, NumWant: 0}
	if _, err := p.tr.Announce(&req, nil); err != nil {
		t.Fatal(err)
	}
}

func ports(tb *peertable.Table, ih peertable.InfoHash) []uint16 {
	var out []uint16
	for _, p := range tb.AppendPeers(ih, nil) {
		out = append(out, p.Addr.Port())
	}
	slices.Sort(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not so within 10s", what)
		}
	}
}

// TestMirrorRecovers checks both recoveries: a process whose subscription
// broke reloads what it missed, removals included; a process whose
// writes failed republishes and the others reload it.
func TestMirrorRecovers(t *testing.T) {
	s := conncachetest.NewStore()
	a, b := startProc(t, s), startProc(t, s)
	ih := conncachetest.Hash(1)
	a.announce(t, ih, 1, peertable.EventStarted)
	a.announce(t, ih, 2, peertable.EventStarted)
	waitFor(t, "B sees A's peers", func() bool { return slices.Equal(ports(b.mirror.Remote(), ih), []uint16{1, 2}) })

	// B misses A's batches while its subscription is broken.
	reloads := b.mirror.Stats().Reloads
	b.pool.Cut()
	a.announce(t, ih, 1, peertable.EventStopped)
	a.announce(t, ih, 3, peertable.EventStarted)
	waitFor(t, "A publishes during B's outage", func() bool { return a.mirror.Stats().Pending == 0 })
	if got := ports(b.mirror.Remote(), ih); !slices.Equal(got, []uint16{1, 2}) {
		t.Errorf("B's copy during its outage = %v, want the old [1 2]", got)
	}
	b.pool.Restore()
	waitFor(t, "B reloads A's peers", func() bool { return slices.Equal(ports(b.mirror.Remote(), ih), []uint16{2, 3}) })
	if st := b.mirror.Stats(); st.Reloads <= reloads {
		t.Errorf("B's Reloads = %d, want more than %d", st.Reloads, reloads)
	}

	// A's writes fail; its changes reach B once A republishes.
	a.pool.Cut()
	a.announce(t, ih, 2, peertable.EventStopped)
	a.announce(t, ih, 4, peertable.EventStarted)
	waitFor(t, "A notices the outage", func() bool { return !a.mirror.Stats().Healthy })
	a.pool.Restore()
	waitFor(t, "B reloads A's republished peers", func() bool { return slices.Equal(ports(b.mirror.Remote(), ih), []uint16{3, 4}) })
	// Whether A's batch failed or went out just after the cut ended, A
	// republishes once its subscription is back.
	waitFor(t, "A republishes after its outage", func() bool { return a.mirror.Stats().Republishes >= 2 })
	waitFor(t, "A healthy", func() bool { return a.mirror.Stats().Healthy })
	if st := a.mirror.Stats(); st.Errors == 0 {
		t.Errorf("A's Stats = %+v, want errors counted", st)
	}
}
