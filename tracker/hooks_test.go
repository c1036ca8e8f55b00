package tracker

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/chihaya/chihaya/peertable"
)

// keyAuth admits passkey "good" as user 7 on torrent 9.
type keyAuth struct{ seen [][]byte }

var errBadKey = Refusal("unknown passkey")

func (a *keyAuth) Authorize(passkey []byte, req *AnnounceRequest) (Grant, error) {
	a.seen = append(a.seen, slices.Clone(passkey))
	if string(passkey) != "good" {
		return Grant{}, errBadKey
	}
	return Grant{User: 7, Torrent: 9}, nil
}

type recorder struct {
	mu      sync.Mutex
	grants  []Grant
	calls   []string // "prefetch" and "account", in order
	changes []peertable.Change
}

func (r *recorder) Prefetch(g Grant, req *AnnounceRequest) {
	r.mu.Lock()
	r.calls = append(r.calls, "prefetch")
	r.mu.Unlock()
}

func (r *recorder) Account(g Grant, req *AnnounceRequest) {
	r.mu.Lock()
	r.grants = append(r.grants, g)
	r.calls = append(r.calls, "account")
	r.mu.Unlock()
}

func (r *recorder) Changed(ih peertable.InfoHash, p peertable.Peer, ch peertable.Change, res peertable.Result) {
	r.mu.Lock()
	r.changes = append(r.changes, ch)
	r.mu.Unlock()
}

