package private

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/chihaya/chihaya/flush"
	"github.com/chihaya/chihaya/internal/testenv"
	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

const (
	none      = peertable.EventNone
	started   = peertable.EventStarted
	completed = peertable.EventCompleted
	stopped   = peertable.EventStopped
)

func TestStep(t *testing.T) {
	tests := []struct {
		name     string
		prev     baseline
		found    bool
		r        report
		wantNext baseline
		wantKeep bool
		up, down uint64
		snatch   bool
	}{
		{"first sight started credits all", baseline{}, false, report{up: 5, down: 7, left: 1, event: started}, baseline{up: 5, down: 7}, true, 5, 7, false},
		{"first sight started at zero", baseline{}, false, report{left: 1, event: started}, baseline{}, true, 0, 0, false},
		{"first sight plain sets baseline only", baseline{}, false, report{up: 500, down: 900, left: 1}, baseline{up: 500, down: 900}, true, 0, 0, false},
		{"first sight stopped keeps nothing", baseline{}, false, report{up: 500, down: 900, event: stopped}, baseline{up: 500, down: 900}, false, 0, 0, false},
		{"first sight completed snatches", baseline{}, false, report{up: 1, down: 100, event: completed}, baseline{up: 1, down: 100, snatched: true}, true, 0, 0, true},
		{"first sight completed with left is no snatch", baseline{}, false, report{down: 100, left: 3, event: completed}, baseline{down: 100}, true, 0, 0, false},
		{"growth", baseline{up: 10, down: 20}, true, report{up: 15, down: 50, left: 1}, baseline{up: 15, down: 50}, true, 5, 30, false},
		{"no change", baseline{up: 10, down: 20}, true, report{up: 10, down: 20, left: 1}, baseline{up: 10, down: 20}, true, 0, 0, false},
		{"reset without started credits nothing", baseline{up: 10, down: 20}, true, report{up: 3, down: 4, left: 1}, baseline{up: 3, down: 4}, true, 0, 0, false},
		{"reset of one counter only", baseline{up: 10, down: 20}, true, report{up: 3, down: 25, left: 1}, baseline{up: 3, down: 25}, true, 0, 5, false},
		{"reset with started counts from zero", baseline{up: 10, down: 20}, true, report{up: 3, down: 4, left: 1, event: started}, baseline{up: 3, down: 4}, true, 3, 4, false},
		{"started again above baseline is an update", baseline{up: 10, down: 20}, true, report{up: 12, down: 20, left: 1, event: started}, baseline{up: 12, down: 20}, true, 2, 0, false},
		{"started again equal (other family)", baseline{up: 10, down: 20}, true, report{up: 10, down: 20, left: 1, event: started}, baseline{up: 10, down: 20}, true, 0, 0, false},
		{"stopped credits then forgets", baseline{up: 10, down: 20}, true, report{up: 11, down: 22, event: stopped}, baseline{up: 11, down: 22}, false, 1, 2, false},
		{"stopped after reset credits nothing", baseline{up: 10, down: 20}, true, report{up: 1, down: 2, event: stopped}, baseline{up: 1, down: 2}, false, 0, 0, false},
		{"completed snatches once", baseline{up: 10, down: 20}, true, report{up: 10, down: 30, event: completed}, baseline{up: 10, down: 30, snatched: true}, true, 0, 10, true},
		{"completed again does not", baseline{up: 10, down: 30, snatched: true}, true, report{up: 10, down: 30, event: completed}, baseline{up: 10, down: 30, snatched: true}, true, 0, 0, false},
		{"snatched survives updates", baseline{up: 10, down: 30, snatched: true}, true, report{up: 40, down: 30}, baseline{up: 40, down: 30, snatched: true}, true, 30, 0, false},
		{"huge values", baseline{up: 1, down: 0}, true, report{up: math.MaxUint64, down: math.MaxUint64, left: 1}, baseline{up: math.MaxUint64, down: math.MaxUint64}, true, math.MaxUint64 - 1, math.MaxUint64, false},
		{"from huge to zero", baseline{up: math.MaxUint64, down: math.MaxUint64}, true, report{left: 1}, baseline{}, true, 0, 0, false},
	}
	for _, tt := range tests {
		next, keep, up, down, snatch := step(tt.prev, tt.found, tt.r)
		if next != tt.wantNext || keep != tt.wantKeep || up != tt.up || down != tt.down || snatch != tt.snatch {
			t.Errorf("%s: step(%+v, %v, %+v) = %+v, %v, %d, %d, %v; want %+v, %v, %d, %d, %v",
				tt.name, tt.prev, tt.found, tt.r, next, keep, up, down, snatch,
				tt.wantNext, tt.wantKeep, tt.up, tt.down, tt.snatch)
		}
	}
}

