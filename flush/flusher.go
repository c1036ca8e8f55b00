package flush

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/chihaya/chihaya/peertable"
)

// A Flusher writes one process's swarm counts (public-mode aggregates) to
// a Store every Interval: only swarms whose counts changed since the last
// successful flush, deletions for swarms that are gone, and the process's
// heartbeat, in one transaction. Values are absolute, so a batch that
// failed or whose outcome is unknown is simply superseded by the next.
//
// Run owns the flushing; Stats and Process are safe to call concurrently
// with it.
type Flusher struct {
	store   Store
	table   *peertable.Table
	cfg     Config
	process ProcessID
	started time.Time

	// Owned by the goroutine in Run.
	prev, cur map[peertable.InfoHash]peertable.Counts // last committed, scratch
	full      bool                                    // next batch must be full
	batch     SwarmBatch                              // slices reused

	mu           sync.Mutex // guards the fields below
	st           Stats
	failingSince time.Time // first failure since the last success
}

// NewFlusher returns a Flusher of table's counts to store under a new
// random ProcessID. cfg is checked as Open checks it (DSN is not used).
func NewFlusher(store Store, table *peertable.Table, cfg Config) (*Flusher, error) {
	if store == nil || table == nil {
		panic("flush: NewFlusher with nil store or table")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	return &Flusher{
		store:   store,
		table:   table,
		cfg:     cfg,
		process: NewProcessID(),
		started: time.Now(),
		prev:    make(map[peertable.InfoHash]peertable.Counts),
		cur:     make(map[peertable.InfoHash]peertable.Counts),
		full:    true,
	}, nil
}

// Process returns the id under which the Flusher writes.
func (f *Flusher) Process() ProcessID { return f.process }

// Stats returns the Flusher's counters.
func (f *Flusher) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	if !f.failingSince.IsZero() {
		st.Backlog = time.Since(f.failingSince)
	}
	return st
}

// Run flushes every Interval until ctx is done. It then removes the
// process's rows from the store, bounded by ShutdownTimeout, so its swarms
// stop counting at once, and returns the error of that removal, if any.
// A failed flush is counted in Stats and retried at the next interval.
func (f *Flusher) Run(ctx context.Context) error {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	f.Flush(ctx)
	for {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), f.cfg.ShutdownTimeout)
			defer cancel()
			if err := f.store.RemoveProcess(sctx, f.process); err != nil {
				return fmt.Errorf("flush: remove process %v at shutdown: %w", f.process, err)
			}
			return nil
		case <-t.C:
			f.Flush(ctx)
		}
	}
}

// Flush writes one batch now. Run calls it; it must not be called
// concurrently with Run or with itself.
func (f *Flusher) Flush(ctx context.Context) error {
	clear(f.cur)
	f.table.Range(func(ih peertable.InfoHash, c peertable.Counts) bool {
		f.cur[ih] = c
		return true
	})
	err := f.write(ctx)
	if errors.Is(err, ErrResync) {
		f.full = true
		err = f.write(ctx)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.st.Errors++
		if f.failingSince.IsZero() {
			f.failingSince = time.Now()
		}
		f.st.PendingKeys = len(f.batch.Upserts) + len(f.batch.Deletes)
		return err
	}
	f.st.Flushes++
	f.st.Rows += uint64(len(f.batch.Upserts) + len(f.batch.Deletes))
	f.st.LastSuccess = time.Now()
	f.failingSince = time.Time{}
	f.st.PendingKeys = 0
	f.prev, f.cur = f.cur, f.prev
	f.full = false
	return nil
}

// write builds the batch from f.prev and f.cur and sends it.
func (f *Flusher) write(ctx context.Context) error {
	b := &f.batch
	b.Process = f.process
	b.StartedAt = f.started
	b.StaleAfter = f.cfg.StaleAfter
	b.Full = f.full
	b.Upserts = b.Upserts[:0]
	b.Deletes = b.Deletes[:0]
	for ih, c := range f.cur {
		if p, ok := f.prev[ih]; f.full || !ok || p != c {
			b.Upserts = append(b.Upserts, SwarmRow{InfoHash: ih, Counts: c})
		}
	}
	if !f.full {
		for ih := range f.prev {
			if _, ok := f.cur[ih]; !ok {
				b.Deletes = append(b.Deletes, ih)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	if err := f.store.WriteSwarms(ctx, b); err != nil {
		if errors.Is(err, ErrResync) {
			return err
		}
		return fmt.Errorf("flush: write %d swarms, delete %d: %w", len(b.Upserts), len(b.Deletes), err)
	}
	return nil
}
