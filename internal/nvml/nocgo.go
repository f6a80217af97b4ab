//go:build !cgo

package nvml

import "fmt"

// Lib is an initialised NVML; without cgo there is none.
type Lib struct{}

// Open fails without cgo: this build cannot dlopen libnvidia-ml.
func Open() (*Lib, error) {
	return nil, fmt.Errorf("nvml: %w: built without cgo, so %s cannot be loaded", ErrUnavailable, libName)
}

// DeviceCount returns ErrClosed: a Lib cannot be opened without cgo.
func (l *Lib) DeviceCount() (int, error) { return 0, ErrClosed }

// ProcessUsedBytes returns ErrClosed: a Lib cannot be opened without cgo.
func (l *Lib) ProcessUsedBytes(device, pid int) (int64, error) { return 0, ErrClosed }

// Close does nothing without cgo.
func (l *Lib) Close() error { return nil }
