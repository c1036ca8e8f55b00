package testenv

import (
	"testing"
	"time"
)

// A CPUMeter measures the process's CPU time, user and system, from
// StartCPU to Report. On a shared machine a benchmark's wall time
// includes waiting for a core; CPU time per operation is what throughput
// per CPU second, the README's measure, depends on.
type CPUMeter struct {
	start time.Duration
	ok    bool
}

// StartCPU starts a CPUMeter. Call it after the benchmark's setup, with
// or just before b.ResetTimer or the b.Loop.
func StartCPU() CPUMeter {
	start, ok := processCPU()
	return CPUMeter{start: start, ok: ok}
}

// Report reports the CPU time since StartCPU per b.N as cpu-ns/op, or
// nothing where the process's CPU time is unknown. Call it after the
// timed loop, and after any b.ResetTimer, which drops reported metrics.
func (m CPUMeter) Report(b *testing.B) {
	if end, ok := processCPU(); m.ok && ok && b.N > 0 {
		b.ReportMetric(float64(end-m.start)/float64(b.N), "cpu-ns/op")
	}
}
