package private

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chihaya/chihaya/tracker"
)

// PasskeyLen is the length of a passkey. A users row whose passkey has
// another length is skipped, and a request whose passkey has another
// length is refused as ErrUnknownPasskey.
const PasskeyLen = 32

// Refusals returned by Rules.Authorize. Their texts are sent to clients and
// never change per request.
var (
	ErrMissingPasskey       = tracker.Refusal("missing passkey: use the announce URL with your passkey")
	ErrUnknownPasskey       = tracker.Refusal("unknown passkey")
	ErrAccountDisabled      = tracker.Refusal("account disabled")
	ErrClientNotAllowed     = tracker.Refusal("client not allowed: peer_id prefix is not on the allowed list")
	ErrTorrentNotRegistered = tracker.Refusal("torrent not registered")
	ErrTorrentNotAllowed    = tracker.Refusal("torrent not allowed")
	ErrMayNotDownload       = tracker.Refusal("account may not download")
)

// A User is one row of the web application's users relation.
type User struct {
	ID          uint32
	Passkey     []byte // PasskeyLen bytes
	Enabled     bool
	CanDownload bool
}

// A Torrent is one row of the web application's torrents relation. A
// hybrid torrent has both hashes; a v1-only or v2-only torrent has one.
type Torrent struct {
	ID         uint32
	InfoHash   []byte // v1 (SHA-1, 20 bytes) or nil
	InfoHashV2 []byte // v2 (SHA-256, 32 bytes) or nil; announced truncated to 20 bytes
	Allowed    bool
}

// RulesStats describes a Rules for the admin page. Source.Stats fills in
// the fields after Clients from its feed; a Rules alone leaves them zero.
type RulesStats struct {
	Users    int // users rows held, enabled or not
	Torrents int // torrents rows held, allowed or not
	Clients  int // allowed peer_id prefixes; 0 allows every client

	Reloads       uint64    // full reloads that succeeded
	Notifications uint64    // notifications received
	Errors        uint64    // failed queries, connections and malformed rows
	LastReload    time.Time // when the last full reload succeeded
}

// Rules decides private-mode announces from an in-memory copy of the web
// application's users, torrents and allowed clients. It implements
// tracker.Authorizer.
//
// Readers never lock: Authorize loads an immutable snapshot through an
// atomic pointer and does two map lookups in it, without allocating.
// Writers (Edit, Replace) are serialized by a mutex and copy on write: the
// users and torrents are each split into 1024 shards, and a change copies
// only the shards it touches plus the 16 KiB table of shard pointers, so a
// single-row change costs microseconds even at a million rows. A change is
// atomic: an announce sees all of an Edit or none of it. Map keys and
// values hold no pointers, so the garbage collector does not scan them.
//
// The zero Rules is not usable; call NewRules. A new Rules refuses every
// announce (it knows no passkeys).
type Rules struct {
	snap atomic.Pointer[rulesSnapshot]

	mu sync.Mutex // serializes writers; guards the fields below
	// Writer-side indexes from row id to the keys the row occupies, so a
	// changed or deleted row's old keys can be removed. Readers never
	// touch them.
	userByID    map[uint32]passkey
	torrentByID map[uint32]torrentKeys
}

const (
	rulesShardBits = 10
	rulesShards    = 1 << rulesShardBits
)

type passkey [PasskeyLen]byte

type userEntry struct {
	id          uint32
	enabled     bool
	canDownload bool
}

type torrentEntry struct {
	id      uint32
	allowed bool
}

// torrentKeys are the announce keys of one torrents row.
type torrentKeys struct {
	v1, v2       [20]byte
	hasV1, hasV2 bool
}

// rulesSnapshot is immutable once published.
type rulesSnapshot struct {
	seed      maphash.Seed
	users     [rulesShards]map[passkey]userEntry
	torrents  [rulesShards]map[[20]byte]torrentEntry
	clients   [][]byte // allowed peer_id prefixes, sorted; empty allows all
	nUsers    int
	nTorrents int
}

