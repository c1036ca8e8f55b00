package conncache

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/chihaya/chihaya/internal/registry"
	"github.com/chihaya/chihaya/peertable"
)

// Config configures a Pool and the Mirror over it. Zero values mean "use
// the default".
type Config struct {
	// Addrs are the store's host:port addresses: one for a single server,
	// the Sentinels' with MasterName, or any of a Cluster's nodes.
	Addrs []string
	// MasterName is the Sentinel master name; empty means no Sentinel.
	MasterName string
	// Cluster says Addrs are Redis Cluster nodes. More than one address
	// without MasterName means a Cluster too; set it for a single seed
	// node.
	Cluster bool
	// Username and Password authenticate to the store; empty means none.
	Username string
	Password string
	// DB is the database number (single server and Sentinel only).
	DB int
	// KeyPrefix starts every key and channel name. Zero means "chihaya:".
	KeyPrefix string

	// SyncInterval is how often local changes are published. Zero means
	// 100ms.
	SyncInterval time.Duration
	// MaxPending bounds the changes kept while the store is away, one per
	// peer. On overflow further changes are dropped and the whole local
	// state is republished once the store answers. The log may overflow
	// up to 1/256 of MaxPending short of it (see changeLog), never beyond.
	// Zero means 1,000,000.
	MaxPending int
	// PeerLifetime and RefreshEvery must equal the local table's
	// (peertable.Config). Zero means 31 minutes and PeerLifetime/4, as
	// there.
	PeerLifetime time.Duration
	RefreshEvery time.Duration
	// Grace is how much longer than the owner's peers, beyond one refresh
	// period, copies are kept in other processes and in the store, so
	// that no copy expires before the owner's peer. Zero means 1 minute.
	Grace time.Duration
	// Timeout bounds each operation on the store. Zero means 5 seconds.
	Timeout time.Duration
	// Logger receives state changes (store lost, store back), never one
	// line per failure. Nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.KeyPrefix == "" {
		c.KeyPrefix = "chihaya:"
	}
	if c.SyncInterval == 0 {
		c.SyncInterval = 100 * time.Millisecond
	}
	if c.MaxPending == 0 {
		c.MaxPending = 1_000_000
	}
	if c.PeerLifetime == 0 {
		c.PeerLifetime = 31 * time.Minute
	}
	if c.RefreshEvery == 0 {
		c.RefreshEvery = c.PeerLifetime / 4
	}
	if c.Grace == 0 {
		c.Grace = time.Minute
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.SyncInterval < time.Millisecond || c.SyncInterval > time.Minute:
		return fmt.Errorf("conncache: SyncInterval %v out of range (1ms to 1m)", c.SyncInterval)
	case c.MaxPending < 0:
		return fmt.Errorf("conncache: MaxPending %d is negative", c.MaxPending)
	case c.PeerLifetime < time.Second:
		return fmt.Errorf("conncache: PeerLifetime %v is under a second", c.PeerLifetime)
	case c.RefreshEvery < 0 || c.Grace < 0 || c.Timeout < 0:
		return fmt.Errorf("conncache: RefreshEvery, Grace and Timeout must not be negative")
	case c.RemoteLifetime() > 12*time.Hour:
		return fmt.Errorf("conncache: PeerLifetime+RefreshEvery+Grace = %v exceeds 12h, the peer table's limit", c.RemoteLifetime())
	}
	return nil
}

// RemoteLifetime is how long a copy of another process's peer lives after
// its last publication, in Remote and in the store: PeerLifetime +
// RefreshEvery + Grace, defaults filled in.
func (c Config) RemoteLifetime() time.Duration {
	life := cmp.Or(c.PeerLifetime, 31*time.Minute)
	return life + cmp.Or(c.RefreshEvery, life/4) + cmp.Or(c.Grace, time.Minute)
}

// LogValue leaves the password out of logs.
func (c Config) LogValue() slog.Value {
	pw := ""
	if c.Password != "" {
		pw = "REDACTED"
	}
	return slog.GroupValue(
		slog.Any("addrs", c.Addrs),
		slog.String("master_name", c.MasterName),
		slog.String("username", c.Username),
		slog.String("password", pw),
		slog.Int("db", c.DB),
		slog.String("key_prefix", c.KeyPrefix),
		slog.Duration("sync_interval", c.SyncInterval),
		slog.Int("max_pending", c.MaxPending),
	)
}

// Origin identifies one tracker process from its start to its exit: a
// Pool picks a random one when it is opened.
type Origin [8]byte

// String returns o as 16 hex digits.
func (o Origin) String() string { return hex.EncodeToString(o[:]) }

// Op is what a Record says.
type Op uint8

const (
	// OpPut: Peer is in the swarm (new, still there, or changed role).
	OpPut Op = 1 + iota
	// OpRemove: Peer left the swarm (stopped or expired).
	OpRemove
	// OpCompleted: the origin's count of completed downloads in the
	// swarm is Completed.
	OpCompleted
)

