//go:build !unix

package testenv

import "time"

// processCPU reports that the process's CPU time is unknown here.
func processCPU() (time.Duration, bool) { return 0, false }