func (s *rulesSnapshot) userShard(k []byte) int {
	return int(maphash.Bytes(s.seed, k) & (rulesShards - 1))
}

func (s *rulesSnapshot) torrentShard(k []byte) int {
	return int(maphash.Bytes(s.seed, k) & (rulesShards - 1))
}

// NewRules returns an empty Rules, which refuses every announce until it
// is given rules with Replace or Edit.
func NewRules() *Rules {
	r := &Rules{
		userByID:    make(map[uint32]passkey),
		torrentByID: make(map[uint32]torrentKeys),
	}
	r.snap.Store(&rulesSnapshot{seed: maphash.MakeSeed()})
	return r
}

// Authorize admits an announce if passkey belongs to an enabled user, the
// client's peer_id starts with an allowed prefix (or no prefixes are
// listed), the info-hash is a registered and allowed torrent (its v1 hash
// or its v2 hash truncated to 20 bytes), and, when the client still has
// bytes left, the user may download. Otherwise it returns one of the Err…
// refusals, checked in that order. It does not allocate.
func (r *Rules) Authorize(key []byte, req *tracker.AnnounceRequest) (tracker.Grant, error) {
	if len(key) == 0 {
		return tracker.Grant{}, ErrMissingPasskey
	}
	if len(key) != PasskeyLen {
		return tracker.Grant{}, ErrUnknownPasskey
	}
	s := r.snap.Load()
	u, ok := s.users[s.userShard(key)][passkey(key)]
	if !ok {
		return tracker.Grant{}, ErrUnknownPasskey
	}
	if !u.enabled {
		return tracker.Grant{}, ErrAccountDisabled
	}
	if len(s.clients) > 0 && !allowedClient(s.clients, req.PeerID[:]) {
		return tracker.Grant{}, ErrClientNotAllowed
	}
	t, ok := s.torrents[s.torrentShard(req.InfoHash[:])][req.InfoHash]
	if !ok {
		return tracker.Grant{}, ErrTorrentNotRegistered
	}
	if !t.allowed {
		return tracker.Grant{}, ErrTorrentNotAllowed
	}
	if req.Left > 0 && !u.canDownload {
		return tracker.Grant{}, ErrMayNotDownload
	}
	return tracker.Grant{User: u.id, Torrent: t.id}, nil
}

// allowedClient reports whether peerID starts with one of prefixes, which
// are sorted. The list is expected to be short (tens of entries); it is
// scanned in order.
func allowedClient(prefixes [][]byte, peerID []byte) bool {
	for _, p := range prefixes {
		if bytes.HasPrefix(peerID, p) {
			return true
		}
	}
	return false
}

// Stats returns the number of users, torrents and client prefixes held.
func (r *Rules) Stats() RulesStats {
	s := r.snap.Load()
	return RulesStats{Users: s.nUsers, Torrents: s.nTorrents, Clients: len(s.clients)}
}

// A RulesEdit is a set of changes being applied by Rules.Edit or built
// into a RuleSet. It is valid only during the call that handed it out.
type RulesEdit struct {
	snap        *rulesSnapshot // private copy being changed
	userByID    map[uint32]passkey
	torrentByID map[uint32]torrentKeys
	// Shards already private to this edit; the others are shared with
	// the published snapshot and are cloned before their first change.
	ownUsers, ownTorrents [rulesShards / 64]uint64
}

func own(bits *[rulesShards / 64]uint64, i int) bool {
	w, b := i/64, uint64(1)<<(i%64)
	if bits[w]&b != 0 {
		return true
	}
	bits[w] |= b
	return false
}

