package flush

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"

	"github.com/chihaya/chihaya/peertable"
)

// memStore is an in-memory Store that behaves like the postgres driver in
// the ways the Flusher depends on, with failure injection.
type memStore struct {
	mu sync.Mutex // guards the fields below
	// fail, if set, is asked before each call; a non-nil error fails it.
	// applied says whether the change was made anyway (a commit whose
	// reply was lost).
	fail      func(op string) (applied bool, err error)
	processes map[ProcessID]bool
	swarms    map[ProcessID]map[peertable.InfoHash]peertable.Counts
	completed map[peertable.InfoHash]uint64 // cumulative
	ledger    map[ProcessID]uint64          // newest applied seq
	swarmLog  []SwarmBatch                  // every WriteSwarms call, deep copies
}

func newMemStore() *memStore {
	return &memStore{
		processes: make(map[ProcessID]bool),
		swarms:    make(map[ProcessID]map[peertable.InfoHash]peertable.Counts),
		completed: make(map[peertable.InfoHash]uint64),
		ledger:    make(map[ProcessID]uint64),
	}
}

var errInjected = errors.New("injected failure")

func (m *memStore) Migrate(ctx context.Context) error { return nil }
func (m *memStore) Close() error                      { return nil }

// check runs the failure hook.
func (m *memStore) check(op string) (apply bool, err error) {
	if m.fail == nil {
		return true, nil
	}
	return m.fail(op)
}

func (m *memStore) WriteSwarms(ctx context.Context, b *SwarmBatch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp := *b
	cp.Upserts = slices.Clone(b.Upserts)
	cp.Deletes = slices.Clone(b.Deletes)
	cp.Completed = slices.Clone(b.Completed)
	m.swarmLog = append(m.swarmLog, cp)
	apply, err := m.check("swarms")
	if !apply {
		return err
	}
	if !m.processes[b.Process] && !b.Full {
		return ErrResync
	}
	m.processes[b.Process] = true
	rows := m.swarms[b.Process]
	if rows == nil || b.Full {
		rows = make(map[peertable.InfoHash]peertable.Counts)
		m.swarms[b.Process] = rows
	}
	for _, r := range b.Upserts {
		rows[r.InfoHash] = r.Counts
	}
	for _, ih := range b.Deletes {
		delete(rows, ih)
	}
	if b.Seq != 0 && b.Seq > m.ledger[b.Process] {
		m.ledger[b.Process] = b.Seq
		for _, d := range b.Completed {
			m.completed[d.InfoHash] += d.Completed
		}
	}
	return err
}

// completedCounts returns a copy of the cumulative completed counts.
func (m *memStore) completedCounts() map[peertable.InfoHash]uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.completed)
}

func (m *memStore) RemoveProcess(ctx context.Context, p ProcessID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if apply, err := m.check("remove"); !apply {
		return err
	}
	delete(m.processes, p)
	delete(m.swarms, p)
	return nil
}

// ApplyAccounting is not the Flusher's: private's tests keep their own
// store for accounting.
func (m *memStore) ApplyAccounting(ctx context.Context, b *AccountingBatch) (bool, error) {
	return false, errors.New("memStore: accounting batches are not the Flusher's")
}

func (m *memStore) swarmsOf(p ProcessID) map[peertable.InfoHash]peertable.Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.swarms[p])
}

func (m *memStore) setFail(f func(op string) (applied bool, err error)) {
	m.mu.Lock()
	m.fail = f
	m.mu.Unlock()
}
