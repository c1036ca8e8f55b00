//go:build amd64 || arm64

package prefetch

import "unsafe"

// Line starts loading the cache line that holds p into all levels of the
// cache (PREFETCHT0 on amd64, PRFM PLDL1KEEP on arm64) and returns at
// once.
//
//go:noescape
func Line(p unsafe.Pointer)