func (e *RulesEdit) userMap(k *passkey) map[passkey]userEntry {
	i := e.snap.userShard(k[:])
	if !own(&e.ownUsers, i) || e.snap.users[i] == nil {
		m := maps.Clone(e.snap.users[i])
		if m == nil {
			m = make(map[passkey]userEntry)
		}
		e.snap.users[i] = m
	}
	return e.snap.users[i]
}

func (e *RulesEdit) torrentMap(k *[20]byte) map[[20]byte]torrentEntry {
	i := e.snap.torrentShard(k[:])
	if !own(&e.ownTorrents, i) || e.snap.torrents[i] == nil {
		m := maps.Clone(e.snap.torrents[i])
		if m == nil {
			m = make(map[[20]byte]torrentEntry)
		}
		e.snap.torrents[i] = m
	}
	return e.snap.torrents[i]
}

// SetUser adds u or replaces the user with u's ID (whose passkey may have
// changed). It rejects a passkey that is not PasskeyLen bytes; the user's
// previous row, if any, is removed anyway, so a malformed row never
// leaves a stale one admitting announces.
func (e *RulesEdit) SetUser(u User) error {
	e.RemoveUser(u.ID)
	if len(u.Passkey) != PasskeyLen {
		return fmt.Errorf("rules: user %d: passkey is %d bytes, want %d", u.ID, len(u.Passkey), PasskeyLen)
	}
	k := passkey(u.Passkey)
	m := e.userMap(&k)
	if old, ok := m[k]; ok {
		// Another id had this passkey (the web application swapped
		// passkeys between rows): the newer row wins.
		delete(e.userByID, old.id)
	}
	m[k] = userEntry{id: u.ID, enabled: u.Enabled, canDownload: u.CanDownload}
	e.userByID[u.ID] = k
	return nil
}

// RemoveUser removes the user with id, if present.
func (e *RulesEdit) RemoveUser(id uint32) {
	k, ok := e.userByID[id]
	if !ok {
		return
	}
	delete(e.userByID, id)
	m := e.userMap(&k)
	if m[k].id == id {
		delete(m, k)
	}
}

// SetTorrent adds t or replaces the torrent with t's ID. It rejects a row
// with neither hash or with a hash of the wrong length; the torrent's
// previous row, if any, is removed anyway.
func (e *RulesEdit) SetTorrent(t Torrent) error {
	e.RemoveTorrent(t.ID)
	var tk torrentKeys
	switch {
	case t.InfoHash == nil && t.InfoHashV2 == nil:
		return fmt.Errorf("rules: torrent %d: info_hash and info_hash_v2 are both NULL", t.ID)
	case t.InfoHash != nil && len(t.InfoHash) != 20:
		return fmt.Errorf("rules: torrent %d: info_hash is %d bytes, want 20", t.ID, len(t.InfoHash))
	case t.InfoHashV2 != nil && len(t.InfoHashV2) != 32:
		return fmt.Errorf("rules: torrent %d: info_hash_v2 is %d bytes, want 32", t.ID, len(t.InfoHashV2))
	}
	v := torrentEntry{id: t.ID, allowed: t.Allowed}
	if t.InfoHash != nil {
		tk.v1, tk.hasV1 = [20]byte(t.InfoHash), true
		e.putTorrent(&tk.v1, v)
	}
	if t.InfoHashV2 != nil {
		tk.v2, tk.hasV2 = [20]byte(t.InfoHashV2[:20]), true
		e.putTorrent(&tk.v2, v)
	}
	e.torrentByID[t.ID] = tk
	return nil
}

func (e *RulesEdit) putTorrent(k *[20]byte, v torrentEntry) {
	m := e.torrentMap(k)
	if old, ok := m[*k]; ok && old.id != v.id {
		// Another row announced under this key: the newer row wins,
		// and the other one loses all its keys.
		e.RemoveTorrent(old.id)
	}
	m[*k] = v
}

