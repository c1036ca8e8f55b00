// Package private is the tracker's private mode: it decides who may
// announce what, from the web application's users, torrents and allowed
// clients, and credits each user's uploads, downloads and snatches back
// to the web application exactly once.
//
// A private tracker gets three things from it:
//
//   - Rules, the tracker.Authorizer. An announce carries a passkey in its
//     path; Rules refuses it, with a reason the client shows its user,
//     unless the passkey belongs to an enabled user who may download, the
//     info hash (v1, or v2 truncated to 20 bytes) is a registered, allowed
//     torrent, and the peer_id starts with an allowed client prefix (an
//     empty list allows every client). The Grant it returns names the
//     user and the torrent by the web application's ids.
//   - A Source keeps Rules equal to the web application's relations:
//     LoadRules reads every row before the tracker serves, then the feed
//     follows changes as they are committed, with a periodic full reload
//     as a backstop. Loading rules is an optional capability of a storage
//     driver (RulesLoader, found on the opened flush.Store);
//     flush/schema/webapp.sql is the contract of the relations.
//   - The Accountant, the tracker.Accountant. It turns the running totals
//     clients report into deltas per (user, torrent) and per user, and
//     hands them to the flush.Store in numbered batches.
//
// # Rules: reads never wait
//
// Authorize loads one pointer to an immutable, sharded snapshot and makes
// two map lookups, without locking or allocating. Writers (the one feed)
// copy only the shards a change touches, so an edit of one row costs
// microseconds at a million rows and an announce sees all of an edit or
// none of it. A row that breaks the contract is skipped, logged and
// counted; a row deleted from its relation is forgotten, so its passkey or
// hash is refused.
//
// # Accounting: exact across address families and hybrids
//
// A client session, an identity, is (torrent id, user id, peer id, key):
// the address is not part of it, so the same client announcing over IPv4
// and IPv6 is counted once, and the torrent is the id from the Grant, so a
// hybrid torrent announced under its v1 hash and its truncated v2 hash is
// counted once. For each identity the Accountant keeps the last reported
// totals (its baseline), for AccountantConfig.PeerLifetime after its last
// announce. Each counter, uploaded and downloaded alike, is credited as
// follows, where last is the baseline and reported the announce's total:
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
// (the other address family) is an ordinary update. A completed event
// with left = 0 records one snatch per identity: the same announce over
// the other family does not snatch again.
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
// # Exactly once
//
// Each flush freezes the deltas collected so far into a
// flush.AccountingBatch with the next sequence number, and the Store
// applies it exactly once per (process, sequence number), as package flush
// describes. A failed batch is retried unchanged with capped, jittered
// backoff while new deltas collect for the next; when Run's context is
// cancelled a final flush runs, bounded by
// AccountantConfig.ShutdownTimeout. What a crash can lose: deltas
// collected since the last committed batch, and bytes a client
// transferred between the crash and its first announce to the new
// process, which only sets the baseline. What it cannot do: lose anything
// committed, or credit anything twice.
package private
