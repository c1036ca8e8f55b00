//go:build !linux

package main

import "time"

// runDelay returns 0: only Linux says how long threads waited for a CPU.
func runDelay() time.Duration { return 0 }
