package main

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// parseURLData is a server's reading of BEP 41 options: the URLData
// options concatenated, up to an end-of-options byte or the packet's end.
func parseURLData(t *testing.T, b []byte) string {
	t.Helper()
	var s []byte
	for len(b) > 0 {
		switch b[0] {
		case optEndOfOptions:
			return string(s)
		case optNOP:
			b = b[1:]
			continue
		}
		if len(b) < 2 || len(b) < 2+int(b[1]) {
			t.Fatalf("option %d cut off: % x", b[0], b)
		}
		end := 2 + int(b[1])
		if b[0] == optURLData {
			s = append(s, b[2:end]...)
		}
		b = b[end:]
	}
	return string(s)
}

func TestAppendURLData(t *testing.T) {
	key := "/0123456789abcdef0123456789abcdef/announce"
	got := appendURLData(nil, key)
	want := append([]byte{2, byte(len(key))}, key...)
	if !bytes.Equal(got, want) {
		t.Fatalf("appendURLData(%q) = % x, want % x", key, got, want)
	}
	if appendURLData([]byte{9}, "") == nil || len(appendURLData(nil, "")) != 0 {
		t.Fatal("empty URL data must append nothing")
	}
	// Long data is cut into options of 255 bytes at most.
	for _, n := range []int{1, 254, 255, 256, 510, 511, 1024} {
		s := "/" + strings.Repeat("x", n-1)
		b := appendURLData(nil, s)
		opts := (n + 254) / 255
		if len(b) != n+2*opts {
			t.Errorf("%d bytes: %d bytes of options, want %d", n, len(b), n+2*opts)
		}
		for off, i := 0, 0; off < len(b); i++ {
			l := int(b[off+1])
			if b[off] != optURLData || l == 0 || l > 255 || (off+2+l < len(b) && l != 255) {
				t.Fatalf("%d bytes: option %d is type %d, length %d", n, i, b[off], l)
			}
			off += 2 + l
		}
		if p := parseURLData(t, b); p != s {
			t.Errorf("%d bytes: decoded %q", n, p)
		}
	}
}

// TestAnnounceURLData checks the whole request: the BEP 15 announce
// unchanged, the options after it, and the HTTP request line.
func TestAnnounceURLData(t *testing.T) {
	savedOpts, savedStart := urlDataOpts, httpAnnounceStart
	t.Cleanup(func() { urlDataOpts, httpAnnounceStart = savedOpts, savedStart })
	a := &announce{ConnID: 7, TxID: 9, Port: 6881, NumWant: 50}
	plain := appendAnnounce(nil, a)
	key := "/0123456789abcdef0123456789abcdef/announce"
	if err := setURLData(key); err != nil {
		t.Fatal(err)
	}
	b := appendAnnounce(nil, a)
	if len(plain) != announceReqLen || !bytes.Equal(b[:announceReqLen], plain) {
		t.Fatalf("announce fields changed: % x", b[:announceReqLen])
	}
	if got := parseURLData(t, b[announceReqLen:]); got != key {
		t.Fatalf("URL data %q, want %q", got, key)
	}
	if binary.BigEndian.Uint16(b[96:]) != 6881 {
		t.Fatal("port moved")
	}
	req := string(appendHTTPAnnounce(nil, "h", a))
	if !strings.HasPrefix(req, "GET "+key+"?info_hash=") {
		t.Fatalf("HTTP request %q", req)
	}
	if err := setURLData("/k/announce?x=1"); err != nil {
		t.Fatal(err)
	}
	if req := string(appendHTTPAnnounce(nil, "h", a)); !strings.HasPrefix(req, "GET /k/announce?x=1&info_hash=") {
		t.Fatalf("HTTP request %q", req)
	}
	for _, bad := range []string{"announce", "/a b", "/a#b", "/a\n", "/" + strings.Repeat("x", maxURLData)} {
		if err := checkURLData(bad); err == nil {
			t.Errorf("checkURLData(%q) accepted", bad)
		}
	}
}
