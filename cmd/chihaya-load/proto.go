package main

import "encoding/binary"

// This file is the generator's own client side of BEP 15. It deliberately
// shares no code with the udp package: the generator exists to check the
// server, so the two must not agree by construction.

// protocolID is the magic constant a connect request starts with.
const protocolID = 0x41727101980

// Actions, as numbered by BEP 15.
const (
	actionConnect  = 0
	actionAnnounce = 1
	actionScrape   = 2
	actionError    = 3
)

// Events, as numbered by BEP 15 announce requests.
const (
	eventNone      = 0
	eventCompleted = 1
	eventStarted   = 2
	eventStopped   = 3
)

// Connect request and reply; integers are big-endian.
//
//	request              reply
//	off len field        off len field
//	  0   8 protocol_id    0   4 action (0)
//	  8   4 action (0)     4   4 transaction_id
//	 12   4 transaction_id 8   8 connection_id
const (
	connectReqLen   = 16
	connectReplyLen = 16
)

// Announce request (BEP 15); integers are big-endian.
//
//	off len field
//	  0   8 connection_id          8  4 action (1)
//	 12   4 transaction_id        16 20 info_hash
//	 36  20 peer_id               56 24 downloaded, left, uploaded
//	 80   4 event                 84  4 ip (0 = sender)
//	 88   4 key                   92  4 num_want (-1 = default)
//	 96   2 port
const announceReqLen = 98

// Announce reply: a fixed header, then peers of the request's family,
// 6 bytes each (IPv4 address, port) or 18 (IPv6 address, port).
//
//	off len field
//	  0   4 action (1)       4  4 transaction_id
//	  8   4 interval        12  4 leechers
//	 16   4 seeders         20  … peers
const (
	announceReplyLen = 20
	peerLenIPv4      = 6
	peerLenIPv6      = 18
)

// Scrape request: a header and up to maxScrapeHashes info hashes.
// Its reply holds 12 bytes per hash, in request order.
//
//	request                      reply
//	off len field                off len field
//	  0   8 connection_id          0   4 action (2)
//	  8   4 action (2)             4   4 transaction_id
//	 12   4 transaction_id         8  12 seeders, completed, leechers
//	 16  20 info_hash …           20  12 … per info_hash
const (
	scrapeReqLen    = 16
	scrapeReplyLen  = 8
	scrapeEntryLen  = 12
	maxScrapeHashes = 74 // BEP 15's limit, and what fits in 1500 bytes
)

// Error reply: action 3, the transaction ID, then text to the end.
const errorReplyLen = 8

// announce holds the fields of an announce request the generator varies.
type announce struct {
	ConnID   uint64
	TxID     uint32
	InfoHash [20]byte
	PeerID   [20]byte
	Left     uint64
	Event    uint32
	Key      uint32
	NumWant  int32
	Port     uint16
}

// appendConnect appends a connect request to dst.
func appendConnect(dst []byte, txID uint32) []byte {
	dst = binary.BigEndian.AppendUint64(dst, protocolID)
	dst = binary.BigEndian.AppendUint32(dst, actionConnect)
	return binary.BigEndian.AppendUint32(dst, txID)
}

// appendAnnounce appends an announce request for a to dst. Downloaded and
// uploaded are reported as zero and the IP field as 0 (use the sender's).
func appendAnnounce(dst []byte, a *announce) []byte {
	dst = binary.BigEndian.AppendUint64(dst, a.ConnID)
	dst = binary.BigEndian.AppendUint32(dst, actionAnnounce)
	dst = binary.BigEndian.AppendUint32(dst, a.TxID)
	dst = append(dst, a.InfoHash[:]...)
	dst = append(dst, a.PeerID[:]...)
	dst = binary.BigEndian.AppendUint64(dst, 0) // downloaded
	dst = binary.BigEndian.AppendUint64(dst, a.Left)
	dst = binary.BigEndian.AppendUint64(dst, 0) // uploaded
	dst = binary.BigEndian.AppendUint32(dst, a.Event)
	dst = binary.BigEndian.AppendUint32(dst, 0) // ip
	dst = binary.BigEndian.AppendUint32(dst, a.Key)
	dst = binary.BigEndian.AppendUint32(dst, uint32(a.NumWant))
	dst = binary.BigEndian.AppendUint16(dst, a.Port)
	return append(dst, urlDataOpts...) // -urldata, as BEP 41 options
}

// appendScrape appends a scrape request for hashes to dst. The caller
// keeps len(hashes) within maxScrapeHashes.
func appendScrape(dst []byte, connID uint64, txID uint32, hashes ...[20]byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, connID)
	dst = binary.BigEndian.AppendUint32(dst, actionScrape)
	dst = binary.BigEndian.AppendUint32(dst, txID)
	for _, h := range hashes {
		dst = append(dst, h[:]...)
	}
	return dst
}

