package conncache

import (
	"net/netip"
	"testing"

	"github.com/chihaya/chihaya/peertable"
)

// TestChangeLogBound fills a log whose shards take credits in chunks and
// checks that it never holds more than max entries, drops no more early
// than the spare credits allow, and accounts for every change.
func TestChangeLogBound(t *testing.T) {
	const maxPending = logShards * 256 * 4
	l := newChangeLog(maxPending)
	if l.chunk != 4 {
		t.Fatalf("chunk = %d, want 4", l.chunk)
	}
	ih := ihOf(1)
	const total = maxPending + 1000
	for round := range 3 {
		before := l.dropped.Load()
		for i := range total {
			p := peertable.Peer{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 6881)}
			l.note(&ih, &p, logPut)
		}
		n, dropped := l.len(), l.dropped.Load()-before
		if n > maxPending || n < maxPending-logShards*int(l.chunk-1) {
			t.Errorf("round %d: %d entries, want %d at most and no fewer than %d", round, n, maxPending, maxPending-logShards*int(l.chunk-1))
		}
		if uint64(n)+dropped != total {
			t.Errorf("round %d: %d entries + %d dropped, want %d", round, n, dropped, total)
		}
		if !l.full.Load() {
			t.Errorf("round %d: full is false after drops", round)
		}
		if round%2 == 0 {
			l.reset()
		} else {
			l.drain(&recTx{r: &recorder{}}, nil)
		}
		if n := l.len(); n != 0 {
			t.Errorf("round %d: %d entries after emptying, want 0", round, n)
		}
	}
}
