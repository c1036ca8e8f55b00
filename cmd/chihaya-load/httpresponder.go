package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP responder is the least an HTTP tracker can do: it answers
// every announce with an empty swarm and every scrape with zeros for the
// hashes asked for, over kept-alive connections (or, with closeEach, one
// reply per connection, as opentracker does). It parses no more of a
// request than it must, so the generator measured against it shows its
// own ceiling.

// httpResponderAnnounce is the body of every announce reply: keys sorted,
// an empty compact peer list, which both families accept.
const httpResponderAnnounce = "d8:completei1e10:incompletei0e8:intervali1800e12:min intervali900e5:peers0:e"

// httpResponderStats counts what an HTTP responder did.
type httpResponderStats struct {
	answered atomic.Uint64 // announces and scrapes
	rejected atomic.Uint64 // requests answered 400 or 404
	conns    atomic.Uint64 // connections accepted
}

// runHTTPResponder serves the HTTP responder on addr until ctx is done or
// limit has passed, then prints what it did.
func runHTTPResponder(ctx context.Context, addr string, closeEach bool, limit time.Duration, stdout, stderr io.Writer) int {
	ap, err := resolve(addr)
	if err != nil {
		fmt.Fprintf(stderr, "chihaya-load: -http-responder: %v\n", err)
		return 2
	}
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		fmt.Fprintf(stderr, "chihaya-load: %v\n", err)
		return 1
	}
	defer ln.Close()
	mode := "keep-alive"
	if closeEach {
		mode = "closing after every reply"
	}
	fmt.Fprintf(stderr, "chihaya-load: HTTP responder on %v, %s\n", ln.Addr(), mode)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var st httpResponderStats
	if err := serveHTTPResponder(ctx, ln, closeEach, &st); err != nil {
		fmt.Fprintf(stderr, "chihaya-load: HTTP responder: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "http responder: answered %d, rejected %d, on %d connections\n",
		st.answered.Load(), st.rejected.Load(), st.conns.Load())
	return 0
}

// serveHTTPResponder accepts connections on ln, with a goroutine each,
// until ctx is done; then it pushes every blocked accept, read and write
// out with a past deadline and waits for the goroutines. ln stays open.
func serveHTTPResponder(ctx context.Context, ln *net.TCPListener, closeEach bool, st *httpResponderStats) error {
	var (
		mu      sync.Mutex // guards the fields below
		conns   = make(map[net.Conn]struct{})
		stopped bool
	)
	stop := context.AfterFunc(ctx, func() {
		ln.SetDeadline(time.Now())
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		for c := range conns {
			c.SetDeadline(time.Now())
		}
	})
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	// Each pass accepts a connection or fails; ctx bounds the loop, and
	// failures that do not end it pause.
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, os.ErrDeadlineExceeded) || !isTemporary(err) {
				return err
			}
			time.Sleep(dialPause) // out of file descriptors, say
			continue
		}
		mu.Lock()
		if stopped {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		st.conns.Add(1)
		wg.Go(func() {
			serveHTTPConn(c, closeEach, st)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
			c.Close()
		})
	}
}

// isTemporary reports whether an accept error may go away by itself.
func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// serveHTTPConn answers the requests on c until c fails or ends, or,
// with closeEach, until it has answered one.
func serveHTTPConn(c net.Conn, closeEach bool, st *httpResponderStats) {
	buf := make([]byte, 16<<10)
	var out, body []byte
	r, w := 0, 0 // buf[r:w] is read but not yet answered
	// Each pass reads at least a byte or returns.
	for {
		out = out[:0]
		// Answer every complete request buffered (clients may pipeline).
		for {
			end := bytes.Index(buf[r:w], crlfCRLF)
			if end < 0 {
				break
			}
			out, body = answerHTTP(out, body, buf[r:r+end], st)
			r += end + 4
			if closeEach {
				break
			}
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil || closeEach {
				return
			}
		}
		switch {
		case r == w:
			r, w = 0, 0
		case w == len(buf) && r == 0:
			return // a request longer than the buffer
		case w == len(buf):
			w = copy(buf, buf[r:w])
			r = 0
		}
		n, err := c.Read(buf[w:])
		if err != nil {
			return
		}
		w += n
	}
}

// answerHTTP appends the reply to a request whose line and headers are
// head to dst; body is scratch space for the reply's body.
func answerHTTP(dst, body, head []byte, st *httpResponderStats) ([]byte, []byte) {
	status, body := responderBody(body[:0], head)
	if status[0] == '2' {
		st.answered.Add(1)
	} else {
		st.rejected.Add(1)
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, status...)
	dst = append(dst, "\r\nContent-Type: text/plain\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n\r\n"...)
	return append(dst, body...), body
}

// responderBody appends the body of the reply to the request whose line
// and headers are head to dst, and returns it with the reply's status.
func responderBody(dst, head []byte) (status string, body []byte) {
	line, _, _ := bytes.Cut(head, crlf)
	target, ok := bytes.CutPrefix(line, []byte("GET "))
	if i := bytes.LastIndexByte(target, ' '); ok && i >= 0 {
		target = target[:i]
	} else {
		target = nil
	}
	path, query, _ := bytes.Cut(target, []byte("?"))
	switch string(path) {
	case "/announce":
		return "200 OK", append(dst, httpResponderAnnounce...)
	case "/scrape":
		if body, ok := appendResponderScrape(dst, query); ok {
			return "200 OK", body
		}
		return "400 Bad Request", dst
	}
	return "404 Not Found", dst
}

// appendResponderScrape appends a scrape reply with zero counts for each
// distinct info_hash of query, in sorted order, or returns false if one
// is not 20 bytes.
func appendResponderScrape(dst, query []byte) ([]byte, bool) {
	var hashes [maxScrapeHashes][20]byte
	n := 0
	// Each pass consumes a parameter.
	for len(query) > 0 && n < len(hashes) {
		var param []byte
		param, query, _ = bytes.Cut(query, []byte("&"))
		v, ok := bytes.CutPrefix(param, []byte("info_hash="))
		if !ok {
			continue
		}
		if !unescapeHash(&hashes[n], v) {
			return dst, false
		}
		n++
	}
	hs := hashes[:n]
	slices.SortFunc(hs, func(a, b [20]byte) int { return bytes.Compare(a[:], b[:]) })
	hs = slices.Compact(hs)
	dst = append(dst, "d5:filesd"...)
	for i := range hs {
		dst = append(dst, "20:"...)
		dst = append(dst, hs[i][:]...)
		dst = append(dst, "d8:completei0e10:downloadedi0e10:incompletei0ee"...)
	}
	return append(dst, "ee"...), true
}

// unescapeHash percent-decodes v into h and reports whether it was
// exactly 20 bytes.
func unescapeHash(h *[20]byte, v []byte) bool {
	n := 0
	for i := 0; i < len(v); i++ {
		if n == len(h) {
			return false
		}
		c := v[i]
		if c == '%' {
			if i+2 >= len(v) {
				return false
			}
			hi, ok1 := unhex(v[i+1])
			lo, ok2 := unhex(v[i+2])
			if !ok1 || !ok2 {
				return false
			}
			c = hi<<4 | lo
			i += 2
		}
		h[n] = c
		n++
	}
	return n == len(h)
}
