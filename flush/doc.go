// Package flush is the tracker's storage side: it sends swarm counts
// (public mode) and per-user statistics (private mode) to the web
// application's database in periodic batches, and keeps them across
// outages until they are applied.
//
// Storage drivers register with Register and are opened by name, as
// database/sql drivers are: import github.com/chihaya/chihaya/flush/postgres
// for "postgres". Open returns a Store; a Flusher and an Accountant write
// to it, each from its own Run goroutine. Store, Flusher.Stats,
// Accountant.Account and Accountant.Stats are safe for concurrent use.
//
// # Public mode: Flusher
//
// Each process writes its own absolute seeder and leecher counts, keyed
// by a random ProcessID chosen at start, beside a heartbeat. The storage
// sums the processes whose heartbeat is recent (chihaya_torrent_stats),
// so with several processes each torrent's counts reflect all of them,
// and a process that dies stops counting after Config.StaleAfter. Only
// changed swarms are sent; since values are absolute, retrying or losing
// a batch never miscounts.
//
// Completed downloads are cumulative instead: they must survive a
// process stopping or dying. The Flusher credits the growth of each
// swarm's completed count since it last looked, and sends the credits as
// deltas in numbered batches, exactly once (below), in the same
// transaction as the swarm counts. Its baseline is the table's counts
// when it is created, after the daemon restored its snapshot, so counts
// credited before a restart are not credited again; a swarm that is
// removed and comes back counts from zero. A failed flush is retried with
// the same backoff as the Accountant's, and a graceful stop credits what
// is left before the process's rows are removed.
//
// # Private mode: Accountant
//
// Clients report running totals (uploaded, downloaded) per session; the
// Accountant turns them into deltas. A client session, an identity, is
// (torrent id, user id, peer id, key): the address is not part of it, so
// the same client announcing over IPv4 and IPv6 is counted once, and the
// torrent is the id from the Grant, so a hybrid torrent announced under
// its v1 hash and its truncated v2 hash is counted once. For each identity
// the Accountant keeps the last reported totals (its baseline), for
// Config.PeerLifetime after its last announce. Each counter, uploaded and
// downloaded alike, is credited as follows, where last is the baseline
// and reported the announce's total:
//
//	baseline  event      reported      credit           new baseline
//	none      started    any           reported         reported
//	none      other      any           0                reported (stopped: none)
//	last      any        >= last       reported - last  reported (stopped: none)
//	last      started    <  last       reported         reported
//	last      other      <  last       0                reported (stopped: none)
//
// So a credit is never negative and never more than the reported total.
// A first announce without started (a client the tracker has not seen
// since it restarted, or whose baseline expired) only sets the baseline:
// its earlier bytes may have been credited before the restart, and must
// not be twice. A counter that goes down marks a new client session; with
// started it counts from zero, without it nothing is credited until the
// next announce. A second started with totals at or above the baseline
// (the other address family) is an ordinary update.
//
// A completed event with left = 0 records one snatch per identity: the
// same announce over the other family does not snatch again.
//
// Deltas are summed in memory beside the identity's baseline, in one
// 80-byte slot of an open-addressing table, in 64 locked shards, so an
// announce usually costs one hash and the cache lines of one slot.
// Freezing a batch walks the shards that took credit since the last batch,
// a chunk of slots per lock, and sums their credit per (user, torrent) and
// per user. Memory is bounded by the number of identities, whatever the
// announce rate: the table is kept between three eighths and three
// quarters full, 168 bytes an identity at a million. An identity whose
// baseline expires or stops while it holds credit keeps its slot, without
// a baseline, only until that credit is frozen.
//
// # Private mode: Rules
//
// Rules is the tracker.Authorizer of private mode: which passkeys,
// torrents (v1 hashes and truncated v2 hashes) and client peer_id prefixes
// are allowed. Readers never lock: Authorize loads one pointer to an
// immutable, sharded snapshot and makes two map lookups, without
// allocating. Writers (one loader) copy only the shards a change touches.
// The postgres driver's LoadRules fills it from the web application's
// relations (flush/schema/webapp.sql is the contract) and keeps it fresh
// through LISTEN/NOTIFY, with a periodic full reload as a backstop.
//
// # Exactly once
//
// This holds for accounting batches and for the Flusher's completed
// downloads alike. Each flush freezes the deltas collected so far into a
// batch with the next sequence number. The Store applies a batch in one transaction that
// first records (process, seq) in chihaya_flush_batches and applies
// nothing if it is already there. A failed attempt, including one whose
// COMMIT may or may not have reached the database, is retried with the
// same batch, unchanged, with exponential backoff capped at
// Config.MaxBackoff and jittered; meanwhile new deltas collect for the
// next sequence number, and two sequence numbers are never merged. When
// Run's context is cancelled, a final flush runs, bounded by
// Config.ShutdownTimeout.
//
// What a crash can lose: deltas collected since the last committed batch
// (up to one Interval, or the whole outage if the database was down), and
// bytes a client transferred between the crash and its first announce to
// the new process, which only sets the baseline. What it cannot do: lose
// anything committed, or apply anything twice, because a new process has a
// new ProcessID and starts from fresh baselines.
package flush
