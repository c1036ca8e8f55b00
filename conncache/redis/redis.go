// Package redis is the conncache driver for Redis: a single server,
// Sentinel (Config.MasterName) or Cluster, all through go-redis's
// UniversalClient. Importing it registers the driver "redis".
//
// Each process keeps its state of a swarm in one HASH of its own, written
// by a Lua script per swarm (so a swarm's changes, a replacement included,
// apply atomically and the key's expiry is always renewed), and announces
// each batch with one PUBLISH of a compact binary message (see wire.go).
// Keys expire on their own when a process stops writing them. A Pool is
// safe for concurrent use; a Tx is not.
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/peertable"
)

func init() { conncache.Register("redis", Driver{}) }

// Driver opens Pools on Redis.
type Driver struct{}

// Open returns a Pool for cfg. It does not connect: connections are made
// when first needed, so a tracker starts while Redis is away.
func (Driver) Open(cfg conncache.Config) (conncache.Pool, error) {
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("redis: Addrs is empty")
	}
	cluster := cfg.Cluster || (len(cfg.Addrs) > 1 && cfg.MasterName == "")
	if cluster && cfg.DB != 0 {
		return nil, fmt.Errorf("redis: DB is %d, but a Redis Cluster has only database 0", cfg.DB)
	}
	if cluster && cfg.MasterName != "" {
		return nil, errors.New("redis: Cluster and MasterName (Sentinel) exclude each other")
	}
	opt := &goredis.UniversalOptions{
		Addrs:           cfg.Addrs,
		MasterName:      cfg.MasterName,
		Username:        cfg.Username,
		Password:        cfg.Password,
		DB:              cfg.DB,
		IsClusterMode:   cfg.Cluster,
		DialTimeout:     cfg.Timeout,
		ReadTimeout:     cfg.Timeout,
		WriteTimeout:    cfg.Timeout,
		MaxRetries:      1,
		DisableIdentity: true,
	}
	quietOnce.Do(func() { goredis.SetLogger(debugLogger{cfg.Logger}) })
	c := goredis.NewUniversalClient(opt)
	p := &Pool{
		c:       c,
		prefix:  cfg.KeyPrefix,
		channel: cfg.KeyPrefix + "changes",
		ttl:     cfg.RemoteLifetime(),
		ttlArg:  strconv.FormatInt(cfg.RemoteLifetime().Milliseconds(), 10),
	}
	p.cluster, _ = c.(*goredis.ClusterClient)
	if _, err := rand.Read(p.origin[:]); err != nil {
		return nil, err
	}
	p.originHex = p.origin.String()
	return p, nil
}

// quietOnce routes go-redis's own log lines (one per failed dial, for
// instance) to the first Pool's logger at debug level: the Mirror logs
// each change of state once, and an outage must not flood the log.
// go-redis has one logger per program, hence once.
var quietOnce sync.Once

type debugLogger struct{ l *slog.Logger }

func (d debugLogger) Printf(ctx context.Context, format string, v ...any) {
	if d.l.Enabled(ctx, slog.LevelDebug) {
		d.l.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
	}
}

// Pool is a conncache.Pool on Redis.
type Pool struct {
	c         goredis.UniversalClient
	cluster   *goredis.ClusterClient // nil unless c is one
	origin    conncache.Origin
	originHex string
	prefix    string
	channel   string
	ttl       time.Duration
	ttlArg    any // ttl in milliseconds, boxed once for applyScript

	scriptLoaded atomic.Bool
}

// Origin implements conncache.Pool.
func (p *Pool) Origin() conncache.Origin { return p.origin }

// Client returns the underlying go-redis client, for tests and metrics.
func (p *Pool) Client() goredis.UniversalClient { return p.c }

// Close implements conncache.Pool.
func (p *Pool) Close() error { return p.c.Close() }

// Ping implements conncache.Pool.
func (p *Pool) Ping(ctx context.Context) error { return p.failed(p.c.Ping(ctx).Err()) }

