// Package peertable keeps the tracker's swarms in memory: for each info
// hash, the peers that announced it recently, whether each one is seeding,
// and the swarm's counts. It answers an announce with peers of the
// requester's own address family and expires peers that stop announcing.
//
// # Contract
//
// A Table is safe for concurrent use. Announce and Scrape of any swarms run
// in parallel with each other, with Range, Tick, Sweep and the snapshot
// methods; the announce path takes no lock shared by two swarms, and
// readers (peer selection, counts, Range's walk of every swarm) never wait
// for writers. Announce appends compact peers to the caller's buffer and
// keeps no reference to it or to the Announce. Once a swarm and a peer
// exist and the buffer has room, Announce allocates nothing and reads no
// clock: time comes from Tick, which Run calls every second.
//
// Invariants callers rely on:
//
//   - IPv4 and IPv6 peers live in separate sets and an announce only ever
//     gets peers of its own family (a.Addr.Addr().Is4() decides; callers
//     pass unmapped addresses).
//   - A peer is its address and port: an announce changes or removes only
//     its own entry, and a stop for an unknown peer or swarm creates
//     nothing.
//   - Nobody is given itself, and a seeder is given only leechers.
//   - Counts are totals over both families. Completed counts completed
//     events from peers not already recorded as seeders, since the swarm
//     was created (or as restored by ReadSnapshot); a swarm removed when
//     empty starts again from zero.
//
// # Design
//
// Swarm index. A fixed power-of-two number of shards (sized from
// Config.Swarms), each an atomic pointer to an immutable open-addressed
// array of *swarm. A lookup is one load and a short probe, wait-free.
// Creating a swarm copies the shard's array with the new swarm in it and
// publishes the copy by compare-and-swap; on conflict it looks again. The
// shard and the probe start come from hash/maphash with a per-table seed:
// clients choose info hashes, so raw hash bytes would let them pile
// swarms into one shard.
//
// Swarms. Each swarm has a sync.Mutex taken only by its writers (an
// announce updating its own entry, and the sweep) and held for the update
// alone; peer selection and counts happen after it is released, from
// atomics. Hot swarms therefore serialize only their updates, never their
// readers, and no two swarms share a lock.
//
// Peer sets. A swarm has an IPv4 set inline and an IPv6 set allocated with
// its first IPv6 peer. A set is one array of pointer-free slots, seeders
// filling it from the front and leechers from the back, and one atomic
// word holding both counts. A seeder's answer walks only the leecher
// region, and a 100,000-peer swarm answers 50 peers by touching about 50
// slots. Removal moves the role's last slot into the hole. Growth and
// shrinking copy into a new array (capacities 2, 3, 4, 6, 8, 12, ...,
// whole malloc size classes) and publish it with an atomic store. The
// writer finds its own slot by a linear scan while a set holds at most 32
// peers, and above that through an index that only the writer changes:
// an open-addressed table of int32 positions (no keys, no pointers) keyed
// by a seeded hash of address and port. Its cells and the pointers to it
// are atomic so that Prefetch can follow it without the lock.
//
// Slots. An IPv4 slot is one atomic word: address, port and 16 bits of
// last-seen time, read and written whole. An IPv6 slot is three words, the
// third holding a sequence number, the port and the time; the writer makes
// the sequence odd, writes the address, then stores the new third word
// with the sequence even again. A reader skips a slot whose sequence is
// odd or changed while it read the address, so it never returns a torn
// address. A re-announce rewrites only the time, in one store.
//
// Selection. A leecher gets seeders and leechers in proportion to their
// numbers (rounded), topped up from the other role when one runs short;
// each role is walked from a random start (math/rand/v2's per-thread
// generator: no lock, no allocation) with wraparound, skipping the
// requester, stale slots and empty ones. Different requesters thus start
// at different places and see different subsets; slots of one walk are
// adjacent, which keeps a pick to a few cache lines. A walk visits at
// most 4·NumWant+64 slots of a role, so that a big swarm whose peers
// have all gone stale (they are swept only every quarter lifetime) costs
// an announce what a live one does, instead of a walk of the whole
// swarm in search of fresh peers; such a swarm may then give fewer peers
// than it has fresh ones.
//
// Clock and expiry. Tick stores the time in coarse units (a second, or
// 1/8192 of PeerLifetime if that is longer) in an atomic; an announce
// stamps its slot with the low 16 bits. An age is the 16-bit difference,
// shifted by one lifetime so that a stamp slightly ahead of the sweeper's
// clock reads as fresh. PeerLifetime is capped at 12 hours so that 65,536
// units span at least eight lifetimes; Run sweeps every quarter lifetime
// (1 to 30 seconds), far inside that. If the clock jumps by close to a
// multiple of 65,536 units between sweeps, a long-expired peer can look
// fresh again; it then lingers for at most two more lifetimes. Selection
// also skips stale peers, so a peer that expired since the last sweep is
// counted but not handed out.
//
// Sweep walks every swarm. It holds a swarm's lock for at most 256
// slots at a time, walking each role from its end towards its start: the
// slot that a removal moves into the hole has then already been examined,
// and peers added while the lock was free are fresh. Between batches it
// hands the lock to the announces waiting for it: an announce that finds
// the lock taken by the sweep counts itself in an atomic, and the sweep
// waits (at most 200µs) for that count to drop before it locks again;
// otherwise the sweep, still on its CPU, would win the lock back every
// time and a waiter would get it only after sync.Mutex's one-millisecond
// starvation threshold. An emptied swarm is
// marked dead under its lock and unlinked from its shard, except during
// the grace after ReadSnapshot (below).
//
// Snapshots. WriteSnapshot walks the index as Range does and holds each
// swarm's lock while it copies that swarm, so each record is one swarm as
// of one moment; the file as a whole is one moment only once announces
// have stopped. ReadSnapshot checks the whole file (CRC-32C, record
// count, reserved bits) before it applies anything, then creates or
// locks each swarm as Announce does, stamping restored peers with the
// current clock. A restored completed count may arrive without peers, and
// the next sweep would remove it with its swarm; so for one PeerLifetime
// after a ReadSnapshot the sweep keeps empty swarms whose completed count
// is not zero. Peers that return within that time keep the count alive;
// afterwards empty swarms go as before. The format is drawn in
// snapshot.go.
//
// # Why it is correct
//
// Memory ordering. All shared words are sync/atomic values, which the Go
// memory model makes sequentially consistent; there are no plain shared
// reads or writes, so there are no data races. A writer stores a slot
// before the counts word that admits it, and a grown array before the
// counts that need its room; a reader loads the counts first, then the
// array, then the slots, so every slot its counts admit was written into
// the array it reads. The reader still clamps the counts to the array's
// length, which covers an array shrunk after its counts were loaded.
// Slots a shrunk array never received are zero and are skipped (port 0).
//
// Dead swarms. A swarm is marked dead only by the sweep, under its lock,
// when it holds no peer, and a dead swarm never takes a peer again: an
// announce checks the mark after locking and, if set, unlinks the dead
// swarm itself (so it never waits for the sweep) and starts over, finding
// or creating the successor. A new swarm is published already holding its
// first peer (a restored one, its peers or its count, after the grace is
// set), so the sweep cannot kill it empty-handed in between. Hence
// no announce is ever recorded in an unlinked swarm. Each retry follows
// someone else's successful compare-and-swap or sweep, so the announce
// path is lock-free across swarms.
//
// What a reader may observe while writers run: a peer that was removed a
// moment ago (it read before the removal, or with counts loaded before
// it); a peer twice, or a peer missed, when a removal moves the last slot
// of a role into a hole the walk has or has not passed; a peer of the
// other role, just after a role change or when its counts are older than
// an array that was reshaped meanwhile (so a seeder may now and then be
// given a seeder). Never a torn entry, never a slot of the
// other family (the families are different arrays, and the family of the
// array is fixed by the set), never an empty slot, never itself. Counts
// are read from one word per family, so seeders and leechers of a family
// are consistent with each other.
//
// Lock order: Table.sweepMu (one sweep at a time), then a swarm's mu. No
// code holds two swarms' locks.
//
// # Costs
//
// Per peer: an IPv4 slot is 8 bytes and an IPv6 slot 24, plus at most a
// third spare room; sets above 32 peers add 8 to 16 bytes of index per
// peer. Per swarm: a 64-byte struct, a 24-byte array header and one or
// two pointers in its shard.
// Nothing per peer holds a pointer, so the garbage collector never scans
// peers, however many. With 1,000,000 IPv4 peers over 100,000 swarms the
// heap holds about 20 bytes per peer (BenchmarkMemory).
//
// Per operation: an announce on an existing swarm and peer is a seeded
// hash, a probe, an uncontended lock, a scan or index probe, two atomic
// stores and a walk of about NumWant slots; creating or removing a swarm
// also copies its shard's array (about 16 pointers at the Config.Swarms
// size). A sweep costs a few nanoseconds per peer. See BenchmarkMixed for
// the comparison with a sharded-RWMutex table.
//
// On a table larger than the caches most of that is waiting for memory:
// the swarm, the index cell and the slot are each a cache miss that an
// announce can only take after the one before. Prefetch takes the misses
// of a batch of requests together, a stage per hop, which cuts the
// table's time per announce by about a quarter in BenchmarkBatch.
package peertable
