// Package conncache mirrors swarms between tracker processes through a
// shared store ("the cache", Redis in production).
//
// Each process is authoritative for the peers that announced to it. A
// Mirror collects the changes the tracker core reports (tracker.Mirror),
// coalesces them per peer, and publishes them through a Pool in one batch
// every SyncInterval. It also subscribes to the batches other processes
// publish and applies them to a second peertable.Table, Remote, which the
// core reads after the local table when it fills replies and counts.
// IPv4 and IPv6 peers are kept apart all the way: a peer's family is part
// of its record and Remote, like every Table, never mixes them.
//
// No request waits on the store. While it is slow or away, changes stay in
// the Mirror's log, one entry per peer, at most Config.MaxPending of them;
// on overflow they are dropped. Once the store answers again the Mirror
// republishes its whole local state and tells the others to reload it, and
// whenever its own subscription was broken it reloads theirs, so that every
// process and the store converge.
//
// Drivers register themselves by name, as database/sql drivers do:
//
//	import _ "github.com/chihaya/chihaya/conncache/redis"
//
//	pool, err := conncache.Open("redis", cfg) // nil, nil for "" or "none"
//
// The registry holds stateless factories only; Pools and Mirrors are
// instances passed around explicitly.
//
// Concurrency: Register, Drivers and Open are safe for concurrent use.
// Every Pool must be safe for concurrent use; a Tx is used by one goroutine
// at a time. Mirror.Changed and Mirror.Expired are safe for concurrent use,
// never block on I/O and do not allocate in steady state; Run owns every
// goroutine the Mirror starts and waits for them before it returns. Lock
// order: a peertable swarm lock (held while OnExpire runs) may be held when
// a Mirror log shard's lock is taken, never the other way round.
package conncache
