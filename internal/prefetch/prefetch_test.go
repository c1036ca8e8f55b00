package prefetch

import (
	"testing"
	"unsafe"
)

// TestLineNeverFaults prefetches addresses that a load would fault on, or
// that belong to nothing: a prefetch must be a hint, never a load.
func TestLineNeverFaults(t *testing.T) {
	Line(nil)
	b := make([]byte, 64)
	Line(unsafe.Pointer(&b[0]))
	Line(unsafe.Add(unsafe.Pointer(&b[0]), 1<<20)) // past the end of b
}

func BenchmarkLine(b *testing.B) {
	buf := make([]byte, 1<<24)
	for i := 0; b.Loop(); i++ {
		Line(unsafe.Pointer(&buf[(i*4099*64)&(len(buf)-1)]))
	}
}
