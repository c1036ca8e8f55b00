package redis

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
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
//	ARGV[3…] operations: "p", field, value (HSET) or "d", field (HDEL)
//
// Being one script, it runs atomically: nobody sees a replaced swarm half
// written, and the key never lacks its expiry.
var applyScript = goredis.NewScript(`
local k = KEYS[1]
if ARGV[2] == '1' then redis.call('DEL', k) end
local i, n = 3, #ARGV
while i <= n do
	if ARGV[i] == 'p' then
		redis.call('HSET', k, ARGV[i+1], ARGV[i+2])
		i = i + 3
	else
		redis.call('HDEL', k, ARGV[i+1])
		i = i + 2
	end
end
redis.call('PEXPIRE', k, ARGV[1])
return 0
`)

// maxScriptOps bounds the operations per script call, so that a huge
// swarm does not hold the server for long (nor exceed Lua's stack).
const maxScriptOps = 1024

// Begin implements conncache.Pool.
func (p *Pool) Begin() conncache.Tx {
	return &tx{p: p, swarms: make(map[peertable.InfoHash]*swarmOps)}
}

type tx struct {
	p      *Pool
	swarms map[peertable.InfoHash]*swarmOps
	order  []peertable.InfoHash // swarms in first-touched order
	recs   []conncache.Record   // what the notification carries
	n      int
	resync bool
	free   []*swarmOps
}

type swarmOps struct {
	replace bool
	ops     []any // "p", field, value / "d", field
	nops    int
}

func (t *tx) swarm(ih peertable.InfoHash) *swarmOps {
	s := t.swarms[ih]
	if s == nil {
		if n := len(t.free); n > 0 {
			s, t.free = t.free[n-1], t.free[:n-1]
		} else {
			s = new(swarmOps)
		}
		t.swarms[ih] = s
		t.order = append(t.order, ih)
	}
	return s
}

func field(ap netip.AddrPort) string {
	var b [peertable.PeerLenV6]byte
	return string(putPeer(b[:0], ap))
}

func (t *tx) put(ih peertable.InfoHash, p peertable.Peer, now time.Time) {
	s := t.swarm(ih)
	s.ops = append(s.ops, "p", field(p.Addr), peerValue(p.Seeder, now))
	s.nops++
	t.n++
}

// Put implements conncache.Tx.
func (t *tx) Put(ih peertable.InfoHash, p peertable.Peer) {
	t.put(ih, p, time.Now())
	t.recs = append(t.recs, conncache.Record{Op: conncache.OpPut, InfoHash: ih, Peer: p})
}

// Remove implements conncache.Tx.
func (t *tx) Remove(ih peertable.InfoHash, p peertable.Peer) {
	s := t.swarm(ih)
	s.ops = append(s.ops, "d", field(p.Addr))
	s.nops++
	t.n++
	t.recs = append(t.recs, conncache.Record{Op: conncache.OpRemove, InfoHash: ih, Peer: p})
}

// SetCompleted implements conncache.Tx.
func (t *tx) SetCompleted(ih peertable.InfoHash, n uint32) {
	s := t.swarm(ih)
	s.ops = append(s.ops, "p", fieldCompleted, completedValue(n))
	s.nops++
	t.n++
	t.recs = append(t.recs, conncache.Record{Op: conncache.OpCompleted, InfoHash: ih, Completed: n})
}

// Replace implements conncache.Tx. Other origins learn of the new state
// by reloading (Resync), not from the notification.
func (t *tx) Replace(ih peertable.InfoHash, peers []peertable.Peer, completed uint32) {
	s := t.swarm(ih)
	s.replace = true
	s.ops = s.ops[:0]
	t.n -= s.nops
	s.nops = 0
	now := time.Now()
	for _, p := range peers {
		t.put(ih, p, now)
	}
	if completed > 0 {
		s.ops = append(s.ops, "p", fieldCompleted, completedValue(completed))
		s.nops++
		t.n++
	}
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
		clear(s.ops)
		s.ops, s.nops, s.replace = s.ops[:0], 0, false
		t.free = append(t.free, s)
	}
	clear(t.swarms)
	t.order = t.order[:0]
	t.recs = t.recs[:0]
	t.n = 0
	t.resync = false
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
	ttl := strconv.FormatInt(t.p.ttl.Milliseconds(), 10)
	var evals []*goredis.Cmd
	for _, ih := range t.order {
		s := t.swarms[ih]
		key := t.p.Key(ih, t.p.origin)
		replace := s.replace
		ops := s.ops
		for first := true; first || len(ops) > 0; first = false {
			// Split at an operation boundary.
			end, cnt := 0, 0
			for end < len(ops) && cnt < maxScriptOps {
				if ops[end] == "p" {
					end += 3
				} else {
					end += 2
				}
				cnt++
			}
			args := make([]any, 0, 2+end)
			r := "0"
			if replace {
				r = "1"
			}
			args = append(args, ttl, r)
			args = append(args, ops[:end]...)
			evals = append(evals, applyScript.EvalSha(ctx, pipe, []string{key}, args...))
			ops, replace = ops[end:], false
		}
	}
	if t.p.cluster != nil && publish && len(msgs) > 0 && pipe.Len() > 0 {
		// Notify only once the data is stored everywhere.
		_, err = pipe.Exec(ctx)
		if noScript = anyNoScript(evals); noScript || err != nil {
			return noScript, false, err
		}
		pipe = t.p.c.Pipeline()
		evals = nil
	}
	var pubs []*goredis.IntCmd
	if publish {
		for _, m := range msgs {
			pubs = append(pubs, pipe.Publish(ctx, t.p.channel, m))
		}
	}
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

// messages encodes the notification, split into messages of at most
// maxMessage bytes.
func (t *tx) messages() [][]byte {
	var msgs [][]byte
	var cur []byte
	add := func(n int) {
		if cur != nil && len(cur)+n > maxMessage {
			msgs = append(msgs, cur)
			cur = nil
		}
		if cur == nil {
			cur = appendHeader(make([]byte, 0, min(maxMessage, headerLen+maxRecord*(len(t.recs)+1))), t.p.origin)
		}
	}
	for i := range t.recs {
		add(maxRecord)
		cur = appendRecord(cur, &t.recs[i])
	}
	if t.resync {
		add(1)
		cur = append(cur, kindResync)
	}
	if cur != nil {
		msgs = append(msgs, cur)
	}
	return msgs
}
