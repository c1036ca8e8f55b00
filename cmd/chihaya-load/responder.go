package main

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
)

// The responder is the least a BEP 15 server can do: it answers every
// connect with the same ID and every announce and scrape with an empty
// swarm. It keeps no state, so the generator measured against it shows
// its own ceiling.

// responderConnID is the connection ID the responder hands out and checks.
const responderConnID = 0x6c6f61642d726573 // "load-res"

// responderInterval is the announce interval the responder reports.
const responderInterval = 1800

// responderStats counts what a responder did.
type responderStats struct {
	answered atomic.Uint64
	rejected atomic.Uint64 // error replies: unknown action, bad connection ID
	ignored  atomic.Uint64 // too short to answer
	buffers  atomic.Uint64 // messages written: fewer than replies with GSO
}

// serveResponder answers datagrams on conn with workers goroutines, each
// reading and writing up to batch datagrams per system call, until ctx is
// done. conn may be IPv4 or IPv6; the batch API is the same.
func serveResponder(ctx context.Context, conn *net.UDPConn, workers, batch int, st *responderStats) error {
	gso := gsoSupported(conn)
	bc := newBatchConn(conn, conn.LocalAddr().(*net.UDPAddr).IP.To4() == nil)
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	defer stop()
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		wg.Go(func() { errs[i] = respond(ctx, bc, batch, gso, st) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// respond is one responder worker: read a batch, answer it in one write.
// With gso, consecutive replies of one size to one address go out as one
// UDP GSO buffer, as the generator's requests do, so that the responder
// costs less per request than the generator and the generator's ceiling
// is what gets measured.
func respond(ctx context.Context, bc batchConn, batch int, gso bool, st *responderStats) error {
	rx := make([]ipv4.Message, batch)
	for i := range rx {
		rx[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	tx := make([]ipv4.Message, batch)
	for i := range tx {
		tx[i].Buffers = [][]byte{nil}
	}
	out := make([]byte, 0, batch*(scrapeReplyLen+scrapeEntryLen*maxScrapeHashes))
	var oob []byte // UDP_SEGMENT for oobSize
	oobSize := 0
	for ctx.Err() == nil {
		n, err := bc.ReadBatch(rx, 0)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
				continue
			}
			return err
		}
		out = out[:0]
		nt := 0
		var m *ipv4.Message // the message being added to
		size, segs := 0, 0  // its segment size and count
		for i := range n {
			start := len(out)
			out = answer(out, rx[i].Buffers[0][:rx[i].N], st)
			k := len(out) - start
			if k == 0 {
				continue
			}
			if gso && m != nil && k == size && segs < maxGSOSegments && sameAddr(m.Addr, rx[i].Addr) {
				m.Buffers[0] = out[start-segs*size : len(out)]
				segs++
				continue
			}
			if m != nil && segs > 1 {
				if size != oobSize {
					oob, oobSize = gsoControl(size), size
				}
				m.OOB = oob
			}
			m = &tx[nt]
			nt++
			m.Buffers[0], m.Addr, m.OOB = out[start:], rx[i].Addr, nil
			size, segs = k, 1
		}
		if m != nil && segs > 1 {
			if size != oobSize {
				oob, oobSize = gsoControl(size), size
			}
			m.OOB = oob
		}
		st.buffers.Add(uint64(nt))
		for off, tries := 0, 0; off < nt && tries < 16; tries++ {
			k, err := bc.WriteBatch(tx[off:nt], 0)
			off += k
			if err != nil && ctx.Err() != nil {
				break
			}
		}
	}
	return nil
}

// sameAddr reports whether two addresses from ReadBatch are the same
// UDP address.
func sameAddr(a, b net.Addr) bool {
	x, ok1 := a.(*net.UDPAddr)
	y, ok2 := b.(*net.UDPAddr)
	return ok1 && ok2 && x.Port == y.Port && x.IP.Equal(y.IP)
}

// answer appends the reply to req to dst, or nothing if req deserves
// silence.
func answer(dst, req []byte, st *responderStats) []byte {
	if len(req) < 16 {
		st.ignored.Add(1)
		return dst
	}
	action := binary.BigEndian.Uint32(req[8:])
	txID := binary.BigEndian.Uint32(req[12:])
	connID := binary.BigEndian.Uint64(req)
	switch {
	case action == actionConnect && connID == protocolID:
		dst = binary.BigEndian.AppendUint32(dst, actionConnect)
		dst = binary.BigEndian.AppendUint32(dst, txID)
		dst = binary.BigEndian.AppendUint64(dst, responderConnID)
	case action != actionAnnounce && action != actionScrape:
		st.rejected.Add(1)
		return appendError(dst, txID, "unknown action")
	case connID != responderConnID:
		st.rejected.Add(1)
		return appendError(dst, txID, "bad connection ID")
	case action == actionAnnounce && len(req) >= announceReqLen:
		dst = binary.BigEndian.AppendUint32(dst, actionAnnounce)
		dst = binary.BigEndian.AppendUint32(dst, txID)
		dst = binary.BigEndian.AppendUint32(dst, responderInterval)
		dst = binary.BigEndian.AppendUint32(dst, 0) // leechers
		dst = binary.BigEndian.AppendUint32(dst, 1) // seeders: the caller
	case action == actionScrape && len(req) >= scrapeReqLen+20:
		n := min((len(req)-scrapeReqLen)/20, maxScrapeHashes)
		dst = binary.BigEndian.AppendUint32(dst, actionScrape)
		dst = binary.BigEndian.AppendUint32(dst, txID)
		for range n {
			dst = append(dst, make([]byte, scrapeEntryLen)...)
		}
	default:
		st.rejected.Add(1)
		return appendError(dst, txID, "short request")
	}
	st.answered.Add(1)
	return dst
}

func appendError(dst []byte, txID uint32, text string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, actionError)
	dst = binary.BigEndian.AppendUint32(dst, txID)
	return append(dst, text...)
}
