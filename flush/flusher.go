package flush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/chihaya/chihaya/internal/backoff"
	"github.com/chihaya/chihaya/peertable"
)

// A Flusher writes one process's swarm counts (public-mode aggregates) to
// a Store every Interval: only swarms whose counts changed since the last
// successful flush, deletions for swarms that are gone, and the process's
// heartbeat, in one transaction. Seeders and leechers are absolute, so a
// batch that failed or whose outcome is unknown is simply superseded by
// the next.
//
// Completed downloads are cumulative across processes and restarts, so
// they travel as deltas in the same transaction, exactly once (see the
// package comment). Per swarm, the Flusher credits the table's completed
// count minus the count it last credited. Its baseline is the table's
// counts when NewFlusher is called: the daemon creates the Flusher after
// restoring its snapshot, so counts credited before a restart are not
// credited again. A count that went down means the swarm was removed and
// created again; the lower count becomes the baseline, and nothing is
// credited for it.
//
// Run owns the flushing; Stats and Process are safe to call concurrently
// with it.
type Flusher struct {
	store   Store
	table   *peertable.Table
	cfg     FlusherConfig
	process ProcessID
	started time.Time

	// Owned by the goroutine in Run.
	prev, cur map[peertable.InfoHash]peertable.Counts // last committed, scratch
	full      bool                                    // next batch must be full
	batch     SwarmBatch                              // slices reused
	credited  map[peertable.InfoHash]uint32           // completed count credited, per live swarm
	pending   map[peertable.InfoHash]pendingCompleted // credited, not yet frozen
	seq       uint64                                  // of the newest frozen completed batch
	inflight  []CompletedDelta                        // frozen batch seq; nil once committed

	mu    sync.Mutex // guards the fields below
	st    Stats
	fails backoff.Outage
}

// pendingCompleted is a swarm's completed downloads awaiting a batch. It
// holds no pointers.
type pendingCompleted struct {
	n  uint64
	at int64 // Unix seconds of the flush that saw the last of them
}

// NewFlusher returns a Flusher of table's counts to store under a new
// random ProcessID, or an error naming the field of cfg that is out of
// range.
// The completed counts table holds now are taken as already credited:
// call NewFlusher after restoring a snapshot, before serving announces.
func NewFlusher(store Store, table *peertable.Table, cfg FlusherConfig) (*Flusher, error) {
	if store == nil || table == nil {
		panic("flush: NewFlusher with nil store or table")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	f := &Flusher{
		store:    store,
		table:    table,
		cfg:      cfg,
		process:  NewProcessID(),
		started:  time.Now(),
		prev:     make(map[peertable.InfoHash]peertable.Counts),
		cur:      make(map[peertable.InfoHash]peertable.Counts),
		full:     true,
		credited: make(map[peertable.InfoHash]uint32),
		pending:  make(map[peertable.InfoHash]pendingCompleted),
	}
	table.Range(func(ih peertable.InfoHash, c peertable.Counts) bool {
		f.credited[ih] = c.Completed
		return true
	})
	return f, nil
}

// Process returns the id under which the Flusher writes.
func (f *Flusher) Process() ProcessID { return f.process }

// Stats returns the Flusher's counters.
func (f *Flusher) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	if f.fails.Failing() {
		st.Backlog = time.Since(f.fails.Since())
		st.Failing = true
	}
	return st
}

// Run flushes every Interval until ctx is done. A failed flush is
// counted in Stats and retried with capped, jittered exponential backoff
// (FlusherConfig.MaxBackoff); the completed downloads of a failed batch are
// retried unchanged while new ones collect for the next. When ctx is
// done, Run flushes until every completed download it has seen is
// committed, then removes the process's rows from the store so its
// swarms stop counting at once, all bounded by ShutdownTimeout, and
// returns the error of that, if any.
//
// Completed downloads counted after the final flush started are lost:
// stop the frontends before cancelling ctx.
func (f *Flusher) Run(ctx context.Context) error {
	retry := f.cfg.backoff()
	next := func(err error) time.Duration {
		if err != nil {
			return retry.Next()
		}
		retry.Reset()
		return f.cfg.Interval
	}
	t := time.NewTimer(next(f.Flush(ctx)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return f.shutdown()
		case <-t.C:
			t.Reset(next(f.Flush(ctx)))
		}
	}
}