// RemoveTorrent removes the torrent with id, under both its hashes.
func (e *RulesEdit) RemoveTorrent(id uint32) {
	tk, ok := e.torrentByID[id]
	if !ok {
		return
	}
	delete(e.torrentByID, id)
	if tk.hasV1 {
		e.deleteTorrentKey(&tk.v1, id)
	}
	if tk.hasV2 {
		e.deleteTorrentKey(&tk.v2, id)
	}
}

func (e *RulesEdit) deleteTorrentKey(k *[20]byte, id uint32) {
	m := e.torrentMap(k)
	if m[*k].id == id {
		delete(m, *k)
	}
}

// SetClients replaces the allowed peer_id prefixes. An empty list allows
// every client. Empty prefixes match every client; prefixes longer than
// 20 bytes match none.
func (e *RulesEdit) SetClients(prefixes [][]byte) {
	cs := make([][]byte, 0, len(prefixes))
	for _, p := range prefixes {
		cs = append(cs, bytes.Clone(p))
	}
	slices.SortFunc(cs, bytes.Compare)
	e.snap.clients = slices.CompactFunc(cs, bytes.Equal)
}

// Edit calls fn with an editor over the current rules and publishes the
// result when fn returns: announces see all of fn's changes or none. Edits
// are serialized. fn must not keep the editor or call other Rules writers.
func (r *Rules) Edit(fn func(e *RulesEdit)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := *r.snap.Load() // copies the shard tables, not the shards
	e := &RulesEdit{snap: &cur, userByID: r.userByID, torrentByID: r.torrentByID}
	fn(e)
	cur.nUsers, cur.nTorrents = len(r.userByID), len(r.torrentByID)
	r.snap.Store(&cur)
}

// A RuleSet is a complete set of rules being built, for a full reload with
// Rules.Replace. Building does not disturb announces.
type RuleSet struct {
	e RulesEdit
}

// NewRuleSet returns an empty RuleSet: no users, no torrents, every
// client allowed.
func NewRuleSet() *RuleSet {
	s := &RuleSet{e: RulesEdit{
		snap:        &rulesSnapshot{seed: maphash.MakeSeed()},
		userByID:    make(map[uint32]passkey),
		torrentByID: make(map[uint32]torrentKeys),
	}}
	// Every shard is private to the set: no cloning while building.
	for i := range s.e.ownUsers {
		s.e.ownUsers[i], s.e.ownTorrents[i] = ^uint64(0), ^uint64(0)
	}
	return s
}

// SizeLike sizes s for as many rows as r holds now, shard by shard, so
// that a full reload does not rehash as it grows. Call it before adding
// rows.
func (s *RuleSet) SizeLike(r *Rules) {
	cur := r.snap.Load()
	r.mu.Lock()
	users, torrents := len(r.userByID), len(r.torrentByID)
	r.mu.Unlock()
	e := &s.e
	if len(e.userByID) > 0 || len(e.torrentByID) > 0 {
		return
	}
	e.userByID = make(map[uint32]passkey, users)
	e.torrentByID = make(map[uint32]torrentKeys, torrents)
	for i := range rulesShards {
		if n := len(cur.users[i]); n > 0 {
			e.snap.users[i] = make(map[passkey]userEntry, n)
		}
		if n := len(cur.torrents[i]); n > 0 {
			e.snap.torrents[i] = make(map[[20]byte]torrentEntry, n)
		}
	}
}

// Edit returns the set's editor. Unlike Rules.Edit, changes are visible to
// no announce until the set is passed to Replace.
func (s *RuleSet) Edit() *RulesEdit { return &s.e }

// Replace makes set the rules in effect, at once for every announce that
// starts after it returns. set must not be used afterwards.
func (r *Rules) Replace(set *RuleSet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	snap := set.e.snap
	snap.nUsers, snap.nTorrents = len(set.e.userByID), len(set.e.torrentByID)
	r.userByID, r.torrentByID = set.e.userByID, set.e.torrentByID
	r.snap.Store(snap)
	set.e = RulesEdit{}
}
