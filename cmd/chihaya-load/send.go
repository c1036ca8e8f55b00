package main

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/net/ipv4"
)

// An outbox gathers the requests of one fill, grouped by kind, so that
// requests of one kind, which all have the same size, lie back to back.
// With UDP GSO (Linux), each group goes to the kernel as one buffer that
// it cuts into datagrams below the IP layer: a batch then costs one trip
// down the stack instead of one per request, which is what lets the
// generator outrun a tracker on the same kind of core. The tracker still
// receives one datagram per request. Without GSO each request is its own
// message of one sendmmsg.
type outbox struct {
	bufs [numKinds][]byte
	size [numKinds]int // bytes per request; every request of a kind has it
	n    [numKinds]int
	gso  bool
	oob  [numKinds][]byte // UDP_SEGMENT control message for size
	msgs []ipv4.Message
}

func newOutbox(window int, gso bool) *outbox {
	o := &outbox{gso: gso, msgs: make([]ipv4.Message, window)}
	for i := range o.msgs {
		o.msgs[i].Buffers = [][]byte{nil}
	}
	for k := range o.bufs {
		o.bufs[k] = make([]byte, 0, window*(scrapeReqLen+20*maxScrapeHashes))
	}
	return o
}

func (o *outbox) reset() {
	for k := range o.bufs {
		o.bufs[k] = o.bufs[k][:0]
		o.n[k] = 0
	}
}

// added records that the request just appended to o.bufs[k] began at
// offset start.
func (o *outbox) added(k kind, start int) {
	size := len(o.bufs[k]) - start
	if o.n[k] == 0 {
		o.size[k] = size
	} else if size != o.size[k] {
		// The workload makes every request of a kind the same size.
		panic(fmt.Sprintf("load: %s request of %d bytes after %d", kindNames[k], size, o.size[k]))
	}
	o.n[k]++
}

// messages returns the batch to write.
func (o *outbox) messages() []ipv4.Message {
	nm := 0
	for k := range o.bufs {
		size, buf := o.size[k], o.bufs[k]
		for off := 0; off < o.n[k]; {
			segs := 1
			if o.gso {
				segs = min(o.n[k]-off, maxGSOSegments, 65507/size)
			}
			m := &o.msgs[nm]
			m.Buffers[0] = buf[off*size : (off+segs)*size]
			m.OOB = nil
			if segs > 1 {
				if len(o.oob[k]) == 0 || gsoSize(o.oob[k]) != size {
					o.oob[k] = gsoControl(size)
				}
				m.OOB = o.oob[k]
			}
			nm++
			off += segs
		}
	}
	return o.msgs[:nm]
}

// send writes the outbox as one batch (or a few, if the kernel takes
// fewer). Requests the kernel refused stay in flight and will be counted
// as lost.
func (w *worker) send() error {
	ms := w.out.messages()
	for off, tries := 0, 0; off < len(ms) && tries < 16; tries++ {
		k, err := w.bc.WriteBatch(ms[off:], 0)
		off += k
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				w.c.refused.Add(1)
				continue
			}
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EAGAIN) {
				continue
			}
			if w.out.gso {
				return fmt.Errorf("send with UDP GSO: %w (try -gso=false)", err)
			}
			return err
		}
	}
	return nil
}
