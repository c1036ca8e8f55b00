package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// probeEvery is the pause between readiness probes, and how long a probe
// waits for each reply.
const probeEvery = 250 * time.Millisecond

// probePort is the port the readiness probe announces. Prefill reaches
// it only for a torrent that gets 65535 peers.
const probePort = 65535

// waitReady returns once the tracker at cfg.target answers an announce
// of ih with a valid announce reply (over UDP, after a connect), or
// fails after cfg.wait. A tracker that loads its whitelist in the
// background answers with errors until it has read the whole list, so ih
// is the last hash.
func waitReady(ctx context.Context, cfg *runConfig, ih [20]byte, log io.Writer) error {
	peerLen := peerLenIPv4
	if cfg.target.Addr().Is6() {
		peerLen = peerLenIPv6
	}
	var probeOnce func(try uint32) error
	if cfg.proto == protoHTTP {
		probeOnce = func(uint32) error { return probeHTTP(cfg.target, ih) }
	} else {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(cfg.target))
		if err != nil {
			return fmt.Errorf("wait: %w", err)
		}
		defer conn.Close()
		probeOnce = func(try uint32) error { return probe(conn, ih, try, peerLen) }
	}
	start := time.Now()
	deadline := start.Add(cfg.wait)
	last := errors.New("no reply")
	for try := uint32(1); time.Now().Before(deadline) && ctx.Err() == nil && try < 1<<20; try++ {
		err := probeOnce(try)
		if err == nil {
			fmt.Fprintf(log, "chihaya-load: %v ready after %v\n", cfg.target, time.Since(start).Round(time.Millisecond))
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
		case <-time.After(probeEvery):
		}
	}
	return fmt.Errorf("wait: %v not ready after %v: %v", cfg.target, cfg.wait, last)
}

// probe makes one connect and announce exchange on conn, with
// transaction IDs derived from try so that late replies to earlier tries
// are skipped.
func probe(conn *net.UDPConn, ih [20]byte, try uint32, peerLen int) error {
	buf := make([]byte, recvBufLen)
	exchange := func(req []byte, txID, want uint32) ([]byte, error) {
		if _, err := conn.Write(req); err != nil {
			return nil, err
		}
		conn.SetReadDeadline(time.Now().Add(probeEvery))
		for range 16 { // skip stale replies, but not forever
			n, err := conn.Read(buf)
			if err != nil {
				return nil, err
			}
			action, got, ok := replyHeader(buf[:n])
			if !ok || got != txID {
				continue
			}
			if action == actionError {
				return nil, fmt.Errorf("error reply %q", errorText(buf[:n]))
			}
			if action != want {
				return nil, fmt.Errorf("reply action %d, want %d", action, want)
			}
			return buf[:n], nil
		}
		return nil, errors.New("only stale replies")
	}
	txID := try << 1
	b, err := exchange(appendConnect(nil, txID), txID, actionConnect)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	id, why := parseConnect(b)
	if why != badNone {
		return fmt.Errorf("connect: invalid reply (%s)", badNames[why])
	}
	// "started", not "stopped": opentracker answers a stopped announce
	// without looking at its whitelist.
	a := &announce{ConnID: id, TxID: txID | 1, InfoHash: ih, Event: eventStarted, NumWant: 0}
	setPeer(a, probePort-1)
	b, err = exchange(appendAnnounce(nil, a), a.TxID, actionAnnounce)
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	if _, why := parseAnnounce(b, peerLen, 0); why != badNone {
		return fmt.Errorf("announce: invalid reply (%s)", badNames[why])
	}
	// Leave the swarm again, so the probe adds no peer; a failure here
	// only leaves one peer behind.
	a.Event = eventStopped
	exchange(appendAnnounce(nil, a), a.TxID, actionAnnounce)
	return nil
}

// probeHTTP makes the announce exchange of probe over HTTP, one
// connection per request.
func probeHTTP(target netip.AddrPort, ih [20]byte) error {
	a := &announce{InfoHash: ih, Event: eventStarted, NumWant: 0}
	setPeer(a, probePort-1)
	rr := newReplyReader()
	rep, err := httpOnce(target, appendHTTPAnnounce(nil, target.String(), a), rr)
	if err != nil {
		return fmt.Errorf("announce: %w", err)
	}
	if rep.status != 200 {
		return fmt.Errorf("announce: HTTP status %d", rep.status)
	}
	failure, why := checkHTTPAnnounce(rep.body, target.Addr().Is6(), 0)
	switch {
	case why != badNone:
		return fmt.Errorf("announce: invalid reply (%s)", badNames[why])
	case failure != nil:
		return fmt.Errorf("announce: failure reason %q", failure)
	}
	a.Event = eventStopped
	httpOnce(target, appendHTTPAnnounce(nil, target.String(), a), rr)
	return nil
}

// httpOnce sends req on a new connection and reads the reply into rr,
// all within probeEvery.
func httpOnce(target netip.AddrPort, req []byte, rr *replyReader) (httpReply, error) {
	conn, err := net.DialTimeout("tcp", target.String(), probeEvery)
	if err != nil {
		return httpReply{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(probeEvery))
	if _, err := conn.Write(req); err != nil {
		return httpReply{}, err
	}
	rr.reset()
	return rr.read(conn)
}
