package prefetch

import "unsafe"

// Line starts loading the cache line that holds p into all levels of the
// cache (PREFETCHT0) and returns at once.
//
//go:noescape
func Line(p unsafe.Pointer)
