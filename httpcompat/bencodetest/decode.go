// Package bencodetest decodes bencoded data for tests: replies read back
// from an httpcompat server and the fuzz targets that check its encoder.
// It is small, slow and strict (BEP 3 as written): integers without
// leading zeros or "-0", dictionary keys in sorted byte order and each
// once, and nothing after the value. It is safe for concurrent use.
package bencodetest

import (
	"errors"
	"fmt"
	"strconv"
)

// Decode returns the one value b holds: an int64, a string (byte strings
// hold arbitrary bytes), a []any or a map[string]any.
func Decode(b []byte) (any, error) {
	d := decoder{b: b}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.off != len(b) {
		return nil, fmt.Errorf("bencodetest: %d bytes after the value", len(b)-d.off)
	}
	return v, nil
}

// maxDepth bounds nesting, so that hostile input cannot exhaust the stack.
const maxDepth = 512

var errEOF = errors.New("bencodetest: unexpected end of input")

type decoder struct {
	b   []byte
	off int
}

func (d *decoder) value(depth int) (any, error) {
	if depth > maxDepth {
		return nil, errors.New("bencodetest: nested too deeply")
	}
	if d.off >= len(d.b) {
		return nil, errEOF
	}
	switch c := d.b[d.off]; {
	case c == 'i':
		return d.integer()
	case c >= '0' && c <= '9':
		return d.str()
	case c == 'l':
		d.off++
		list := []any{}
		for {
			if d.off >= len(d.b) {
				return nil, errEOF
			}
			if d.b[d.off] == 'e' {
				d.off++
				return list, nil
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
	case c == 'd':
		d.off++
		dict := map[string]any{}
		prev, first := "", true
		for {
			if d.off >= len(d.b) {
				return nil, errEOF
			}
			if d.b[d.off] == 'e' {
				d.off++
				return dict, nil
			}
			k, err := d.str()
			if err != nil {
				return nil, fmt.Errorf("bencodetest: dictionary key: %w", err)
			}
			if !first && k <= prev {
				return nil, fmt.Errorf("bencodetest: dictionary key %q after %q: keys must be sorted and unique", k, prev)
			}
			prev, first = k, false
			if dict[k], err = d.value(depth + 1); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("bencodetest: unexpected byte %q at %d", c, d.off)
	}
}

func (d *decoder) integer() (int64, error) {
	start := d.off + 1
	end := start
	for end < len(d.b) && d.b[end] != 'e' {
		end++
	}
	if end >= len(d.b) {
		return 0, errEOF
	}
	s := string(d.b[start:end])
	digits := s
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if digits == "" || digits[0] == '0' && (len(digits) > 1 || len(s) != len(digits)) {
		return 0, fmt.Errorf("bencodetest: bad integer %q at %d", s, d.off)
	}
	for i := range len(digits) {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, fmt.Errorf("bencodetest: bad integer %q at %d", s, d.off)
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bencodetest: integer at %d: %w", d.off, err)
	}
	d.off = end + 1
	return v, nil
}

func (d *decoder) str() (string, error) {
	colon := d.off
	for colon < len(d.b) && d.b[colon] != ':' {
		colon++
	}
	if colon >= len(d.b) {
		return "", errEOF
	}
	lenText := string(d.b[d.off:colon])
	n, err := strconv.ParseUint(lenText, 10, 31)
	if err != nil || len(lenText) > 1 && lenText[0] == '0' {
		return "", fmt.Errorf("bencodetest: bad string length %q at %d", lenText, d.off)
	}
	start := colon + 1
	if uint64(len(d.b)-start) < n {
		return "", errEOF
	}
	d.off = start + int(n)
	return string(d.b[start:d.off]), nil
}
