//go:build unix

package dataset

import (
	"syscall"
	"time"
)

// processCPU returns the user+system CPU time of this process (getrusage
// RUSAGE_SELF: every thread, not only the loader's goroutines). Deltas of
// it measure work in CPU time, which other load on the machine distorts
// far less than wall-clock time.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