// TestStepNeverOverCredits checks every combination of small values and
// events: a credit never exceeds what was reported, and with a baseline
// and no started event never exceeds the growth over it.
func TestStepNeverOverCredits(t *testing.T) {
	events := []peertable.Event{none, completed, started, stopped}
	for _, found := range []bool{false, true} {
		for last := uint64(0); last < 4; last++ {
			for rep := uint64(0); rep < 4; rep++ {
				for _, ev := range events {
					for _, snatched := range []bool{false, true} {
						prev := baseline{up: last, down: last, snatched: snatched && found}
						_, _, up, down, snatch := step(prev, found, report{up: rep, down: rep, event: ev})
						if up > rep || down > rep {
							t.Errorf("step(%+v, %v, %d, %v) credits %d, %d > reported %d", prev, found, rep, ev, up, down, rep)
						}
						if found && ev != started && up != max(rep, last)-last {
							t.Errorf("step(%+v, %v, %d, %v) credits %d, want %d", prev, found, rep, ev, up, max(rep, last)-last)
						}
						if !found && ev != started && up != 0 {
							t.Errorf("step(none, %d, %v) credits %d, want 0", rep, ev, up)
						}
						if snatch && (prev.snatched || ev != completed) {
							t.Errorf("step(%+v, %v, %d, %v) snatched", prev, found, rep, ev)
						}
					}
				}
			}
		}
	}
}

// announce is a scripted announce for the Accountant.
type announce struct {
	user, torrent uint32
	peer          byte // peer id's first byte
	key           uint32
	v6            bool
	up, down      uint64
	left          uint64
	event         peertable.Event
}

func (a announce) request() *tracker.AnnounceRequest {
	addr := netip.MustParseAddrPort("192.0.2.1:6881")
	if a.v6 {
		addr = netip.MustParseAddrPort("[2001:db8::1]:6881")
	}
	req := &tracker.AnnounceRequest{Addr: addr, Uploaded: a.up, Downloaded: a.down, Left: a.left, Event: a.event, Key: a.key}
	req.PeerID[0] = a.peer
	req.InfoHash[0] = byte(a.torrent) // hashes do not matter to accounting
	return req
}

