package tracker

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

func newTracker(t *testing.T, cfg Config) *Tracker {
	t.Helper()
	table, err := peertable.New(peertable.Config{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(cfg, table)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func announce(t *testing.T, tr *Tracker, addr string, left uint64, ev peertable.Event, want int) (AnnounceResponse, error) {
	t.Helper()
	req := AnnounceRequest{
		InfoHash: peertable.InfoHash{1},
		Addr:     netip.MustParseAddrPort(addr),
		Left:     left,
		Event:    ev,
		NumWant:  want,
	}
	return tr.Announce(&req, nil)
}

func TestAnnounceRefusals(t *testing.T) {
	tr := newTracker(t, Config{})
	tests := []struct {
		name string
		req  AnnounceRequest
		want error
	}{
		{"port 0", AnnounceRequest{Addr: netip.MustParseAddrPort("192.0.2.1:0")}, ErrInvalidPort},
		{"event 4", AnnounceRequest{Addr: netip.MustParseAddrPort("192.0.2.1:1"), Event: 4}, ErrInvalidEvent},
		{"no address", AnnounceRequest{Addr: netip.AddrPortFrom(netip.Addr{}, 1)}, ErrInvalidAddress},
		{"unspecified", AnnounceRequest{Addr: netip.MustParseAddrPort("0.0.0.0:1")}, ErrInvalidAddress},
		{"mapped", AnnounceRequest{Addr: netip.MustParseAddrPort("[::ffff:192.0.2.1]:1")}, ErrInvalidAddress},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tr.Announce(&tc.req, nil)
			if err != tc.want {
				t.Errorf("Announce(%+v) = %v, want %v", tc.req, err, tc.want)
			}
			var ce *ClientError
			if !errors.As(err, &ce) {
				t.Errorf("error %v is not a *ClientError", err)
			}
		})
	}
	if s := tr.Peers().Stats(); s.Swarms != 0 {
		t.Errorf("refused announces created %d swarms", s.Swarms)
	}
}

func TestAnnounceNumWant(t *testing.T) {
	tr := newTracker(t, Config{DefaultNumWant: 3, MaxNumWant: 5})
	for i := range 10 {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 6881)
		if _, err := announce(t, tr, addr.String(), 0, peertable.EventStarted, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ ask, want int }{{-1, 3}, {0, 0}, {4, 4}, {100, 5}} {
		res, err := announce(t, tr, "198.51.100.1:6881", 1, peertable.EventNone, tc.ask)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.Peers) / peertable.PeerLenV4; got != tc.want {
			t.Errorf("numwant %d: got %d peers, want %d", tc.ask, got, tc.want)
		}
	}
	res, err := announce(t, tr, "198.51.100.1:6881", 1, peertable.EventStopped, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Peers) != 0 {
		t.Errorf("a stopped announce got %d bytes of peers, want none", len(res.Peers))
	}
}

// TestAnnounceMaxPeers checks that the frontend's room caps the reply
// together with the client's numwant, DefaultNumWant and MaxNumWant,
// whichever is smallest, and that zero room means no frontend limit.
func TestAnnounceMaxPeers(t *testing.T) {
	tr := newTracker(t, Config{DefaultNumWant: 4, MaxNumWant: 8})
	for i := range 20 {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 6881)
		if _, err := announce(t, tr, addr.String(), 0, peertable.EventStarted, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ ask, room, want int }{
		{-1, 0, 4},   // default, no frontend limit
		{-1, 2, 2},   // the room is below the default
		{-1, 6, 4},   // the room is above the default
		{100, 0, 8},  // MaxNumWant
		{100, 5, 5},  // the room is below MaxNumWant
		{100, 50, 8}, // the room is above MaxNumWant
		{3, 5, 3},    // the client asks for less than either
		{0, 5, 0},
	} {
		req := AnnounceRequest{
			InfoHash: peertable.InfoHash{1},
			Addr:     netip.MustParseAddrPort("198.51.100.1:6881"),
			Left:     1,
			NumWant:  tc.ask,
			MaxPeers: tc.room,
		}
		res, err := tr.Announce(&req, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(res.Peers) / peertable.PeerLenV4; got != tc.want {
			t.Errorf("numwant %d, MaxPeers %d: got %d peers, want %d", tc.ask, tc.room, got, tc.want)
		}
	}
}

// TestNumWantFollowsSetConfig checks that a new DefaultNumWant and
// MaxNumWant apply to the next announce, whatever the frontend's room.
func TestNumWantFollowsSetConfig(t *testing.T) {
	tr := newTracker(t, Config{DefaultNumWant: 2, MaxNumWant: 3})
	for i := range 20 {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 6881)
		if _, err := announce(t, tr, addr.String(), 0, peertable.EventStarted, 0); err != nil {
			t.Fatal(err)
		}
	}
	count := func(ask int) int {
		t.Helper()
		req := AnnounceRequest{InfoHash: peertable.InfoHash{1}, Addr: netip.MustParseAddrPort("198.51.100.1:6881"), Left: 1, NumWant: ask, MaxPeers: 10}
		res, err := tr.Announce(&req, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(res.Peers) / peertable.PeerLenV4
	}
	if d, m := count(-1), count(100); d != 2 || m != 3 {
		t.Fatalf("before SetConfig: default %d peers, most %d; want 2, 3", d, m)
	}
	if err := tr.SetConfig(Config{DefaultNumWant: 6, MaxNumWant: 15}); err != nil {
		t.Fatal(err)
	}
	if d, m := count(-1), count(100); d != 6 || m != 10 {
		t.Errorf("after SetConfig: default %d peers, most %d; want 6, 10 (the room)", d, m)
	}
}

func TestLimitsCheck(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		l     Limits
		field string // "" for no error
	}{
		{Limits{}, ""},
		{Limits{ConnectRate: 1e9, ConnectBurst: 1e9, AnnounceRate: 0.01, AnnounceBurst: 1}, ""},
		{Limits{ConnectRate: -1}, "ConnectRate"},
		{Limits{ConnectRate: nan}, "ConnectRate"},
		{Limits{ConnectRate: 1, ConnectBurst: -1}, "ConnectBurst"},
		{Limits{AnnounceRate: 2e9}, "AnnounceRate"},
		{Limits{AnnounceRate: nan}, "AnnounceRate"},
		{Limits{AnnounceBurst: 1e9 + 1}, "AnnounceBurst"},
	} {
		err := tc.l.Check()
		if tc.field == "" {
			if err != nil {
				t.Errorf("%+v.Check() = %v, want nil", tc.l, err)
			}
			continue
		}
		var le *LimitError
		if !errors.As(err, &le) || le.Field != tc.field || !strings.HasPrefix(err.Error(), tc.field+" ") {
			t.Errorf("%+v.Check() = %v, want a *LimitError naming %s", tc.l, err, tc.field)
		}
	}
}