// A bad is why a reply breaks BEP 15 (or, over HTTP, BEP 3, 23 and 48),
// or badNone. Each reason is counted separately; this order is the order
// of the summary.
type bad uint8

const (
	badNone      bad = iota
	badShort         // shorter than any reply of its action; HTTP: cut off by a close
	badAction        // action is neither the request's nor error
	badLength        // length does not fit the action's layout
	badPeerSize      // peer list not a multiple of the family's entry, or of the other family
	badCounts        // negative or (HTTP) missing counts, zero interval, too many peers
	badTruncated     // larger than the receive buffer
	badStale         // transaction ID matches no request in flight
	badStatus        // HTTP: a status other than 200
	badHTTP          // HTTP: a malformed status line, header or chunk
	badBencode       // HTTP: the body is not one well-formed bencoded dictionary
	badFiles         // HTTP: a scrape's files are not among the info hashes asked for
	numBad
)

var badNames = [numBad]string{
	badNone:      "none",
	badShort:     "short",
	badAction:    "action",
	badLength:    "length",
	badPeerSize:  "peer-size",
	badCounts:    "counts",
	badTruncated: "truncated",
	badStale:     "stale-txid",
	badStatus:    "status",
	badHTTP:      "http",
	badBencode:   "bencode",
	badFiles:     "files",
}

// replyHeader returns the action and transaction ID of a reply, or false
// if b is too short to have them.
func replyHeader(b []byte) (action, txID uint32, ok bool) {
	if len(b) < 8 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:]), true
}

// parseConnect returns the connection ID of a connect reply whose header
// has been checked.
func parseConnect(b []byte) (uint64, bad) {
	if len(b) != connectReplyLen {
		return 0, badLength
	}
	return binary.BigEndian.Uint64(b[8:]), badNone
}

// announceReply is the decoded fixed part of an announce reply.
type announceReply struct {
	Interval uint32
	Leechers uint32
	Seeders  uint32
	Peers    int // number of peer entries
}

// parseAnnounce checks an announce reply whose header has been checked,
// against the request's family (peerLen) and numWant (ignored when
// negative, as the server then picks the number).
func parseAnnounce(b []byte, peerLen int, numWant int32) (announceReply, bad) {
	var r announceReply
	if len(b) < announceReplyLen {
		return r, badShort
	}
	if (len(b)-announceReplyLen)%peerLen != 0 {
		return r, badPeerSize
	}
	r.Interval = binary.BigEndian.Uint32(b[8:])
	r.Leechers = binary.BigEndian.Uint32(b[12:])
	r.Seeders = binary.BigEndian.Uint32(b[16:])
	r.Peers = (len(b) - announceReplyLen) / peerLen
	switch {
	case r.Interval == 0 || int32(r.Interval) < 0,
		int32(r.Leechers) < 0 || int32(r.Seeders) < 0,
		uint64(r.Peers) > uint64(r.Leechers)+uint64(r.Seeders),
		numWant >= 0 && r.Peers > int(numWant):
		return r, badCounts
	}
	for p := b[announceReplyLen:]; len(p) > 0; p = p[peerLen:] {
		if peerLen == peerLenIPv6 && isV4Mapped(p) {
			return r, badPeerSize // an IPv4 peer handed to an IPv6 client
		}
		if binary.BigEndian.Uint16(p[peerLen-2:]) == 0 {
			return r, badCounts
		}
	}
	return r, badNone
}

// isV4Mapped reports whether the 16-byte address at the start of p is an
// IPv4-mapped IPv6 address (::ffff:a.b.c.d).
func isV4Mapped(p []byte) bool {
	for _, c := range p[:10] {
		if c != 0 {
			return false
		}
	}
	return p[10] == 0xff && p[11] == 0xff
}

// parseScrape checks a scrape reply whose header has been checked and
// which answers a request for n info hashes.
func parseScrape(b []byte, n int) bad {
	if len(b) != scrapeReplyLen+n*scrapeEntryLen {
		if len(b) < scrapeReplyLen+scrapeEntryLen {
			return badShort
		}
		return badLength
	}
	for e := b[scrapeReplyLen:]; len(e) > 0; e = e[scrapeEntryLen:] {
		s := int32(binary.BigEndian.Uint32(e))
		c := int32(binary.BigEndian.Uint32(e[4:]))
		l := int32(binary.BigEndian.Uint32(e[8:]))
		if s < 0 || c < 0 || l < 0 {
			return badCounts
		}
	}
	return badNone
}

// errorText returns the message of an error reply whose header has been
// checked.
func errorText(b []byte) string {
	return string(b[errorReplyLen:])
}
