package peertable

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// PLACEHOLDER implementation: a single mutex. Replaced by the lock-free table.

type entry struct {
	seeder bool
	seen   time.Time
	aux    Aux
}

type swarm struct {
	peers     map[netip.AddrPort]*entry
	completed uint32
}

type Table struct {
	cfg Config
	mu  sync.Mutex
	now time.Time
	m   map[InfoHash]*swarm
}

func New(cfg Config) (*Table, error) {
	if cfg.PeerLifetime < 0 || cfg.PeerLifetime > 12*time.Hour {
		return nil, fmt.Errorf("peertable: PeerLifetime %v out of range (0 < lifetime <= 12h)", cfg.PeerLifetime)
	}
	if cfg.PeerLifetime == 0 {
		cfg.PeerLifetime = 31 * time.Minute
	}
	return &Table{cfg: cfg, now: time.Now(), m: make(map[InfoHash]*swarm)}, nil
}

// Tick sets the table's coarse clock.
func (t *Table) Tick(now time.Time) { t.mu.Lock(); t.now = now; t.mu.Unlock() }

func (t *Table) Announce(a *Announce, dst []byte) ([]byte, Result) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var r Result
	s := t.m[a.InfoHash]
	if s == nil {
		if a.Event == EventStopped {
			return dst, r
		}
		s = &swarm{peers: make(map[netip.AddrPort]*entry)}
		t.m[a.InfoHash] = s
	}
	e := s.peers[a.Addr]
	if e != nil {
		r.Prev, r.PrevFound = e.aux, t.cfg.Accounting
	}
	if a.Event == EventStopped {
		delete(s.peers, a.Addr)
	} else {
		if e == nil {
			e = &entry{}
			s.peers[a.Addr] = e
		}
		if a.Event == EventCompleted && !e.seeder {
			s.completed++
		}
		e.seeder, e.seen, e.aux = a.Seeder, t.now, a.Aux
	}
	n := 0
	for ap, pe := range s.peers {
		if pe.seeder {
			r.Counts.Seeders++
		} else {
			r.Counts.Leechers++
		}
		if n >= a.NumWant || ap == a.Addr || ap.Addr().Is4() != a.Addr.Addr().Is4() || (a.Seeder && pe.seeder) {
			continue
		}
		if ap.Addr().Is4() {
			b := ap.Addr().As4()
			dst = append(dst, b[:]...)
		} else {
			b := ap.Addr().As16()
			dst = append(dst, b[:]...)
		}
		dst = append(dst, byte(ap.Port()>>8), byte(ap.Port()))
		n++
	}
	r.Counts.Completed = s.completed
	return dst, r
}

func (t *Table) Scrape(ih InfoHash) Counts {
	t.mu.Lock()
	defer t.mu.Unlock()
	var c Counts
	if s := t.m[ih]; s != nil {
		for _, pe := range s.peers {
			if pe.seeder {
				c.Seeders++
			} else {
				c.Leechers++
			}
		}
		c.Completed = s.completed
	}
	return c
}

func (t *Table) Sweep() int { return 0 }

func (t *Table) Stats() Stats { return Stats{} }

func (t *Table) Run(ctx context.Context) error { <-ctx.Done(); return nil }