func TestPasskey(t *testing.T) {
	for in, want := range map[string]string{
		"/abc/announce": "abc", "/abc": "abc", "/announce": "announce", "": "", "/": "", "/k?x=1": "k", "abc/announce": "abc",
	} {
		if got := string(Passkey([]byte(in))); got != want {
			t.Errorf("Passkey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPrivateHooks(t *testing.T) {
	tr := newTracker(t, Config{})
	auth, rec := &keyAuth{}, &recorder{}
	tr.SetHooks(Hooks{Auth: auth, Accountant: rec, Mirror: rec})
	req := AnnounceRequest{InfoHash: peertable.InfoHash{3}, Addr: netip.MustParseAddrPort("192.0.2.1:6881"), Left: 10}

	req.URLData = []byte("/bad/announce")
	if _, err := tr.Announce(&req, nil); err != errBadKey {
		t.Fatalf("bad passkey: err %v, want %v", err, errBadKey)
	}
	if c := tr.Scrape(req.InfoHash); c != (peertable.Counts{}) {
		t.Fatalf("a refused announce reached the table: %+v", c)
	}
	req.URLData = []byte("/good/announce")
	if _, err := tr.Announce(&req, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Announce(&req, nil); err != nil { // a re-announce: no change to mirror
		t.Fatal(err)
	}
	if got := [][]byte{[]byte("bad"), []byte("good"), []byte("good")}; !slices.EqualFunc(auth.seen, got, slices.Equal) {
		t.Errorf("Authorize saw passkeys %q, want %q", auth.seen, got)
	}
	if want := []Grant{{7, 9}, {7, 9}}; !slices.Equal(rec.grants, want) {
		t.Errorf("Account got %v, want %v", rec.grants, want)
	}
	// A prefetch before each admitted announce, none for the refused one.
	if want := []string{"prefetch", "account", "prefetch", "account"}; !slices.Equal(rec.calls, want) {
		t.Errorf("Accountant calls %v, want %v", rec.calls, want)
	}
	if want := []peertable.Change{peertable.ChangeAdded}; !slices.Equal(rec.changes, want) {
		t.Errorf("Changed got %v, want %v", rec.changes, want)
	}
}

func TestRemotePeers(t *testing.T) {
	tr := newTracker(t, Config{})
	remote, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tr.SetHooks(Hooks{Remote: remote})
	ih := peertable.InfoHash{4}
	for _, a := range []string{"192.0.2.10:1", "192.0.2.11:1", "[2001:db8::10]:1"} {
		remote.Announce(&peertable.Announce{InfoHash: ih, Addr: netip.MustParseAddrPort(a), Seeder: true, Event: peertable.EventCompleted}, nil)
	}
	mine := AnnounceRequest{InfoHash: ih, Addr: netip.MustParseAddrPort("192.0.2.1:6881"), Left: 1, NumWant: 50}
	if _, err := tr.Announce(&mine, nil); err != nil {
		t.Fatal(err)
	}
	other := AnnounceRequest{InfoHash: ih, Addr: netip.MustParseAddrPort("192.0.2.2:6881"), Left: 1, NumWant: 50}
	res, err := tr.Announce(&other, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := (peertable.Counts{Seeders: 3, Leechers: 2, Completed: 3}); res.Counts != want {
		t.Errorf("counts %+v, want %+v", res.Counts, want)
	}
	if n := len(res.Peers) / peertable.PeerLenV4; n != 3 {
		t.Errorf("got %d IPv4 peers (%x), want the local leecher and 2 remote seeders", n, res.Peers)
	}
	// Only one more is wanted: the local peer fills it, Remote is only counted.
	other.NumWant = 1
	if res, _ = tr.Announce(&other, nil); len(res.Peers) != peertable.PeerLenV4 || res.Counts.Seeders != 3 {
		t.Errorf("numwant 1: peers %x counts %+v", res.Peers, res.Counts)
	}
	six := AnnounceRequest{InfoHash: ih, Addr: netip.MustParseAddrPort("[2001:db8::1]:6881"), Left: 1, NumWant: 50}
	if res, _ = tr.Announce(&six, nil); len(res.Peers) != peertable.PeerLenV6 {
		t.Errorf("IPv6 requester got %x, want the one remote IPv6 peer", res.Peers)
	}
	if c := tr.Scrape(ih); c != (peertable.Counts{Seeders: 3, Leechers: 3, Completed: 3}) {
		t.Errorf("scrape %+v", c)
	}
}

// countingMirror counts changes without allocating.
type countingMirror struct{ n atomic.Int64 }

func (m *countingMirror) Changed(peertable.InfoHash, peertable.Peer, peertable.Change, peertable.Result) {
	m.n.Add(1)
}

// The hooks must not cost the hot path an allocation: a Result handed
// to an interface by pointer once moved every announce's Result to the heap.
func TestHooksDoNotAllocate(t *testing.T) {
	tr := newTracker(t, Config{})
	remote, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m := &countingMirror{}
	tr.SetHooks(Hooks{Remote: remote, Mirror: m})
	ih := peertable.InfoHash{5}
	remote.Announce(&peertable.Announce{InfoHash: ih, Addr: netip.MustParseAddrPort("192.0.2.9:1"), Seeder: true}, nil)
	req := AnnounceRequest{InfoHash: ih, Addr: netip.MustParseAddrPort("192.0.2.1:6881"), Left: 1, NumWant: 50}
	buf := make([]byte, 0, 1500)
	ev := []peertable.Event{peertable.EventStarted, peertable.EventStopped}
	i := 0
	if n := testing.AllocsPerRun(200, func() {
		req.Event = ev[i%2] // every announce a change: added, then removed
		i++
		if _, err := tr.Announce(&req, buf); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Announce with hooks allocates %v times", n)
	}
	if m.n.Load() == 0 {
		t.Error("the mirror heard of no change")
	}
}

// A peer in both tables (it moved between processes) is given once.
func TestRemoteDuplicatesDropped(t *testing.T) {
	tr := newTracker(t, Config{})
	remote, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tr.SetHooks(Hooks{Remote: remote})
	ih := peertable.InfoHash{6}
	both := netip.MustParseAddrPort("192.0.2.10:1")
	remote.Announce(&peertable.Announce{InfoHash: ih, Addr: both, Seeder: true}, nil)
	remote.Announce(&peertable.Announce{InfoHash: ih, Addr: netip.MustParseAddrPort("192.0.2.11:1"), Seeder: true}, nil)
	moved := AnnounceRequest{InfoHash: ih, Addr: both, Left: 0, NumWant: 0}
	if _, err := tr.Announce(&moved, nil); err != nil {
		t.Fatal(err)
	}
	req := AnnounceRequest{InfoHash: ih, Addr: netip.MustParseAddrPort("192.0.2.1:6881"), Left: 1, NumWant: 50}
	for range 20 { // selection starts at random points: try several
		res, err := tr.Announce(&req, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for p := res.Peers; len(p) > 0; p = p[peertable.PeerLenV4:] {
			k := string(p[:peertable.PeerLenV4])
			if seen[k] {
				t.Fatalf("peer %x given twice in %x", k, res.Peers)
			}
			seen[k] = true
		}
		if len(seen) != 2 {
			t.Fatalf("got %d distinct peers, want 2", len(seen))
		}
	}
}
