// Package flush is the tracker's storage side: it sends what the tracker
// counts to the web application's database in periodic batches, and keeps
// the batches across outages until they are applied.
//
// Storage drivers register with Register and are opened by name, as
// database/sql drivers are: import github.com/chihaya/chihaya/flush/postgres
// for "postgres". Open returns a Store. Its writers are the Flusher here
// (public mode's swarm counts) and private mode's Accountant (package
// private), each from its own Run goroutine; a driver whose database also
// holds the web application's users and torrents can serve private mode's
// rules too (private.RulesLoader). Store and Flusher.Stats are safe for
// concurrent use.
//
// # Swarm counts: Flusher
//
// Each process writes its own absolute seeder and leecher counts, keyed
// by a random ProcessID chosen at start, beside a heartbeat. The storage
// sums the processes whose heartbeat is recent (chihaya_torrent_stats),
// so with several processes each torrent's counts reflect all of them,
// and a process that dies stops counting after FlusherConfig.StaleAfter.
// Only changed swarms are sent; since values are absolute, retrying or
// losing a batch never miscounts.
//
// Completed downloads are cumulative instead: they must survive a
// process stopping or dying. The Flusher credits the growth of each
// swarm's completed count since it last looked, and sends the credits as
// deltas in numbered batches, exactly once (below), in the same
// transaction as the swarm counts. Its baseline is the table's counts
// when it is created, after the daemon restored its snapshot, so counts
// credited before a restart are not credited again; a swarm that is
// removed and comes back counts from zero. A graceful stop credits what
// is left before the process's rows are removed.
//
// # Exactly once
//
// This holds for the Flusher's completed downloads and for private mode's
// accounting batches alike. Each flush freezes the deltas collected so
// far into a batch with the next sequence number. The Store applies a
// batch in one transaction that first records (process, seq) in
// chihaya_flush_batches and applies nothing if it is already there. A
// failed attempt, including one whose COMMIT may or may not have reached
// the database, is retried with the same batch, unchanged, with
// exponential backoff capped at MaxBackoff and jittered
// (internal/backoff); meanwhile new deltas collect for the next sequence
// number, and two sequence numbers are never merged. When Run's context
// is cancelled, a final flush runs, bounded by ShutdownTimeout.
//
// What a crash can lose: deltas collected since the last committed batch
// (up to one Interval, or the whole outage if the database was down).
// What it cannot do: lose anything committed, or apply anything twice,
// because a new process has a new ProcessID.
package flush
