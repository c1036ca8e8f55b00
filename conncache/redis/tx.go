package redis

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/peertable"
)

// applyScript applies one swarm's changes to one origin's key:
//
//	KEYS[1] the key
//	ARGV[1] expiry in milliseconds
//	ARGV[2] "1" to delete the key first (Replace), else "0"
//	ARGV[3] the operations, packed into one binary string:
//
//	len field
//	  1 op: 1 HSET, 2 HDEL
//	  1 field length f
//	  f field
//	  1 value length v (HSET only)
//	  v value (HSET only)
//
// One packed argument rather than one per field and value keeps the
// publisher's cost per change to a few appended bytes. Runs of the same
// operation go to Redis as one HSET or HDEL of many fields; they keep
// their order, so a later change of a field still wins. Being one script,
// it runs atomically: nobody sees a replaced swarm half written, and the
// key never lacks its expiry.
var applyScript = goredis.NewScript(`
local k, ops = KEYS[1], ARGV[3]
if ARGV[2] == '1' then redis.call('DEL', k) end
local run, cur = {}, 0
local function flush()
	if cur == 1 then
		redis.call('HSET', k, unpack(run))
	elseif cur == 2 then
		redis.call('HDEL', k, unpack(run))
	end
	run = {}
end
local i, n = 1, #ops
while i <= n do
	local op, fl = string.byte(ops, i, i + 1)
	if op ~= cur then
		flush()
		cur = op
	end
	run[#run + 1] = string.sub(ops, i + 2, i + 1 + fl)
	i = i + 2 + fl
	if op == 1 then
		local vl = string.byte(ops, i)
		run[#run + 1] = string.sub(ops, i + 1, i + vl)
		i = i + 1 + vl
	end
end
flush()
redis.call('PEXPIRE', k, ARGV[1])
return 0
`)

// Operations packed into applyScript's ARGV[3].
const (
	scriptPut = 1
	scriptDel = 2
)

// The words of "EVALSHA <applyScript> 1 <key> <ttl> <replace> <ops>" that
// never change, boxed once. argOneKey doubles as ARGV[2]'s "1".
var (
	argEvalSha  any = "evalsha"
	argApplySHA any = applyScript.Hash()
	argOneKey   any = "1"
	argReplace      = argOneKey
	argKeep     any = "0"
)

// evalArgs is the number of words of the EVALSHA.
const evalArgs = 7

// maxScriptOps bounds the operations per script call, so that a huge
// swarm does not hold the server for long (nor exceed Lua's stack).
const maxScriptOps = 1024

// Begin implements conncache.Pool.
func (p *Pool) Begin() conncache.Tx {
	return &tx{p: p, swarms: make(map[peertable.InfoHash]*swarmOps)}
}

// A tx keeps its buffers when committed, so that a Tx reused for batch
// after batch (as the Mirror does) stops allocating for them.
type tx struct {
	p      *Pool
	swarms map[peertable.InfoHash]*swarmOps
	order  []peertable.InfoHash // swarms in first-touched order
	free   []*swarmOps
	n      int
	resync bool
	stamp  uint32 // unix seconds of this batch's first put; 0 until then

	// The notification, encoded as changes arrive: msgs[starts[i]:
	// starts[i+1]] (or to the end) is the i-th message.
	msgs   []byte
	starts []int
	out    [][]byte // Commit's view of msgs
	keys   []byte   // the keys of exec's commands
	args   []any    // the arguments of exec's commands
	evals  []*goredis.Cmd
	pubs   []*goredis.IntCmd
}

type swarmOps struct {
	replace bool
	ops     []byte // packed as applyScript's ARGV[3] wants them
	cuts    []int  // offsets in ops of every maxScriptOps-th operation
	nops    int
}

func (t *tx) swarm(ih peertable.InfoHash) *swarmOps {
	s := t.swarms[ih]
	if s == nil {
		if n := len(t.free); n > 0 {
			s, t.free = t.free[n-1], t.free[:n-1]
		} else {
			// Room for a few changes: most swarms see one or two a batch.
			s = &swarmOps{ops: make([]byte, 0, 64)}
		}
		t.swarms[ih] = s
		t.order = append(t.order, ih)
	}
	return s
}

// op starts an operation on s's field of length fl.
func (s *swarmOps) op(op byte, fl int) {
	if s.nops > 0 && s.nops%maxScriptOps == 0 {
		s.cuts = append(s.cuts, len(s.ops))
	}
	s.nops++
	s.ops = append(s.ops, op, byte(fl))
}

