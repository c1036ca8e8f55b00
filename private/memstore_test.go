package private

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/chihaya/chihaya/flush"
)

// memStore is an in-memory flush.Store that applies accounting batches
// as the postgres driver does (exactly once per process and sequence
// number), with failure injection. Swarm batches are the Flusher's, not
// the Accountant's, and are refused.
type memStore struct {
	mu sync.Mutex // guards the fields below
	// fail, if set, is asked before each call; a non-nil error fails it.
	// applied says whether the change was made anyway (a commit whose
	// reply was lost).
	fail     func(op string) (applied bool, err error)
	ledger   map[flush.ProcessID]uint64 // newest applied seq
	ut       map[utKey]flush.UserTorrentDelta
	users    map[uint32]flush.UserDelta
	attempts []flush.AccountingBatch // every ApplyAccounting call, deep copies
}

func newMemStore() *memStore {
	return &memStore{
		ledger: make(map[flush.ProcessID]uint64),
		ut:     make(map[utKey]flush.UserTorrentDelta),
		users:  make(map[uint32]flush.UserDelta),
	}
}

var errInjected = errors.New("injected failure")

var errNotAccounting = errors.New("memStore: swarm batches are not the Accountant's")

func (m *memStore) Migrate(ctx context.Context) error { return nil }
func (m *memStore) Close() error                      { return nil }
func (m *memStore) WriteSwarms(ctx context.Context, b *flush.SwarmBatch) error {
	return errNotAccounting
}
func (m *memStore) RemoveProcess(ctx context.Context, p flush.ProcessID) error {
	return errNotAccounting
}

// check runs the failure hook.
func (m *memStore) check(op string) (apply bool, err error) {
	if m.fail == nil {
		return true, nil
	}
	return m.fail(op)
}

func (m *memStore) ApplyAccounting(ctx context.Context, b *flush.AccountingBatch) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := *b
	cp.Torrents = slices.Clone(b.Torrents)
	cp.Users = slices.Clone(b.Users)
	m.attempts = append(m.attempts, cp)
	apply, err := m.check("accounting")
	if !apply {
		return false, err
	}
	if b.Seq <= m.ledger[b.Process] {
		return false, err
	}
	m.ledger[b.Process] = b.Seq
	for _, d := range b.Torrents {
		k := utKey{d.User, d.Torrent}
		t := m.ut[k]
		t.User, t.Torrent = d.User, d.Torrent
		t.Uploaded += d.Uploaded
		t.Downloaded += d.Downloaded
		t.Snatches += d.Snatches
		m.ut[k] = t
	}
	for _, d := range b.Users {
		u := m.users[d.User]
		u.User = d.User
		u.Uploaded += d.Uploaded
		u.Downloaded += d.Downloaded
		u.Snatches += d.Snatches
		m.users[d.User] = u
	}
	return err == nil, err
}

// totals returns copies of the applied per-user-torrent and per-user rows.
func (m *memStore) totals() (map[utKey]flush.UserTorrentDelta, map[uint32]flush.UserDelta) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.ut), maps.Clone(m.users)
}

func (m *memStore) setFail(f func(op string) (applied bool, err error)) {
	m.mu.Lock()
	m.fail = f
	m.mu.Unlock()
}