func TestAnnounceIntervals(t *testing.T) {
	tr := newTracker(t, Config{Interval: 10 * time.Minute, MinInterval: 90 * time.Second})
	res, err := announce(t, tr, "192.0.2.1:6881", 1, peertable.EventStarted, -1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Interval != 600 || res.MinInterval != 90 {
		t.Errorf("intervals = %d, %d; want 600, 90", res.Interval, res.MinInterval)
	}
	if res.Counts.Leechers != 1 || res.Counts.Seeders != 0 {
		t.Errorf("counts = %+v, want one leecher", res.Counts)
	}
}

// TestCompletedNeedsNothingLeft checks that a "completed" from a client
// that still reports bytes left is not counted as a download.
func TestCompletedNeedsNothingLeft(t *testing.T) {
	tr := newTracker(t, Config{})
	for range 3 {
		if _, err := announce(t, tr, "192.0.2.1:6881", 100, peertable.EventCompleted, 0); err != nil {
			t.Fatal(err)
		}
	}
	if c := tr.Scrape(peertable.InfoHash{1}); c.Completed != 0 || c.Leechers != 1 {
		t.Errorf("after completed with bytes left: %+v, want 0 completed, 1 leecher", c)
	}
	if _, err := announce(t, tr, "192.0.2.1:6881", 0, peertable.EventCompleted, 0); err != nil {
		t.Fatal(err)
	}
	if c := tr.Scrape(peertable.InfoHash{1}); c.Completed != 1 || c.Seeders != 1 || c.Leechers != 0 {
		t.Errorf("after a real completion: %+v, want 1 completed, 1 seeder", c)
	}
}

func TestConfigErrors(t *testing.T) {
	table, _ := peertable.New(peertable.Config{})
	for _, cfg := range []Config{
		{Interval: time.Millisecond},
		{Interval: time.Minute, MinInterval: time.Hour},
		{DefaultNumWant: 10, MaxNumWant: 5},
		{MaxNumWant: -1},
	} {
		if _, err := New(cfg, table); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
}

// TestSetConfig checks that a new policy applies to the next announce,
// that a bad one is refused and the old one kept, and that the swarm
// survives either way.
func TestSetConfig(t *testing.T) {
	tr := newTracker(t, Config{Interval: 10 * time.Minute, MinInterval: time.Minute})
	if _, err := announce(t, tr, "192.0.2.1:6881", 1, peertable.EventStarted, 0); err != nil {
		t.Fatal(err)
	}
	if err := tr.SetConfig(Config{Interval: 20 * time.Minute, DefaultNumWant: 1, MaxNumWant: 1}); err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	res, err := announce(t, tr, "192.0.2.2:6881", 1, peertable.EventStarted, -1)
	if err != nil {
		t.Fatal(err)
	}
	if res.Interval != 1200 || res.MinInterval != 300 {
		t.Errorf("after SetConfig: intervals = %d, %d; want 1200, 300", res.Interval, res.MinInterval)
	}
	if n := len(res.Peers) / peertable.PeerLenV4; n != 1 {
		t.Errorf("after SetConfig: %d peers, want 1 (the peer from before)", n)
	}

	bad := Config{Interval: time.Minute, MinInterval: time.Hour}
	if err := tr.SetConfig(bad); err == nil {
		t.Errorf("SetConfig(%+v) accepted a bad config", bad)
	}
	if got := tr.Config(); got.Interval != 20*time.Minute || got.MaxNumWant != 1 {
		t.Errorf("after a refused SetConfig: Config() = %+v, want the previous policy", got)
	}
}