// failed returns err, and if it is one, has a Cluster client reload the
// cluster's layout: after a failover go-redis would otherwise keep
// dialing the dead master for commands that are not redirected
// (SCRIPT LOAD on every shard, Pub/Sub, SCAN on every master).
func (p *Pool) failed(err error) error {
	if err != nil && p.cluster != nil {
		p.cluster.ReloadState(context.Background())
	}
	return err
}

// Key returns the key holding origin o's state of swarm ih.
func (p *Pool) Key(ih peertable.InfoHash, o conncache.Origin) string {
	var b [128]byte
	return string(p.appendKey(b[:0], ih, o))
}

// keyLen is the length of a key without its prefix.
const keyLen = 1 + 2*len(peertable.InfoHash{}) + 2 + 2*len(conncache.Origin{})

// appendKey appends the key of origin o's state of swarm ih to dst.
func (p *Pool) appendKey(dst []byte, ih peertable.InfoHash, o conncache.Origin) []byte {
	dst = append(dst, p.prefix...)
	dst = append(dst, '{')
	dst = hex.AppendEncode(dst, ih[:])
	dst = append(dst, '}', ':')
	return hex.AppendEncode(dst, o[:])
}

// parseKey splits a key of this prefix into swarm and origin.
func (p *Pool) parseKey(k string) (ih peertable.InfoHash, o conncache.Origin, ok bool) {
	rest, found := strings.CutPrefix(k, p.prefix)
	if !found || len(rest) != 1+40+2+16 || rest[0] != '{' || rest[41:43] != "}:" {
		return ih, o, false
	}
	if _, err := hex.Decode(ih[:], []byte(rest[1:41])); err != nil {
		return ih, o, false
	}
	if _, err := hex.Decode(o[:], []byte(rest[43:])); err != nil {
		return ih, o, false
	}
	return ih, o, true
}

// globEscape escapes the characters SCAN MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// eachMaster calls fn for every master: each Cluster master in turn, or
// the one server.
func (p *Pool) eachMaster(ctx context.Context, fn func(ctx context.Context, c *goredis.Client) error) error {
	if p.cluster == nil {
		c, ok := p.c.(*goredis.Client)
		if !ok {
			return fmt.Errorf("redis: unexpected client type %T", p.c)
		}
		return fn(ctx, c)
	}
	// ForEachMaster runs fn concurrently; callers expect one goroutine.
	var mu sync.Mutex
	return p.cluster.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		mu.Lock()
		defer mu.Unlock()
		return fn(ctx, c)
	})
}

// scanBatch is the SCAN COUNT hint and the number of HGETALLs pipelined.
const scanBatch = 512

// Load implements conncache.Pool.
func (p *Pool) Load(ctx context.Context, since time.Time, fn func(o conncache.Origin, r conncache.Record)) error {
	return p.scan(ctx, globEscape(p.prefix)+"{*", func(ctx context.Context, c *goredis.Client, keys []string) error {
		return p.loadKeys(ctx, c, keys, since, fn)
	})
}

// scan calls fn with each SCAN batch of the keys matching match on every
// master, and reports its failures to the Pool's health.
func (p *Pool) scan(ctx context.Context, match string, fn func(ctx context.Context, c *goredis.Client, keys []string) error) error {
	return p.failed(p.eachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, scanBatch).Result()
			if err != nil {
				return fmt.Errorf("redis: scan: %w", err)
			}
			if err := fn(ctx, c, keys); err != nil {
				return err
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}))
}

