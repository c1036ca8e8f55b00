package main

import (
	"bytes"
	"testing"
)

func TestOutboxMessages(t *testing.T) {
	for _, gso := range []bool{false, true} {
		o := newOutbox(100, gso)
		for i := range 70 {
			start := len(o.bufs[kindAnnounce])
			o.bufs[kindAnnounce] = appendAnnounce(o.bufs[kindAnnounce], &announce{TxID: uint32(i)})
			o.added(kindAnnounce, start)
		}
		for i := range 3 {
			start := len(o.bufs[kindScrape])
			o.bufs[kindScrape] = appendScrape(o.bufs[kindScrape], 1, uint32(i), [20]byte{}, [20]byte{})
			o.added(kindScrape, start)
		}
		ms := o.messages()
		want := 73 // one datagram each
		if gso && maxGSOSegments > 1 {
			want = 3 // 64 + 6 announces, 3 scrapes
		}
		if len(ms) != want {
			t.Fatalf("gso=%v: %d messages, want %d", gso, len(ms), want)
		}
		var all []byte
		segs := 0
		for _, m := range ms {
			b := m.Buffers[0]
			all = append(all, b...)
			size := len(b)
			if m.OOB != nil {
				size = gsoSize(m.OOB)
			}
			if len(b)%size != 0 || (m.OOB == nil) != (len(b) == size) {
				t.Errorf("gso=%v: message of %d bytes with segment size %d (control %x)", gso, len(b), size, m.OOB)
			}
			segs += len(b) / size
		}
		if segs != 73 || !bytes.Equal(all, append(o.bufs[kindAnnounce], o.bufs[kindScrape]...)) {
			t.Errorf("gso=%v: messages hold %d requests, or not the outbox's bytes in order", gso, segs)
		}
		o.reset()
		if len(o.messages()) != 0 {
			t.Errorf("gso=%v: messages after reset", gso)
		}
	}
}
