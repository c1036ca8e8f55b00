package redis

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/chihaya/chihaya/conncache"
	"github.com/chihaya/chihaya/peertable"
)

// FuzzDecode feeds change notifications as another process (or anyone who
// can PUBLISH to the Redis) might send them: decode must never panic, and
// what it decodes must survive being encoded and decoded again unchanged.
func FuzzDecode(f *testing.F) {
	o := conncache.Origin{1, 2, 3, 4, 5, 6, 7, 8}
	msg := appendHeader(nil, o)
	for _, r := range []conncache.Record{
		{Op: conncache.OpPut, InfoHash: peertable.InfoHash{1}, Peer: peertable.Peer{Addr: netip.MustParseAddrPort("192.0.2.1:6881"), Seeder: true}},
		{Op: conncache.OpRemove, InfoHash: peertable.InfoHash{2}, Peer: peertable.Peer{Addr: netip.MustParseAddrPort("[2001:db8::1]:51413")}},
		{Op: conncache.OpCompleted, InfoHash: peertable.InfoHash{3}, Completed: 7},
	} {
		msg = appendRecord(msg, &r)
	}
	f.Add(msg)
	f.Add(append(appendHeader(nil, o), kindResync))
	f.Add([]byte{wireVersion})
	f.Fuzz(func(t *testing.T, msg []byte) {
		origin, recs, resync, err := decode(msg, nil)
		if err != nil {
			return
		}
		again := appendHeader(nil, origin)
		for i := range recs {
			again = appendRecord(again, &recs[i])
		}
		if resync {
			again = append(again, kindResync)
		}
		origin2, recs2, resync2, err := decode(again, nil)
		if err != nil || origin2 != origin || resync2 != resync || !slices.Equal(recs, recs2) {
			t.Fatalf("decode(%x) = %v %v %v; re-encoded %x decodes to %v %v %v, %v", msg, origin, recs, resync, again, origin2, recs2, resync2, err)
		}
	})
}