func (p *Pool) loadKeys(ctx context.Context, c *goredis.Client, keys []string, since time.Time, fn func(o conncache.Origin, r conncache.Record)) error {
	type item struct {
		ih  peertable.InfoHash
		o   conncache.Origin
		cmd *goredis.MapStringStringCmd
	}
	items := make([]item, 0, len(keys))
	pipe := c.Pipeline()
	for _, k := range keys {
		ih, o, ok := p.parseKey(k)
		if !ok || o == p.origin {
			continue
		}
		items = append(items, item{ih, o, pipe.HGetAll(ctx, k)})
	}
	if len(items) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis: load %d keys: %w", len(items), err)
	}
	for _, it := range items {
		for f, v := range it.cmd.Val() {
			if f == fieldCompleted {
				n, err := strconv.ParseUint(v, 10, 32)
				if err == nil && n > 0 {
					fn(it.o, conncache.Record{Op: conncache.OpCompleted, InfoHash: it.ih, Completed: uint32(n)})
				}
				continue
			}
			ap, ok := parsePeer([]byte(f))
			if !ok {
				continue
			}
			seeder, published, ok := parseValue(v)
			if !ok || published.Before(since) {
				continue
			}
			fn(it.o, conncache.Record{Op: conncache.OpPut, InfoHash: it.ih, Peer: peertable.Peer{Addr: ap, Seeder: seeder}})
		}
	}
	return nil
}

// Prune implements conncache.Pool.
func (p *Pool) Prune(ctx context.Context, keep func(ih peertable.InfoHash) bool) error {
	return p.scan(ctx, globEscape(p.prefix)+"{*}:"+p.originHex, func(ctx context.Context, c *goredis.Client, keys []string) error {
		var del []string
		for _, k := range keys {
			if ih, o, ok := p.parseKey(k); ok && o == p.origin && !keep(ih) {
				del = append(del, k)
			}
		}
		if len(del) == 0 {
			return nil
		}
		// One key per command: in a Cluster each may live in another
		// slot.
		pipe := c.Pipeline()
		for _, k := range del {
			pipe.Unlink(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("redis: prune %d keys: %w", len(del), err)
		}
		return nil
	})
}

// Subscribe implements conncache.Pool.
func (p *Pool) Subscribe(ctx context.Context, fn func(e *conncache.Event)) error {
	backoff := 50 * time.Millisecond
	var recs []conncache.Record
	for ctx.Err() == nil {
		ps := p.c.Subscribe(ctx, p.channel)
		stop := context.AfterFunc(ctx, func() { ps.Close() })
		recs = p.receive(ctx, ps, fn, recs, &backoff)
		stop()
		ps.Close()
	}
	return nil
}

// pingEvery is how long a quiet subscription waits before it pings; a
// ping unanswered for as long again means the connection is dead.
const pingEvery = 2 * time.Second

// receive delivers ps's messages until ctx is done or ps looks dead.
func (p *Pool) receive(ctx context.Context, ps *goredis.PubSub, fn func(e *conncache.Event), recs []conncache.Record, backoff *time.Duration) []conncache.Record {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, pingEvery)
		if ctx.Err() != nil {
			return recs
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged {
					p.failed(err)
					fn(&conncache.Event{Kind: conncache.EventBroken, Err: errors.New("redis: subscription: no answer to ping")})
					return recs
				}
				pinged = true
				if err := ps.Ping(ctx); err == nil {
					continue
				}
			}
			// go-redis reconnects and resubscribes on the next receive;
			// its "subscribe" confirmation reports it.
			p.failed(err)
			fn(&conncache.Event{Kind: conncache.EventBroken, Err: err})
			select {
			case <-ctx.Done():
				return recs
			case <-time.After(*backoff):
			}
			*backoff = min(2**backoff, 2*time.Second)
			pinged = false
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				*backoff = 50 * time.Millisecond
				fn(&conncache.Event{Kind: conncache.EventSubscribed})
			}
		case *goredis.Message:
			o, r, resync, err := decode([]byte(m.Payload), recs[:0])
			recs = r
			if err != nil || o == p.origin {
				continue
			}
			if len(recs) > 0 {
				fn(&conncache.Event{Kind: conncache.EventBatch, Origin: o, Records: recs})
			}
			if resync {
				fn(&conncache.Event{Kind: conncache.EventResync, Origin: o})
			}
		}
	}
}
