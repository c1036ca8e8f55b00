package main

import (
	"errors"
	"strings"
)

// URL data (-urldata): the path (and query) of the tracker's URL, such as
// "/PASSKEY/announce" for a private tracker. A UDP announce carries it as
// BEP 41 options after the BEP 15 fields: option 2 (URLData), a length
// byte and up to 255 bytes of the string, as many options as it takes,
// concatenated by the server; no end-of-options byte (BEP 41 lets the
// packet end there). An HTTP announce uses it as its path instead of
// "/announce".
//
// Both are set once, from the flag, before any worker starts, and only
// read afterwards.
var (
	// urlDataOpts is appended to every UDP announce request.
	urlDataOpts []byte
	// httpAnnounceStart begins every HTTP announce request, up to the
	// first query parameter's name.
	httpAnnounceStart = "GET /announce?"
)

// BEP 41 option types.
const (
	optEndOfOptions = 0
	optNOP          = 1
	optURLData      = 2
)

// maxURLData bounds -urldata: it has to fit in one datagram with the
// announce, and nobody's tracker URL is longer.
const maxURLData = 1024

// setURLData checks s and makes every announce carry it.
func setURLData(s string) error {
	if err := checkURLData(s); err != nil {
		return err
	}
	urlDataOpts = appendURLData(nil, s)
	sep := "?"
	if strings.Contains(s, "?") {
		sep = "&"
	}
	httpAnnounceStart = "GET " + s + sep
	return nil
}

// checkURLData rejects what cannot be both BEP 41 URL data and an HTTP
// request path.
func checkURLData(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case s[0] != '/':
		return errors.New("must start with /")
	case len(s) > maxURLData:
		return errors.New("longer than 1024 bytes")
	case strings.ContainsAny(s, "#"):
		return errors.New("must not contain #")
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return errors.New("must be printable ASCII without spaces (percent-encode the rest)")
		}
	}
	return nil
}

// appendURLData appends s to dst as BEP 41 URLData options, 255 bytes of
// s at most per option. An empty s appends nothing.
func appendURLData(dst []byte, s string) []byte {
	for len(s) > 0 {
		n := min(len(s), 255)
		dst = append(dst, optURLData, byte(n))
		dst = append(dst, s[:n]...)
		s = s[n:]
	}
	return dst
}

// setURLDataFlag applies -urldata if it was given. Without it nothing is
// written, so runs in parallel (the tests) share the defaults.
func setURLDataFlag(s string) error {
	if s == "" {
		return nil
	}
	return setURLData(s)
}
