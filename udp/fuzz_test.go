package udp

import (
	"encoding/binary"
	"testing"

	"github.com/chihaya/chihaya/peertable"
)

// FuzzHandle feeds whole datagrams to a worker, with a valid connection
// ID written over the first 8 bytes when proven is set, and checks the
// invariants a remote peer relies on: a source that has not proven
// itself never gets a reply larger than its request, and no reply
// outgrows MaxPacket or the worker's buffer. The parsers have their own
// targets in package fuzz.
func FuzzHandle(f *testing.F) {
	id := func() []byte { return make([]byte, 8) } // replaced when proven
	ann := testAnnounce()
	f.Add(AppendConnect(nil, ConnectRequest{TxID: 1}), false, false)
	f.Add(AppendAnnounce(nil, &ann), true, false)
	f.Add(AppendAnnounce(nil, &ann), false, true)
	f.Add(append(AppendAnnounce(nil, &ann), optURLData, 3, '/', 'p', 'k'), true, true)
	f.Add(AppendScrape(nil, &ScrapeRequest{InfoHashes: make([]peertable.InfoHash, 3)}), true, false)
	f.Add(append(id(), 0, 0, 0, 9, 0, 0, 0, 1), true, false)

	w := newTestWorker(f, Config{MaxPacket: 576}, &recorder{})
	f.Fuzz(func(t *testing.T, b []byte, proven, v6 bool) {
		src := srcV4
		hdr := ipv4HeaderLen + udpHeaderLen
		if v6 {
			src, hdr = srcV6, ipv6HeaderLen+udpHeaderLen
		}
		if proven && len(b) >= 8 {
			binary.BigEndian.PutUint64(b, w.connID(src))
		}
		reply := w.deliver(src, b)
		if reply == nil {
			return
		}
		validID := len(b) >= 8 && w.s.ids.valid(binary.BigEndian.Uint64(b), src.Addr(), testNow)
		if !validID && len(reply) > len(b) {
			t.Fatalf("unproven request of %d bytes got a reply of %d: %x", len(b), len(reply), reply)
		}
		if !validID && binary.BigEndian.Uint32(reply) != actionConnect {
			t.Fatalf("unproven request got a reply of action %d", binary.BigEndian.Uint32(reply))
		}
		if len(reply) > w.s.replyLen {
			t.Fatalf("reply of %d bytes outgrew the %d-byte buffer", len(reply), w.s.replyLen)
		}
		if binary.BigEndian.Uint32(reply) == actionAnnounce && hdr+len(reply) > w.s.cfg.MaxPacket {
			t.Fatalf("announce reply makes a %d-byte packet, over MaxPacket", hdr+len(reply))
		}
	})
}