func (s *swarmOps) putPeer(ap netip.AddrPort, seeder bool, stamp uint32) {
	fl := peertable.PeerLenV4
	if ap.Addr().Is6() {
		fl = peertable.PeerLenV6
	}
	s.op(scriptPut, fl)
	s.ops = putPeer(s.ops, ap)
	s.ops = append(s.ops, valueLen)
	s.ops = appendPeerValue(s.ops, seeder, stamp)
}

func (s *swarmOps) putCompleted(n uint32) {
	s.op(scriptPut, len(fieldCompleted))
	s.ops = append(s.ops, fieldCompleted...)
	at := len(s.ops)
	s.ops = append(s.ops, 0)
	s.ops = appendCompletedValue(s.ops, n)
	s.ops[at] = byte(len(s.ops) - at - 1)
}

func (t *tx) now() uint32 {
	if t.stamp == 0 {
		t.stamp = uint32(time.Now().Unix())
	}
	return t.stamp
}

// record appends r to the notification.
func (t *tx) record(r *conncache.Record) {
	t.reserve(maxRecord)
	t.msgs = appendRecord(t.msgs, r)
}

// reserve starts a new message unless the current one has n bytes left.
func (t *tx) reserve(n int) {
	if k := len(t.starts); k > 0 && len(t.msgs)-t.starts[k-1]+n <= maxMessage {
		return
	}
	t.starts = append(t.starts, len(t.msgs))
	t.msgs = appendHeader(t.msgs, t.p.origin)
}

// Put implements conncache.Tx.
func (t *tx) Put(ih peertable.InfoHash, p peertable.Peer) {
	t.swarm(ih).putPeer(p.Addr, p.Seeder, t.now())
	t.n++
	t.record(&conncache.Record{Op: conncache.OpPut, InfoHash: ih, Peer: p})
}

// Remove implements conncache.Tx.
func (t *tx) Remove(ih peertable.InfoHash, p peertable.Peer) {
	s := t.swarm(ih)
	if p.Addr.Addr().Is6() {
		s.op(scriptDel, peertable.PeerLenV6)
	} else {
		s.op(scriptDel, peertable.PeerLenV4)
	}
	s.ops = putPeer(s.ops, p.Addr)
	t.n++
	t.record(&conncache.Record{Op: conncache.OpRemove, InfoHash: ih, Peer: p})
}

// SetCompleted implements conncache.Tx.
func (t *tx) SetCompleted(ih peertable.InfoHash, n uint32) {
	t.swarm(ih).putCompleted(n)
	t.n++
	t.record(&conncache.Record{Op: conncache.OpCompleted, InfoHash: ih, Completed: n})
}

// Replace implements conncache.Tx. Other origins learn of the new state
// by reloading (Resync), not from the notification.
func (t *tx) Replace(ih peertable.InfoHash, peers []peertable.Peer, completed uint32) {
	s := t.swarm(ih)
	s.replace = true
	s.ops, s.cuts = s.ops[:0], s.cuts[:0]
	t.n -= s.nops
	s.nops = 0
	stamp := t.now()
	for _, p := range peers {
		s.putPeer(p.Addr, p.Seeder, stamp)
	}
	if completed > 0 {
		s.putCompleted(completed)
	}
	t.n += s.nops
	if s.nops == 0 {
		t.n++ // the deletion itself is a change
	}
}

// Resync implements conncache.Tx.
func (t *tx) Resync() { t.resync = true }

// Len implements conncache.Tx.
func (t *tx) Len() int { return t.n }

func (t *tx) reset() {
	for _, ih := range t.order {
		s := t.swarms[ih]
		s.ops, s.cuts, s.nops, s.replace = s.ops[:0], s.cuts[:0], 0, false
		t.free = append(t.free, s)
	}
	clear(t.swarms)
	t.order = t.order[:0]
	t.msgs, t.starts = t.msgs[:0], t.starts[:0]
	clear(t.out)
	t.out = t.out[:0]
	clear(t.evals)
	t.evals = t.evals[:0]
	clear(t.args)
	t.args = t.args[:0]
	clear(t.pubs)
	t.pubs = t.pubs[:0]
	t.n = 0
	t.resync = false
	t.stamp = 0
}

