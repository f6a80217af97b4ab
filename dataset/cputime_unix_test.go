//go:build unix

package dataset

import (
	"syscall"
	"time"
)

// processCPU returns the user+system CPU time of this process, so that
// benchmarks can report CPU per image, which other load on the machine
// does not distort the way it distorts wall-clock throughput.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
