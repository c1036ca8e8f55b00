package httpcompat

import "strconv"

// The bencoder is append-style, like strconv.AppendInt: each function
// appends one value to dst and returns the extended slice, so that a reply
// is built in one reused buffer without allocating. Lists and dictionaries
// are written by the caller as 'l' or 'd', their items, then 'e'. A
// dictionary's keys are byte strings that must come in sorted byte order,
// each once (BEP 3); the caller writes them in that order.
//
//	integer  i<decimal>e      i42e, i-3e, i0e
//	string   <length>:<bytes>  4:spam, 0:
//	list     l<values>e        l4:spami42ee
//	dict     d<key><value>…e   d3:bar4:spam3:fooi42ee

// AppendInt appends the bencoded integer v.
func AppendInt(dst []byte, v int64) []byte {
	dst = append(dst, 'i')
	dst = strconv.AppendInt(dst, v, 10)
	return append(dst, 'e')
}

// AppendUint appends the bencoded integer v.
func AppendUint(dst []byte, v uint64) []byte {
	dst = append(dst, 'i')
	dst = strconv.AppendUint(dst, v, 10)
	return append(dst, 'e')
}

// AppendString appends s as a bencoded byte string.
func AppendString(dst []byte, s string) []byte {
	dst = strconv.AppendUint(dst, uint64(len(s)), 10)
	dst = append(dst, ':')
	return append(dst, s...)
}

// AppendBytes appends b as a bencoded byte string.
func AppendBytes(dst, b []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(len(b)), 10)
	dst = append(dst, ':')
	return append(dst, b...)
}
