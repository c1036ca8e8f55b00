package flush

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/chihaya/chihaya/internal/registry"
	"github.com/chihaya/chihaya/peertable"
)

// A Driver opens Stores of one kind, such as "postgres". Drivers register
// themselves with Register from an init function of their package, which
// the daemon imports for its side effect, as database/sql drivers do.
//
// A Driver is a stateless factory: Open must be safe for concurrent use,
// and everything with state lives in the Store it returns.
type Driver interface {
	Open(cfg StoreConfig) (Store, error)
}

// A Store applies batches to the storage. Flushers and Accountants are its
// only writers; the web application reads what they wrote.
//
// A Store is safe for concurrent use by any number of goroutines: one
// Flusher and one Accountant per process normally share one. Every method
// that does I/O takes ctx first, honours its cancellation and deadline, and
// applies all of its batch or none of it.
type Store interface {
	// Migrate brings the tracker's tables up to the newest schema version
	// the driver knows. It is idempotent (a second run changes nothing)
	// and safe to run from several processes at once.
	Migrate(ctx context.Context) error

	// WriteSwarms records b.Process as alive and applies b's absolute
	// per-process swarm counts and, if b.Seq is not zero, adds
	// b.Completed to the cumulative completed counts exactly once per
	// (b.Process, b.Seq), with the same ledger and ordering rules as
	// ApplyAccounting. Applying the same batch twice gives the same rows
	// as applying it once. If the process's heartbeat row does not exist
	// (first flush, or another process reaped it as dead) and b.Full is
	// false, it applies nothing, completed counts included, and returns
	// ErrResync.
	WriteSwarms(ctx context.Context, b *SwarmBatch) error

	// RemoveProcess deletes a process's heartbeat and swarm rows, so a
	// process that shuts down gracefully stops counting at once. The
	// cumulative completed counts stay.
	RemoveProcess(ctx context.Context, p ProcessID) error

	// ApplyAccounting adds b's deltas, exactly once per (b.Process,
	// b.Seq): if the store has recorded that batch as applied, it applies
	// nothing and returns false. Batches of one process must be applied
	// in increasing Seq order; a store may forget all but the newest.
	ApplyAccounting(ctx context.Context, b *AccountingBatch) (applied bool, err error)

	// Close releases the store's connections. Calls in flight may fail.
	Close() error
}

// ErrResync is returned by Store.WriteSwarms for an incremental batch when
// the process's rows are gone; the Flusher answers with a full batch.
var ErrResync = errors.New("flush: process row missing, full batch needed")

// ProcessID identifies one run of one tracker process. It is random per
// start (NewProcessID), never reused, and stored as a UUID.
type ProcessID [16]byte

// NewProcessID returns a random (version 4) ProcessID.
func NewProcessID() ProcessID {
	var p ProcessID
	rand.Read(p[:])
	p[6] = p[6]&0x0f | 0x40
	p[8] = p[8]&0x3f | 0x80
	return p
}

// String formats p as a UUID.
func (p ProcessID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], p[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], p[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], p[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], p[8:10])
	b[23] = '-'
	hex.Encode(b[24:], p[10:])
	return string(b[:])
}

// SwarmBatch is one public-mode flush of one process's swarm counts.
// The Store may not keep it or its slices after the call returns.
type SwarmBatch struct {
	Process    ProcessID
	StartedAt  time.Time
	StaleAfter time.Duration // how long the heartbeat keeps the rows live
	// Full says Upserts holds every swarm of the process: any other row
	// of the process is deleted. Otherwise Upserts holds only swarms
	// whose counts changed and Deletes those gone since the last batch.
	Full    bool
	Upserts []SwarmRow
	Deletes []peertable.InfoHash
	// Seq numbers the frozen batch of completed downloads in Completed;
	// zero means the batch carries none. Like an AccountingBatch, it is
	// retried unchanged, under the same Seq, until it commits.
	Seq       uint64
	Completed []CompletedDelta // sorted by InfoHash
}

