package private

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"sync"
	"testing"

	"github.com/chihaya/chihaya/peertable"
	"github.com/chihaya/chihaya/tracker"
)

// testPasskey returns a distinct 32-byte passkey for n.
func testPasskey(n uint32) []byte { return fmt.Appendf(nil, "%032x", n) }

func v1Hash(n uint32) []byte {
	h := sha1.Sum(binary.BigEndian.AppendUint32([]byte("v1"), n))
	return h[:]
}

func v2Hash(n uint32) []byte {
	h := sha256.Sum256(binary.BigEndian.AppendUint32([]byte("v2"), n))
	return h[:]
}

func testRequest(ih []byte, peerID string, left uint64) *tracker.AnnounceRequest {
	req := &tracker.AnnounceRequest{InfoHash: peertable.InfoHash(ih[:20]), Left: left}
	copy(req.PeerID[:], peerID)
	return req
}

// testRules holds users 1 (enabled, may download), 2 (disabled), 3
// (enabled, may not download); torrents 10 (v1 only), 11 (hybrid), 12 (v2
// only), 13 (not allowed); and the given client prefixes.
func testRules(t testing.TB, clients ...string) *Rules {
	t.Helper()
	r := NewRules()
	set := NewRuleSet()
	e := set.Edit()
	for _, u := range []User{
		{ID: 1, Passkey: testPasskey(1), Enabled: true, CanDownload: true},
		{ID: 2, Passkey: testPasskey(2), Enabled: false, CanDownload: true},
		{ID: 3, Passkey: testPasskey(3), Enabled: true, CanDownload: false},
	} {
		if err := e.SetUser(u); err != nil {
			t.Fatal(err)
		}
	}
	for _, tr := range []Torrent{
		{ID: 10, InfoHash: v1Hash(10), Allowed: true},
		{ID: 11, InfoHash: v1Hash(11), InfoHashV2: v2Hash(11), Allowed: true},
		{ID: 12, InfoHashV2: v2Hash(12), Allowed: true},
		{ID: 13, InfoHash: v1Hash(13), Allowed: false},
	} {
		if err := e.SetTorrent(tr); err != nil {
			t.Fatal(err)
		}
	}
	var cs [][]byte
	for _, c := range clients {
		cs = append(cs, []byte(c))
	}
	e.SetClients(cs)
	r.Replace(set)
	return r
}

