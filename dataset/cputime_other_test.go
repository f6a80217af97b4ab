//go:build !unix

package dataset

import "time"

// processCPU is not measured on this system.
func processCPU() time.Duration { return 0 }