func (f *Flusher) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.ShutdownTimeout)
	defer cancel()
	// A completed batch in flight must commit first; then one more batch
	// takes what was counted until now.
	rounds := 1
	if f.inflight != nil {
		rounds = 2
	}
	if err := backoff.Rounds(ctx, f.cfg.backoff(), rounds, f.Flush); err != nil {
		return fmt.Errorf("flush: final swarm flush gave up with %d swarms' completed downloads uncredited: %w",
			len(f.inflight)+len(f.pending), err)
	}
	if err := f.store.RemoveProcess(ctx, f.process); err != nil {
		return fmt.Errorf("flush: remove process %v at shutdown: %w", f.process, err)
	}
	return nil
}

// Flush makes one attempt: it credits the completed downloads counted
// since the last attempt, freezes them into a new completed batch unless
// the last one has yet to commit, and writes the changed swarms with the
// completed batch in flight. Run calls it; it must not be called
// concurrently with Run or with itself.
func (f *Flusher) Flush(ctx context.Context) error {
	now := time.Now()
	clear(f.cur)
	f.table.Range(func(ih peertable.InfoHash, c peertable.Counts) bool {
		f.cur[ih] = c
		return true
	})
	f.credit(now.Unix())
	if f.inflight == nil && len(f.pending) > 0 {
		f.freeze()
	}
	err := f.write(ctx)
	if errors.Is(err, ErrResync) {
		f.full = true
		err = f.write(ctx)
	}
	f.mu.Lock()
	if err != nil && errors.Is(ctx.Err(), context.Canceled) {
		// Run is stopping: its final flush takes over, and an
		// interrupted flush is not a failing store.
		f.mu.Unlock()
		return err
	}
	if err != nil {
		f.st.Errors++
		f.st.PendingKeys = len(f.batch.Upserts) + len(f.batch.Deletes) + len(f.inflight) + len(f.pending)
		started := f.fails.Fail(now)
		f.mu.Unlock()
		if started {
			f.cfg.Logger.Error("flush: swarm flush failing; retrying with backoff", "err", err)
		}
		return err
	}
	f.st.Flushes++
	f.st.Rows += uint64(len(f.batch.Upserts) + len(f.batch.Deletes) + len(f.inflight))
	f.st.LastSuccess = time.Now()
	f.st.PendingKeys = len(f.pending)
	lasted, attempts, recovered := f.fails.End(f.st.LastSuccess)
	f.mu.Unlock()
	if recovered {
		f.cfg.Logger.Info("flush: swarm flush recovered", "failed_for", lasted, "failed_attempts", attempts)
	}
	f.prev, f.cur = f.cur, f.prev
	f.full = false
	f.inflight = nil
	return nil
}

// credit moves the growth of each swarm's completed count since the last
// call into f.pending, and follows swarms that went down or away.
func (f *Flusher) credit(now int64) {
	for ih, c := range f.cur {
		if base := f.credited[ih]; c.Completed > base { // a new swarm's base is 0
			p := f.pending[ih]
			p.n = SatAdd(p.n, uint64(c.Completed-base))
			p.at = now
			f.pending[ih] = p
		}
		f.credited[ih] = c.Completed
	}
	if len(f.credited) > len(f.cur) {
		for ih := range f.credited {
			if _, ok := f.cur[ih]; !ok {
				delete(f.credited, ih) // removed: if it comes back, it counts from 0
			}
		}
	}
}

// freeze moves f.pending into a new completed batch, the one in flight.
func (f *Flusher) freeze() {
	f.seq++
	b := make([]CompletedDelta, 0, len(f.pending))
	for ih, p := range f.pending {
		b = append(b, CompletedDelta{InfoHash: ih, Completed: p.n, At: time.Unix(p.at, 0)})
	}
	clear(f.pending)
	slices.SortFunc(b, func(x, y CompletedDelta) int { return bytes.Compare(x.InfoHash[:], y.InfoHash[:]) })
	f.inflight = b
}

// write builds the batch from f.prev, f.cur and f.inflight and sends it.
func (f *Flusher) write(ctx context.Context) error {
	b := &f.batch
	b.Process = f.process
	b.StartedAt = f.started
	b.StaleAfter = f.cfg.StaleAfter
	b.Full = f.full
	b.Upserts = b.Upserts[:0]
	b.Deletes = b.Deletes[:0]
	b.Seq, b.Completed = 0, nil
	if f.inflight != nil {
		b.Seq, b.Completed = f.seq, f.inflight
	}
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
		return fmt.Errorf("flush: write %d swarms, delete %d, completed batch %d of %d swarms: %w",
			len(b.Upserts), len(b.Deletes), b.Seq, len(b.Completed), err)
	}
	return nil
}
