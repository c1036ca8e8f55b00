package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// runDelay returns how long the process's threads have waited, in all,
// to be given a CPU while runnable (the second field of each thread's
// schedstat). On a machine others are using, it says how much of a
// run the generator was starved.
func runDelay() time.Duration {
	tasks, _ := filepath.Glob("/proc/self/task/*/schedstat")
	var sum int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		fs := bytes.Fields(b)
		if len(fs) < 2 {
			continue
		}
		if n, err := strconv.ParseInt(string(fs[1]), 10, 64); err == nil {
			sum += n
		}
	}
	return time.Duration(sum)
}