func TestAuthorize(t *testing.T) {
	r := testRules(t, "-qB", "-TR4")
	tests := []struct {
		name    string
		passkey []byte
		ih      []byte
		peerID  string
		left    uint64
		want    tracker.Grant
		wantErr error
	}{
		{"v1", testPasskey(1), v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{User: 1, Torrent: 10}, nil},
		{"hybrid v1", testPasskey(1), v1Hash(11), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{User: 1, Torrent: 11}, nil},
		{"hybrid v2 truncated", testPasskey(1), v2Hash(11), "-TR4050-xxxxxxxxxxxx", 1, tracker.Grant{User: 1, Torrent: 11}, nil},
		{"v2 only", testPasskey(1), v2Hash(12), "-qB4650-xxxxxxxxxxxx", 0, tracker.Grant{User: 1, Torrent: 12}, nil},
		{"seeding without download right", testPasskey(3), v1Hash(10), "-qB4650-xxxxxxxxxxxx", 0, tracker.Grant{User: 3, Torrent: 10}, nil},
		{"missing passkey", nil, v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrMissingPasskey},
		{"short passkey", []byte("announce"), v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrUnknownPasskey},
		{"unknown passkey", testPasskey(99), v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrUnknownPasskey},
		{"disabled", testPasskey(2), v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrAccountDisabled},
		{"client not allowed", testPasskey(1), v1Hash(10), "-UT3550-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrClientNotAllowed},
		{"client prefix is not a substring match", testPasskey(1), v1Hash(10), "x-qB4650-xxxxxxxxxxx", 1, tracker.Grant{}, ErrClientNotAllowed},
		{"not registered", testPasskey(1), v1Hash(99), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrTorrentNotRegistered},
		{"v2 hash of a v1-only torrent", testPasskey(1), v2Hash(10), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrTorrentNotRegistered},
		{"not allowed", testPasskey(1), v1Hash(13), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrTorrentNotAllowed},
		{"may not download", testPasskey(3), v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1, tracker.Grant{}, ErrMayNotDownload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.Authorize(tt.passkey, testRequest(tt.ih, tt.peerID, tt.left))
			if got != tt.want || err != tt.wantErr {
				t.Errorf("Authorize(%q, …) = %+v, %v; want %+v, %v", tt.passkey, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestAuthorizeEmptyClientListAllowsAll(t *testing.T) {
	r := testRules(t)
	for _, id := range []string{"-UT3550-xxxxxxxxxxxx", "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "M7-2-2--xxxxxxxxxxxx"} {
		if g, err := r.Authorize(testPasskey(1), testRequest(v1Hash(10), id, 1)); err != nil || g != (tracker.Grant{User: 1, Torrent: 10}) {
			t.Errorf("Authorize with peer_id %q and no client rules = %+v, %v; want admitted", id, g, err)
		}
	}
}

func TestRefusalsAreClientErrors(t *testing.T) {
	for _, err := range []error{ErrMissingPasskey, ErrUnknownPasskey, ErrAccountDisabled, ErrClientNotAllowed, ErrTorrentNotRegistered, ErrTorrentNotAllowed, ErrMayNotDownload} {
		if _, ok := err.(*tracker.ClientError); !ok {
			t.Errorf("%v is %T, want *tracker.ClientError", err, err)
		}
	}
}

func TestNewRulesRefusesAll(t *testing.T) {
	r := NewRules()
	if _, err := r.Authorize(testPasskey(1), testRequest(v1Hash(10), "-qB4650-", 0)); err != ErrUnknownPasskey {
		t.Errorf("Authorize on NewRules() = %v, want %v", err, ErrUnknownPasskey)
	}
	if s := r.Stats(); s != (RulesStats{}) {
		t.Errorf("NewRules().Stats() = %+v, want zero", s)
	}
}

func TestEdit(t *testing.T) {
	r := testRules(t, "-qB")
	auth := func(user uint32, ih []byte, peerID string) error {
		_, err := r.Authorize(testPasskey(user), testRequest(ih, peerID, 1))
		return err
	}
	const qb = "-qB4650-xxxxxxxxxxxx"

	// A new user, a new hybrid torrent, a new client prefix, at once.
	r.Edit(func(e *RulesEdit) {
		if err := e.SetUser(User{ID: 4, Passkey: testPasskey(4), Enabled: true, CanDownload: true}); err != nil {
			t.Fatal(err)
		}
		if err := e.SetTorrent(Torrent{ID: 20, InfoHash: v1Hash(20), InfoHashV2: v2Hash(20), Allowed: true}); err != nil {
			t.Fatal(err)
		}
		e.SetClients([][]byte{[]byte("-qB"), []byte("-TR")})
	})
	for _, c := range []struct {
		user   uint32
		ih     []byte
		peerID string
	}{{4, v1Hash(20), qb}, {4, v2Hash(20), qb}, {1, v1Hash(10), "-TR4050-xxxxxxxxxxxx"}} {
		if err := auth(c.user, c.ih, c.peerID); err != nil {
			t.Errorf("after Edit, user %d on %x with %q: %v, want admitted", c.user, c.ih[:4], c.peerID, err)
		}
	}
	if s := r.Stats(); s.Users != 4 || s.Torrents != 5 || s.Clients != 2 {
		t.Errorf("Stats() = %+v, want 4 users, 5 torrents, 2 clients", s)
	}

	// The user's passkey changes: the old one is unknown, the new one works.
	r.Edit(func(e *RulesEdit) {
		if err := e.SetUser(User{ID: 4, Passkey: testPasskey(40), Enabled: true, CanDownload: true}); err != nil {
			t.Fatal(err)
		}
	})
	if err := auth(4, v1Hash(10), qb); err != ErrUnknownPasskey {
		t.Errorf("old passkey after change: %v, want %v", err, ErrUnknownPasskey)
	}
	if g, err := r.Authorize(testPasskey(40), testRequest(v1Hash(10), qb, 1)); err != nil || g.User != 4 {
		t.Errorf("new passkey after change = %+v, %v; want user 4", g, err)
	}

	// The hybrid torrent loses its v2 hash; the v1 torrent is deleted;
	// user 1 is disabled; a malformed row replaces user 3.
	r.Edit(func(e *RulesEdit) {
		if err := e.SetTorrent(Torrent{ID: 20, InfoHash: v1Hash(20), Allowed: true}); err != nil {
			t.Fatal(err)
		}
		e.RemoveTorrent(10)
		e.RemoveTorrent(999) // absent: no effect
		if err := e.SetUser(User{ID: 1, Passkey: testPasskey(1), Enabled: false}); err != nil {
			t.Fatal(err)
		}
		if err := e.SetUser(User{ID: 3, Passkey: []byte("short")}); err == nil {
			t.Error("SetUser with a 5-byte passkey succeeded, want an error")
		}
		if err := e.SetTorrent(Torrent{ID: 21}); err == nil {
			t.Error("SetTorrent with no hashes succeeded, want an error")
		}
		if err := e.SetTorrent(Torrent{ID: 21, InfoHash: []byte("short")}); err == nil {
			t.Error("SetTorrent with a 5-byte info_hash succeeded, want an error")
		}
	})
	for _, c := range []struct {
		user uint32
		ih   []byte
		want error
	}{
		{4, v2Hash(20), ErrUnknownPasskey}, // user 4's old passkey
		{1, v1Hash(20), ErrAccountDisabled},
		{3, v1Hash(20), ErrUnknownPasskey},
	} {
		if err := auth(c.user, c.ih, qb); err != c.want {
			t.Errorf("after second Edit, user %d on %x: %v, want %v", c.user, c.ih[:4], err, c.want)
		}
	}
	if _, err := r.Authorize(testPasskey(40), testRequest(v2Hash(20), qb, 1)); err != ErrTorrentNotRegistered {
		t.Errorf("removed v2 hash: %v, want %v", err, ErrTorrentNotRegistered)
	}
	if _, err := r.Authorize(testPasskey(40), testRequest(v1Hash(10), qb, 1)); err != ErrTorrentNotRegistered {
		t.Errorf("removed torrent: %v, want %v", err, ErrTorrentNotRegistered)
	}
	if g, err := r.Authorize(testPasskey(40), testRequest(v1Hash(20), qb, 1)); err != nil || g.Torrent != 20 {
		t.Errorf("kept v1 hash = %+v, %v; want torrent 20", g, err)
	}
	if s := r.Stats(); s.Users != 3 || s.Torrents != 4 {
		t.Errorf("Stats() = %+v, want 3 users (1, 2, 4), 4 torrents (11, 12, 13, 20)", s)
	}

	// Two rows claiming one key: the newer wins, the older is gone.
	r.Edit(func(e *RulesEdit) {
		if err := e.SetTorrent(Torrent{ID: 30, InfoHash: v1Hash(11), Allowed: true}); err != nil {
			t.Fatal(err)
		}
	})
	if g, err := r.Authorize(testPasskey(40), testRequest(v1Hash(11), qb, 1)); err != nil || g.Torrent != 30 {
		t.Errorf("hash moved to torrent 30 = %+v, %v; want torrent 30", g, err)
	}
	if _, err := r.Authorize(testPasskey(40), testRequest(v2Hash(11), qb, 1)); err != ErrTorrentNotRegistered {
		t.Errorf("torrent 11's v2 hash after its v1 hash moved: %v, want %v", err, ErrTorrentNotRegistered)
	}
}

func TestRuleSetSizeLike(t *testing.T) {
	r := testRules(t, "-qB")
	set := NewRuleSet()
	set.SizeLike(r)
	e := set.Edit()
	if err := e.SetUser(User{ID: 9, Passkey: testPasskey(9), Enabled: true, CanDownload: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetTorrent(Torrent{ID: 11, InfoHash: v1Hash(11), InfoHashV2: v2Hash(11), Allowed: true}); err != nil {
		t.Fatal(err)
	}
	r.Replace(set)
	if g, err := r.Authorize(testPasskey(9), testRequest(v2Hash(11), "-UT3550-xxxxxxxxxxxx", 1)); err != nil || g != (tracker.Grant{User: 9, Torrent: 11}) {
		t.Errorf("after Replace with a sized set = %+v, %v; want user 9, torrent 11 and every client", g, err)
	}
	if _, err := r.Authorize(testPasskey(1), testRequest(v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1)); err != ErrUnknownPasskey {
		t.Errorf("user of the replaced rules: %v, want %v", err, ErrUnknownPasskey)
	}
	if s := r.Stats(); s != (RulesStats{Users: 1, Torrents: 1}) {
		t.Errorf("Stats() = %+v, want 1 user, 1 torrent, 0 clients", s)
	}
}

// TestEditIsolation checks that an Edit never changes a snapshot that
// readers may hold: the copy-on-write clones every shard it touches.
func TestEditIsolation(t *testing.T) {
	r := testRules(t)
	before := r.snap.Load()
	r.Edit(func(e *RulesEdit) {
		e.RemoveUser(1)
		e.RemoveTorrent(11)
	})
	req := testRequest(v2Hash(11), "-qB4650-xxxxxxxxxxxx", 1)
	old := &Rules{}
	old.snap.Store(before)
	if g, err := old.Authorize(testPasskey(1), req); err != nil || g != (tracker.Grant{User: 1, Torrent: 11}) {
		t.Errorf("old snapshot after Edit = %+v, %v; want it unchanged", g, err)
	}
	if _, err := r.Authorize(testPasskey(1), req); err != ErrUnknownPasskey {
		t.Errorf("new snapshot after Edit: %v, want %v", err, ErrUnknownPasskey)
	}
}

func TestAuthorizeConcurrentWithEdits(t *testing.T) {
	r := testRules(t)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			req := testRequest(v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				// User 1 is always admitted; user 5 comes and goes.
				if _, err := r.Authorize(testPasskey(1), req); err != nil {
					t.Errorf("user 1 refused during edits: %v", err)
					return
				}
				if _, err := r.Authorize(testPasskey(5), req); err != nil && err != ErrUnknownPasskey {
					t.Errorf("user 5: %v", err)
					return
				}
			}
		})
	}
	for i := range 2000 {
		r.Edit(func(e *RulesEdit) {
			if i%2 == 0 {
				e.SetUser(User{ID: 5, Passkey: testPasskey(5), Enabled: true, CanDownload: true})
			} else {
				e.RemoveUser(5)
			}
		})
	}
	close(stop)
	wg.Wait()
}

func TestAuthorizeDoesNotAllocate(t *testing.T) {
	if rulesRace {
		t.Skip("allocation counts are not meaningful under -race")
	}
	r := testRules(t, "-TR", "-qB")
	for _, c := range []struct {
		name string
		key  []byte
		req  *tracker.AnnounceRequest
	}{
		{"admitted", testPasskey(1), testRequest(v2Hash(11), "-qB4650-xxxxxxxxxxxx", 1)},
		{"unknown passkey", testPasskey(77), testRequest(v1Hash(10), "-qB4650-xxxxxxxxxxxx", 1)},
		{"client not allowed", testPasskey(1), testRequest(v1Hash(10), "-UT3550-xxxxxxxxxxxx", 1)},
		{"not registered", testPasskey(1), testRequest(v1Hash(77), "-qB4650-xxxxxxxxxxxx", 1)},
	} {
		if n := testing.AllocsPerRun(1000, func() { r.Authorize(c.key, c.req) }); n != 0 {
			t.Errorf("Authorize (%s) allocated %v times per call, want 0", c.name, n)
		}
	}
}

// bigRules returns Rules with users users and torrents hybrid torrents.
func bigRules(b *testing.B, users, torrents int) *Rules {
	b.Helper()
	r := NewRules()
	set := NewRuleSet()
	e := set.Edit()
	for i := range uint32(users) {
		e.SetUser(User{ID: i, Passkey: testPasskey(i), Enabled: true, CanDownload: true})
	}
	for i := range uint32(torrents) {
		e.SetTorrent(Torrent{ID: i, InfoHash: v1Hash(i), InfoHashV2: v2Hash(i), Allowed: true})
	}
	r.Replace(set)
	return r
}

func BenchmarkAuthorize(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("users=%d/torrents=%d", n, n), func(b *testing.B) {
			r := bigRules(b, n, n)
			const keys = 4096
			pks := make([][]byte, keys)
			reqs := make([]*tracker.AnnounceRequest, keys)
			for i := range keys {
				pks[i] = testPasskey(uint32(i * (n / keys)))
				reqs[i] = testRequest(v1Hash(uint32(i*(n/keys))), "-qB4650-xxxxxxxxxxxx", 1)
			}
			b.Run("mode=serial", func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := r.Authorize(pks[i%keys], reqs[i%keys]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run("mode=parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					i := 0
					for pb.Next() {
						if _, err := r.Authorize(pks[i%keys], reqs[i%keys]); err != nil {
							b.Error(err)
							return
						}
						i++
					}
				})
			})
		})
	}
}

// BenchmarkEdit measures a single-row change (one notification) at a
// million users and torrents.
func BenchmarkEdit(b *testing.B) {
	const n = 1_000_000
	r := bigRules(b, n, n)
	b.Run("row=user", func(b *testing.B) {
		b.ReportAllocs()
		i := uint32(0)
		for b.Loop() {
			r.Edit(func(e *RulesEdit) {
				e.SetUser(User{ID: i % n, Passkey: testPasskey(i % n), Enabled: i%2 == 0})
			})
			i++
		}
	})
	b.Run("row=torrent", func(b *testing.B) {
		b.ReportAllocs()
		i := uint32(0)
		for b.Loop() {
			r.Edit(func(e *RulesEdit) {
				e.SetTorrent(Torrent{ID: i % n, InfoHash: v1Hash(i % n), InfoHashV2: v2Hash(i % n), Allowed: i%2 == 0})
			})
			i++
		}
	})
}