// CompletedDelta is a number of completed downloads to add to a torrent's
// cumulative count. Completed is never zero; At is when the Flusher saw
// the last of them (it reads the counts once per Interval).
type CompletedDelta struct {
	InfoHash  peertable.InfoHash
	Completed uint64
	At        time.Time
}

// SwarmRow is one swarm's counts in one process.
type SwarmRow struct {
	InfoHash peertable.InfoHash
	Counts   peertable.Counts
}

// AccountingBatch is one frozen set of private-mode deltas. Its Seq is
// fixed when it is frozen and it is retried unchanged until applied.
// Deltas are never negative and each counter is below 1<<63.
type AccountingBatch struct {
	Process ProcessID
	Seq     uint64
	// Torrents is sorted by (User, Torrent) and Users by User, so that
	// concurrent writers lock rows in the same order.
	Torrents []UserTorrentDelta
	Users    []UserDelta
}

// UserTorrentDelta is what one user did on one torrent during a batch.
// Snatches completed downloads were seen, the last one at CompletedAt.
type UserTorrentDelta struct {
	User, Torrent        uint32
	Uploaded, Downloaded uint64
	Snatches             uint32
	CompletedAt          time.Time
}

// SatAdd adds two counters, saturating at math.MaxInt64, the storage's
// bigint: a sum that would overflow stays at the cap instead of failing
// its batch forever.
func SatAdd(a, b uint64) uint64 {
	a, b = min(a, math.MaxInt64), min(b, math.MaxInt64)
	return min(a+b, math.MaxInt64) // a+b < 1<<64: no wrap
}

// UserDelta is the sum of a user's UserTorrentDeltas in a batch.
type UserDelta struct {
	User                 uint32
	Uploaded, Downloaded uint64
	Snatches             uint64
}

// Stats describe a Flusher's or an Accountant's progress, for metrics.
type Stats struct {
	Flushes uint64 // batches committed (or found already committed)
	Rows    uint64 // rows sent in committed batches
	Errors  uint64 // failed attempts
	// PendingKeys counts keys not yet committed: changed swarms and
	// swarms with completed downloads to credit (Flusher), or
	// (user, torrent) pairs (Accountant), frozen or still coalescing.
	PendingKeys int
	// Backlog is the age of the oldest data not yet committed; zero when
	// everything is.
	Backlog     time.Duration
	LastSuccess time.Time // zero before the first success
	// Failing reports that the latest attempt failed: data is waiting on
	// the store, not merely on the next interval.
	Failing bool
}

// drivers holds the registered drivers.
var drivers = registry.New[Driver]("flush")

// Register makes a driver available under name. It panics if d is nil, if
// name is empty or "none" (which configuration uses for no storage), or if
// name is already registered, as database/sql.Register does; it is meant
// for init functions.
func Register(name string, d Driver) { drivers.Register(name, d) }

// Drivers returns the names of the registered drivers, sorted.
func Drivers() []string { return drivers.Names() }

// migrateTimeout bounds the migration Open runs for StoreConfig.MigrateAtStart.
const migrateTimeout = time.Minute

// Open opens a Store with the driver registered as name. With
// cfg.MigrateAtStart it also runs Store.Migrate, and fails if that fails.
func Open(name string, cfg StoreConfig) (Store, error) {
	d, ok := drivers.Lookup(name)
	if !ok {
		known := Drivers()
		list := "none; import a driver package such as github.com/chihaya/chihaya/flush/postgres"
		if len(known) > 0 {
			list = strings.Join(known, ", ")
		}
		return nil, fmt.Errorf("flush: unknown driver %q (known: %s)", name, list)
	}
	s, err := d.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("flush: open %s: %w", name, err)
	}
	if cfg.MigrateAtStart {
		ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
		defer cancel()
		if err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("flush: migrate at start: %w", err)
		}
	}
	return s, nil
}