// A Record is one change of one origin's state of one swarm.
type Record struct {
	Op        Op
	InfoHash  peertable.InfoHash
	Peer      peertable.Peer // OpPut and OpRemove
	Completed uint32         // OpCompleted
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	// EventSubscribed: the subscription is (again) established. Batches
	// published while it was not are lost: the subscriber must reload.
	EventSubscribed EventKind = 1 + iota
	// EventBroken: the subscription failed with Err; the Pool is
	// re-establishing it.
	EventBroken
	// EventBatch: Origin published Records.
	EventBatch
	// EventResync: Origin republished its whole state; copies of it held
	// elsewhere may be stale and must be reloaded.
	EventResync
)

// An Event is what a subscription delivers.
type Event struct {
	Kind    EventKind
	Origin  Origin
	Records []Record // EventBatch; valid only during the callback
	Err     error    // EventBroken
}

// A Driver opens Pools. Drivers are stateless factories, safe for
// concurrent use.
type Driver interface {
	// Open returns a Pool for cfg (defaults already filled in by
	// conncache.Open). It must not wait for the store: a process starts
	// and serves while the store is away.
	Open(cfg Config) (Pool, error)
}

// A Pool is one process's connection to the shared store, with its own
// random Origin. All methods are safe for concurrent use.
type Pool interface {
	// Origin returns the identity this Pool publishes under.
	Origin() Origin
	// Begin returns an empty batch of changes.
	Begin() Tx
	// Ping reports whether the store answers.
	Ping(ctx context.Context) error
	// Load calls fn for the state every other origin has in the store:
	// an OpPut record for each peer published at or after since, and an
	// OpCompleted record for each non-zero completed count. fn is called
	// from one goroutine; the Record is passed by value.
	Load(ctx context.Context, since time.Time, fn func(o Origin, r Record)) error
	// Subscribe delivers events (see EventKind) to fn, from one
	// goroutine, until ctx is done; then it returns nil. Batches of this
	// Pool's own origin are not delivered. The first event is
	// EventSubscribed once the subscription is established, and after
	// every EventBroken another EventSubscribed follows when it is back.
	// fn may block; batches wait meanwhile (and may be lost, which the
	// next EventSubscribed reports).
	Subscribe(ctx context.Context, fn func(e *Event)) error
	// Prune deletes this origin's state of every swarm for which keep
	// returns false.
	Prune(ctx context.Context, keep func(ih peertable.InfoHash) bool) error
	// Close releases the connections. It does not delete anything:
	// the state of a process that goes away expires on its own.
	Close() error
}

// A Tx is a batch of changes to this origin's state, sent by Commit. A Tx
// is used by one goroutine at a time; it keeps no reference to slices
// passed to it.
type Tx interface {
	// Put records p as a peer of ih (added, refreshed or changed role).
	Put(ih peertable.InfoHash, p peertable.Peer)
	// Remove records that p left ih.
	Remove(ih peertable.InfoHash, p peertable.Peer)
	// SetCompleted records this origin's completed count for ih.
	SetCompleted(ih peertable.InfoHash, n uint32)
	// Replace sets this origin's whole state of ih to peers and
	// completed, replacing what the store held, atomically per swarm.
	Replace(ih peertable.InfoHash, peers []peertable.Peer, completed uint32)
	// Resync makes Commit tell the other origins to reload this one's
	// state (EventResync), after the changes are stored.
	Resync()
	// Len is the number of changes in the batch.
	Len() int
	// Commit stores the changes and notifies the other origins of them.
	// The Tx is empty afterwards, whatever the result, and can be reused.
	// On error some changes may have been stored and notified.
	Commit(ctx context.Context) error
}

// drivers holds the registered drivers.
var drivers = registry.New[Driver]("conncache")

// Register makes a driver available by name. It panics if d is nil, if
// name is empty or "none", or if it is called twice with the same name.
func Register(name string, d Driver) { drivers.Register(name, d) }

// Drivers returns the sorted names of the registered drivers.
func Drivers() []string { return drivers.Names() }

// Open opens a Pool with the named driver. The name "" or "none" means no
// cache (a single process): Open returns nil, nil, and the caller runs
// without a Mirror. An unknown name or a Config value out of range is an
// error naming it.
func Open(name string, cfg Config) (Pool, error) {
	if name == "" || name == "none" {
		return nil, nil
	}
	d, ok := drivers.Lookup(name)
	if !ok {
		known := Drivers()
		return nil, fmt.Errorf("conncache: unknown driver %q (registered: %s; is the driver package imported?)", name, strings.Join(append(known, "none"), ", "))
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	p, err := d.Open(cfg)
	if err != nil {
		return nil, fmt.Errorf("conncache: open %s: %w", name, err)
	}
	return p, nil
}