// Commit implements conncache.Tx. On a single server the scripts and the
// notification go in one pipeline (one round trip). In a Cluster the
// scripts are pipelined to their slots' masters first, and the
// notification follows once they are stored.
func (t *tx) Commit(ctx context.Context) error {
	defer t.reset()
	if len(t.order) == 0 && !t.resync {
		return nil
	}
	msgs := t.messages()
	if !t.p.scriptLoaded.Load() {
		if err := applyScript.Load(ctx, t.p.c).Err(); err != nil {
			return fmt.Errorf("redis: load script: %w", t.p.failed(err))
		}
		t.p.scriptLoaded.Store(true)
	}
	noScript, sent, err := t.exec(ctx, msgs, true)
	if noScript {
		// A restarted or failed-over server lacks the script: load it
		// and run the scripts again (they are idempotent), without the
		// notification if it went out.
		t.p.scriptLoaded.Store(false)
		if lerr := applyScript.Load(ctx, t.p.c).Err(); lerr != nil {
			return fmt.Errorf("redis: load script: %w", t.p.failed(lerr))
		}
		t.p.scriptLoaded.Store(true)
		_, _, err = t.exec(ctx, msgs, !sent)
	}
	if err != nil {
		return fmt.Errorf("redis: commit %d changes: %w", t.n, t.p.failed(err))
	}
	return nil
}

// exec sends the scripts and, if publish, the messages. It reports whether
// a script was missing and whether the messages were sent.
func (t *tx) exec(ctx context.Context, msgs [][]byte, publish bool) (noScript, sent bool, err error) {
	pipe := t.p.c.Pipeline()
	evals := t.evals[:0]
	// EVALSHA through Do, with arguments boxed once per Pool or kept in
	// buffers reused by every Commit: go-redis's EvalSha would box the
	// command name, the hash and the key anew for each call.
	keys := slices.Grow(t.keys[:0], len(t.order)*(len(t.p.prefix)+keyLen))
	args := slices.Grow(t.args[:0], len(t.order)*evalArgs)
	for _, ih := range t.order {
		s := t.swarms[ih]
		at := len(keys)
		keys = t.p.appendKey(keys, ih, t.p.origin)
		key := keys[at:len(keys):len(keys)]
		replace := argKeep
		if s.replace {
			replace = argReplace
		}
		from := 0
		for i := 0; i <= len(s.cuts); i++ {
			to := len(s.ops)
			if i < len(s.cuts) {
				to = s.cuts[i]
			}
			at := len(args)
			args = append(args, // evalArgs of them
				argEvalSha, argApplySHA, argOneKey, key, t.p.ttlArg, replace, s.ops[from:to:to])
			cmd := pipe.Do(ctx, args[at:len(args):len(args)]...)
			cmd.SetFirstKeyPos(3) // for the Cluster's routing
			evals = append(evals, cmd)
			from, replace = to, argKeep
		}
	}
	t.keys, t.args = keys, args
	t.evals = evals
	if t.p.cluster != nil && publish && len(msgs) > 0 && pipe.Len() > 0 {
		// Notify only once the data is stored everywhere.
		_, err = pipe.Exec(ctx)
		if noScript = anyNoScript(evals); noScript || err != nil {
			return noScript, false, err
		}
		pipe = t.p.c.Pipeline()
		evals = evals[:0]
	}
	pubs := t.pubs[:0]
	if publish {
		for _, m := range msgs {
			pubs = append(pubs, pipe.Publish(ctx, t.p.channel, m))
		}
	}
	t.pubs = pubs
	_, err = pipe.Exec(ctx)
	sent = true
	for _, c := range pubs {
		if c.Err() != nil {
			sent = false
		}
	}
	return anyNoScript(evals), sent, err
}

func anyNoScript(cmds []*goredis.Cmd) bool {
	for _, c := range cmds {
		if c.Err() != nil && strings.HasPrefix(c.Err().Error(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// messages returns the notification, split into messages of at most
// maxMessage bytes, with the resync record if asked for.
func (t *tx) messages() [][]byte {
	if t.resync {
		t.reserve(1)
		t.msgs = append(t.msgs, kindResync)
	}
	for i, at := range t.starts {
		end := len(t.msgs)
		if i+1 < len(t.starts) {
			end = t.starts[i+1]
		}
		t.out = append(t.out, t.msgs[at:end])
	}
	return t.out
}