func newTestAccountant(t *testing.T, s flush.Store, cfg AccountantConfig) *Accountant {
	t.Helper()
	a, err := NewAccountant(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAccountScript(t *testing.T) {
	s := newMemStore()
	a := newTestAccountant(t, s, AccountantConfig{})
	script := []announce{
		// User 1 on torrent 10: starts, then announces over IPv6 too,
		// with the same peer id and key (one client, two families).
		{user: 1, torrent: 10, peer: 1, key: 7, up: 0, down: 0, left: 100, event: started},
		{user: 1, torrent: 10, peer: 1, key: 7, v6: true, up: 0, down: 0, left: 100, event: started},
		{user: 1, torrent: 10, peer: 1, key: 7, up: 10, down: 60, left: 40},
		{user: 1, torrent: 10, peer: 1, key: 7, v6: true, up: 10, down: 60, left: 40},
		{user: 1, torrent: 10, peer: 1, key: 7, up: 20, down: 100, left: 0, event: completed},
		{user: 1, torrent: 10, peer: 1, key: 7, v6: true, up: 20, down: 100, left: 0, event: completed},
		// User 2, a client the tracker first sees mid-session (after a
		// restart): the baseline is set without credit.
		{user: 2, torrent: 10, peer: 2, key: 1, up: 5000, down: 5000, left: 0},
		{user: 2, torrent: 10, peer: 2, key: 1, up: 5500, down: 5000, left: 0},
		// User 2 on torrent 11 reached under a v1 and a v2 hash: the
		// Grant maps both to torrent 11, so it is one identity.
		{user: 2, torrent: 11, peer: 3, key: 2, up: 0, down: 0, left: 9, event: started},
		{user: 2, torrent: 11, peer: 3, key: 2, up: 0, down: 0, left: 9, event: started},
		{user: 2, torrent: 11, peer: 3, key: 2, up: 30, down: 9, left: 0, event: completed},
		{user: 2, torrent: 11, peer: 3, key: 2, up: 30, down: 9, left: 0, event: completed},
		// The same user and torrent from a second client (other peer
		// id): a second identity, a second snatch.
		{user: 2, torrent: 11, peer: 4, key: 3, up: 1, down: 9, left: 0, event: started},
		{user: 2, torrent: 11, peer: 4, key: 3, up: 1, down: 9, left: 0, event: completed},
		// A client that restarts without started: nothing for the reset.
		{user: 3, torrent: 12, peer: 5, key: 4, up: 0, down: 0, left: 1, event: started},
		{user: 3, torrent: 12, peer: 5, key: 4, up: 100, down: 0, left: 1},
		{user: 3, torrent: 12, peer: 5, key: 4, up: 10, down: 0, left: 1},
		{user: 3, torrent: 12, peer: 5, key: 4, up: 25, down: 0, left: 1},
		// It stops, then restarts properly from zero.
		{user: 3, torrent: 12, peer: 5, key: 4, up: 26, down: 0, left: 1, event: stopped},
		{user: 3, torrent: 12, peer: 5, key: 4, up: 26, down: 0, left: 1, event: stopped},
		{user: 3, torrent: 12, peer: 5, key: 4, up: 4, down: 0, left: 1, event: started},
	}
	for _, an := range script {
		a.Account(tracker.Grant{User: an.user, Torrent: an.torrent}, an.request())
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ut, users := s.totals()
	wantUT := map[utKey]flush.UserTorrentDelta{
		{1, 10}: {User: 1, Torrent: 10, Uploaded: 20, Downloaded: 100, Snatches: 1},
		{2, 10}: {User: 2, Torrent: 10, Uploaded: 500, Downloaded: 0},
		{2, 11}: {User: 2, Torrent: 11, Uploaded: 31, Downloaded: 18, Snatches: 2},
		{3, 12}: {User: 3, Torrent: 12, Uploaded: 100 + 15 + 1 + 4},
	}
	for k, w := range wantUT {
		if g := ut[k]; g != w {
			t.Errorf("user-torrent %v = %+v, want %+v", k, g, w)
		}
	}
	if len(ut) != len(wantUT) {
		t.Errorf("got %d user-torrent rows, want %d: %+v", len(ut), len(wantUT), ut)
	}
	wantUsers := map[uint32]flush.UserDelta{
		1: {User: 1, Uploaded: 20, Downloaded: 100, Snatches: 1},
		2: {User: 2, Uploaded: 531, Downloaded: 18, Snatches: 2},
		3: {User: 3, Uploaded: 120},
	}
	for k, w := range wantUsers {
		if g := users[k]; g != w {
			t.Errorf("user %d = %+v, want %+v", k, g, w)
		}
	}
	if st := a.Stats(); st.Flushes != 1 || st.PendingKeys != 0 || st.Errors != 0 || st.Rows != 7 {
		t.Errorf("Stats() = %+v, want 1 flush of 7 rows, nothing pending", st)
	}
}

func TestAccountBatchIsSorted(t *testing.T) {
	s := newMemStore()
	a := newTestAccountant(t, s, AccountantConfig{})
	for u := uint32(50); u > 0; u-- {
		for tr := uint32(5); tr > 0; tr-- {
			a.Account(tracker.Grant{User: u, Torrent: tr}, announce{peer: 1, up: 1, event: started}.request())
		}
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := s.attempts[0]
	if len(b.Torrents) != 250 || len(b.Users) != 50 {
		t.Fatalf("batch has %d user-torrents and %d users, want 250 and 50", len(b.Torrents), len(b.Users))
	}
	for i := 1; i < len(b.Torrents); i++ {
		p, c := b.Torrents[i-1], b.Torrents[i]
		if p.User > c.User || p.User == c.User && p.Torrent >= c.Torrent {
			t.Fatalf("Torrents[%d..%d] = %v, %v: not sorted", i-1, i, p, c)
		}
	}
	for i, u := range b.Users {
		if u.User != uint32(i+1) || u.Uploaded != 5 {
			t.Errorf("Users[%d] = %+v, want user %d uploaded 5", i, u, i+1)
		}
	}
}

// flushLoop flushes a over and over in a goroutine, as a busy Run would,
// until the function it returns is called; that function waits for the
// loop to end and returns the first Flush error, if any.
func flushLoop(a *Accountant) (stop func() error) {
	done := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		for {
			select {
			case <-done:
				flushed <- nil
				return
			default:
			}
			if err := a.Flush(context.Background()); err != nil {
				flushed <- err
				return
			}
		}
	}()
	return func() error {
		close(done)
		return <-flushed
	}
}

// TestAccountConcurrent accounts from many goroutines while flushing and
// checks that every byte arrives exactly once.
func TestAccountConcurrent(t *testing.T) {
	s := newMemStore()
	a := newTestAccountant(t, s, AccountantConfig{})
	const (
		workers = 8
		users   = 20
		rounds  = 200
	)
	var wg sync.WaitGroup
	stopFlushing := flushLoop(a)
	for w := range workers {
		wg.Go(func() {
			for u := range uint32(users) {
				g := tracker.Grant{User: u, Torrent: uint32(w)}
				an := announce{peer: byte(w), key: u, left: 1, event: started}
				a.Account(g, an.request())
			}
			for r := range uint64(rounds) {
				for u := range uint32(users) {
					g := tracker.Grant{User: u, Torrent: uint32(w)}
					an := announce{peer: byte(w), key: u, up: (r + 1) * 3, down: r + 1, left: 1, v6: r%2 == 0}
					a.Account(g, an.request())
				}
			}
		})
	}
	wg.Wait()
	if err := stopFlushing(); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, tot := s.totals()
	for u := range uint32(users) {
		want := flush.UserDelta{User: u, Uploaded: workers * rounds * 3, Downloaded: workers * rounds}
		if got := tot[u]; got != want {
			t.Errorf("user %d = %+v, want %+v", u, got, want)
		}
	}
	// Every attempt of a sequence number carried the same batch, and
	// numbers were used in order without gaps.
	for i, b := range s.attempts {
		if b.Seq != uint64(i+1) {
			t.Fatalf("attempt %d has seq %d, want %d", i, b.Seq, i+1)
		}
	}
}

// TestAccountantRetriesSameBatch runs the Accountant against a store that
// fails, including once after applying (a lost COMMIT reply), and checks
// that each sequence number is retried unchanged, new deltas wait for the
// next one, and nothing is applied twice.
func TestAccountantRetriesSameBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		a := newTestAccountant(t, s, AccountantConfig{Interval: 5 * time.Second, MaxBackoff: 20 * time.Second})
		cancel, wait := testenv.Background(a.Run)

		g := tracker.Grant{User: 1, Torrent: 2}
		a.Account(g, announce{peer: 1, up: 10, left: 1, event: started}.request())

		// Fail the next five attempts; the third of them commits before
		// failing.
		failures := 0
		s.setFail(func(op string) (bool, error) {
			failures++
			if failures > 5 {
				return true, nil
			}
			return failures == 3, errInjected
		})
		time.Sleep(5*time.Second + 400*time.Millisecond) // first attempt at 5s fails; the next waits 0.5s to 1s
		synctest.Wait()
		a.Account(g, announce{peer: 1, up: 25, left: 1}.request()) // +15 for the next batch
		if st := a.Stats(); st.Errors != 1 || st.PendingKeys != 2 || st.Backlog == 0 {
			t.Errorf("after a failure Stats() = %+v, want 1 error, 2 pending keys, a backlog", st)
		}
		time.Sleep(10 * time.Minute) // retries with backoff, then success
		synctest.Wait()

		ut, _ := s.totals()
		if got := ut[utKey{1, 2}].Uploaded; got != 25 {
			t.Errorf("uploaded = %d, want 25 (10 once, then 15)", got)
		}
		var seqs []uint64
		for _, b := range s.attempts {
			seqs = append(seqs, b.Seq)
			if b.Seq == 1 && (len(b.Torrents) != 1 || b.Torrents[0].Uploaded != 10) {
				t.Errorf("seq 1 attempt carried %+v, want the frozen +10", b.Torrents)
			}
			if b.Seq == 2 && (len(b.Torrents) != 1 || b.Torrents[0].Uploaded != 15) {
				t.Errorf("seq 2 attempt carried %+v, want +15", b.Torrents)
			}
		}
		if want := []uint64{1, 1, 1, 1, 1, 1, 2}; fmt.Sprint(seqs) != fmt.Sprint(want) {
			t.Errorf("attempted sequence numbers %v, want %v", seqs, want)
		}
		st := a.Stats()
		if st.Errors != 5 || st.Flushes != 2 || st.PendingKeys != 0 || st.Backlog != 0 || st.LastSuccess.IsZero() {
			t.Errorf("Stats() = %+v, want 5 errors, 2 flushes, nothing pending", st)
		}
		cancel()
		if err := wait(); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}

func TestAccountantBackoffIsCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		a := newTestAccountant(t, s, AccountantConfig{Interval: time.Second, MaxBackoff: 8 * time.Second})
		s.setFail(func(string) (bool, error) { return false, errInjected })
		a.Account(tracker.Grant{User: 1, Torrent: 1}, announce{up: 1, event: started}.request())
		cancel, wait := testenv.Background(a.Run)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		// With waits of at least MaxBackoff/2 once capped, at most about
		// 600/4 attempts fit in ten minutes; without a cap, about ten.
		n := a.Stats().Errors
		if n < 600/8 || n > 600/4+5 {
			t.Errorf("%d attempts in 10 minutes, want between %d and %d", n, 600/8, 600/4+5)
		}
		cancel()
		if err := wait(); err == nil {
			t.Error("Run = nil after a failing final flush, want an error")
		}
	})
}

func TestAccountantFinalFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		a := newTestAccountant(t, s, AccountantConfig{Interval: time.Minute})
		cancel, wait := testenv.Background(a.Run)
		a.Account(tracker.Grant{User: 4, Torrent: 4}, announce{up: 9, event: started}.request())
		time.Sleep(time.Second)
		cancel()
		if err := wait(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		_, users := s.totals()
		if users[4].Uploaded != 9 {
			t.Errorf("after shutdown user 4 uploaded %d, want 9", users[4].Uploaded)
		}
	})
}

func TestAccountantFinalFlushRetriesThenNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		a := newTestAccountant(t, s, AccountantConfig{Interval: time.Second, ShutdownTimeout: time.Minute})
		fail := true
		s.setFail(func(string) (bool, error) {
			if fail {
				return false, errInjected
			}
			return true, nil
		})
		cancel, wait := testenv.Background(a.Run)
		g := tracker.Grant{User: 4, Torrent: 4}
		a.Account(g, announce{up: 9, event: started}.request())
		time.Sleep(2 * time.Second) // seq 1 frozen and failing
		a.Account(g, announce{up: 10}.request())
		cancel()
		time.Sleep(5 * time.Second)
		s.mu.Lock()
		fail = false
		s.mu.Unlock()
		if err := wait(); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		_, users := s.totals()
		if users[4].Uploaded != 10 {
			t.Errorf("after shutdown user 4 uploaded %d, want 10", users[4].Uploaded)
		}
	})
}

func TestBaselineExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newMemStore()
		a := newTestAccountant(t, s, AccountantConfig{Interval: time.Second, PeerLifetime: time.Minute})
		cancel, wait := testenv.Background(a.Run)
		g := tracker.Grant{User: 1, Torrent: 1}
		a.Account(g, announce{up: 0, left: 1, event: started}.request())
		a.Account(g, announce{up: 10, left: 1}.request())
		time.Sleep(3 * time.Minute)
		a.Account(g, announce{up: 50, left: 1}.request()) // baseline gone: no credit
		a.Account(g, announce{up: 60, left: 1}.request())
		time.Sleep(5 * time.Second)
		cancel()
		if err := wait(); err != nil {
			t.Fatal(err)
		}
		_, users := s.totals()
		if users[1].Uploaded != 20 {
			t.Errorf("uploaded %d, want 20 (10, then nothing for the expired baseline, then 10)", users[1].Uploaded)
		}
		n := 0
		for i := range a.shards {
			ids := &a.shards[i].ids
			for j, s := range ids.slots {
				if ids.isLive(j) && s.hasBase {
					n++
				}
			}
		}
		if n != 1 {
			t.Errorf("%d baselines kept, want 1", n)
		}
	})
}

// TestCreditOutlivesBaseline checks that an identity whose baseline goes,
// by expiry or by stopped, keeps the credit it had not yet sent, and that
// the next announce after that is a first sight.
func TestCreditOutlivesBaseline(t *testing.T) {
	s := newMemStore()
	a := newTestAccountant(t, s, AccountantConfig{PeerLifetime: time.Minute})
	g := tracker.Grant{User: 1, Torrent: 1}
	a.Account(g, announce{peer: 1, left: 1, event: started}.request())
	a.Account(g, announce{peer: 1, up: 10, left: 1}.request())
	a.Account(g, announce{peer: 2, left: 1, event: started}.request())
	a.Account(g, announce{peer: 2, up: 7, left: 1}.request())
	a.Account(g, announce{peer: 2, up: 8, left: 1, event: stopped}.request())
	a.Account(g, announce{peer: 3, left: 1, event: started}.request())
	if st := a.Stats(); st.PendingKeys != 1 {
		t.Errorf("PendingKeys = %d with two identities on one pair, want 1", st.PendingKeys)
	}
	a.now.Add(120)
	a.expire()
	if got := a.shards[shardOf(1, 1)].ids.live; got != 2 {
		t.Errorf("%d entries after expiry, want 2 (the identities with credit)", got)
	}
	a.Account(g, announce{peer: 1, up: 50, left: 1}.request()) // no baseline: no credit
	a.Account(g, announce{peer: 2, up: 3, left: 1, event: started}.request())
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, users := s.totals()
	if got := users[1].Uploaded; got != 10+8+3 {
		t.Errorf("uploaded %d, want %d", got, 10+8+3)
	}
	a.now.Add(120)
	a.expire()
	if got := a.shards[shardOf(1, 1)].ids.live; got != 0 {
		t.Errorf("%d entries after the batch and expiry, want 0", got)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(s.attempts); n != 1 {
		t.Errorf("%d batches, want 1", n)
	}
}

// TestAccountConcurrentFreeze accounts for enough identities of one shard
// that freeze takes them in several chunks while announces go on, and
// checks that every byte arrives exactly once. Each announce is
// prefetched first, as the tracker does, and so is one of the next
// worker's, whose shard that worker is growing meanwhile: Prefetch reads
// the arrays that a rehash replaces, and must neither race with it (the
// suite runs under -race) nor change what is counted.
func TestAccountConcurrentFreeze(t *testing.T) {
	s := newMemStore()
	a := newTestAccountant(t, s, AccountantConfig{})
	const (
		workers = 4
		peers   = 3 * walkChunk
		rounds  = 10
	)
	stopFlushing := flushLoop(a)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			g := tracker.Grant{User: 1, Torrent: uint32(w)}
			req := &tracker.AnnounceRequest{Left: 1}
			for r := range uint64(rounds + 1) {
				req.Event = none
				if r == 0 {
					req.Event = started
				}
				req.Uploaded = r * 2
				for p := range peers {
					binary.BigEndian.PutUint16(req.PeerID[:], uint16(p))
					a.Prefetch(tracker.Grant{User: 1, Torrent: uint32(w+1) % workers}, req)
					a.Prefetch(g, req)
					a.Account(g, req)
				}
			}
		})
	}
	wg.Wait()
	if err := stopFlushing(); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	ut, users := s.totals()
	for w := range uint32(workers) {
		if got, want := ut[utKey{1, w}].Uploaded, uint64(peers*rounds*2); got != want {
			t.Errorf("torrent %d uploaded %d, want %d", w, got, want)
		}
	}
	if got, want := users[1].Uploaded, uint64(workers*peers*rounds*2); got != want {
		t.Errorf("user uploaded %d, want %d", got, want)
	}
	for i, b := range s.attempts {
		if b.Seq != uint64(i+1) {
			t.Fatalf("attempt %d has seq %d, want %d", i, b.Seq, i+1)
		}
	}
	if st := a.Stats(); st.PendingKeys != 0 {
		t.Errorf("PendingKeys = %d after the last flush, want 0", st.PendingKeys)
	}
}

func TestAccountDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	a := newTestAccountant(t, newMemStore(), AccountantConfig{})
	g := tracker.Grant{User: 1, Torrent: 1}
	req := announce{peer: 1, left: 1, event: started}.request()
	a.Account(g, req)
	req.Event = none
	if n := testing.AllocsPerRun(1000, func() {
		req.Uploaded++ // a known identity, a known pending key
		a.Prefetch(g, req)
		a.Account(g, req)
	}); n != 0 {
		t.Errorf("Prefetch and Account allocated %v times per call, want 0", n)
	}
}

func BenchmarkAccount(b *testing.B) {
	a, err := NewAccountant(newMemStore(), AccountantConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := announce{peer: 1, left: 1}.request()
		g := tracker.Grant{User: rand.Uint32(), Torrent: 1}
		for pb.Next() {
			req.Uploaded++
			a.Account(g, req)
		}
	})
}

func TestAccountantLogsFailingOnce(t *testing.T) {
	s := newMemStore()
	logger, logs := testenv.Logger()
	a, err := NewAccountant(s, AccountantConfig{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	g := tracker.Grant{User: 1, Torrent: 2}
	a.Account(g, &tracker.AnnounceRequest{Uploaded: 5, Left: 1, Event: started})
	s.setFail(func(string) (bool, error) { return false, errInjected })
	for range 3 {
		if err := a.Flush(ctx); err == nil {
			t.Fatal("Flush with a failing store succeeded")
		}
	}
	s.setFail(nil)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	lines := logs.Lines()
	if len(lines) != 2 ||
		!strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], "accounting flush failing") ||
		!strings.Contains(lines[1], "level=INFO") || !strings.Contains(lines[1], "accounting flush recovered") ||
		!strings.Contains(lines[1], "failed_attempts=3") {
		t.Errorf("log = %q, want one failing record and one recovered after 3 attempts", lines)
	}
}
