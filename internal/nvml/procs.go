package nvml

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// libName is the soname Open loads; tests point it at a missing one.
var libName = "libnvidia-ml.so.1"

// AllDevices, as ProcessUsedBytes' or StartPeak's device, sums the process's
// memory over every GPU NVML sees.
const AllDevices = -1

var (
	// ErrUnavailable is wrapped by the errors of Open (and StartPeak) where
	// NVML cannot be used: no libnvidia-ml.so.1 (no NVIDIA driver), a
	// library without the entry points this package calls, an NVML that
	// does not start, a build without cgo; and by ProcessUsedBytes where the
	// driver has no per-process figure.
	ErrUnavailable = errors.New("unavailable")
	// ErrNotListed is wrapped where NVML lists no compute process under the
	// pid: it holds no CUDA context on the device, or it runs in a PID
	// namespace (a container) and NVML names it by its host pid.
	ErrNotListed = errors.New("is not among NVML's compute processes")
	// ErrClosed is returned by a Lib's methods after Close.
	ErrClosed = errors.New("nvml: closed")
)

// proc is one entry of NVML's compute process list.
type proc struct {
	pid  uint32
	used uint64 // bytes; notAvailable where the driver cannot tell
}

// notAvailable is NVML_VALUE_NOT_AVAILABLE as an unsigned long long.
const notAvailable = math.MaxUint64

// sentinel fills the process buffer before NVML writes it, so that the
// stride of what it wrote can be read back (probeStride).
const sentinel = 0xA5

// strides are the sizes nvmlProcessInfo has had: v1 {pid, usedGpuMemory} 16
// bytes; v2 {pid, usedGpuMemory, gpuInstanceId, computeInstanceId} 24; the v3
// of drivers 535.43 to 535.86 {..., usedGpuCcProtectedMemory} 32. pid is at
// offset 0 and usedGpuMemory at 8 in all of them.
var strides = []int{16, 24, 32}

// maxStride is the room each entry gets in the buffer.
const maxStride = 32

// parseProcs reads n entries from buf, which was filled with sentinel bytes
// before NVML wrote into it; want is the stride the entry point is documented
// to use, kept where the bytes do not tell.
func parseProcs(buf []byte, n, want int) []proc {
	s := probeStride(buf, n, want)
	ps := make([]proc, n)
	for i := range ps {
		e := buf[i*s:]
		ps[i] = proc{pid: binary.NativeEndian.Uint32(e[0:4]), used: binary.NativeEndian.Uint64(e[8:16])}
	}
	return ps
}

// probeStride finds the stride NVML wrote n entries with. Every layout's last
// field ends its struct, and that field's last byte is not the sentinel (the
// high byte of a byte count is 0; an unset instance id is 0xFFFFFFFF): the
// written bytes end in (n*s-8, n*s] for the true stride s, and those ranges
// do not overlap for 16, 24 and 32.
func probeStride(buf []byte, n, want int) int {
	if n <= 0 {
		return want
	}
	end := 0
	for i := len(buf) - 1; i >= 0; i-- {
		if buf[i] != sentinel {
			end = i + 1
			break
		}
	}
	for _, s := range strides {
		if n*s-8 < end && end <= n*s && n*s <= len(buf) {
			return s
		}
	}
	return want
}

// usedBy sums pid's entries (a process is listed once per context; normally once).
func usedBy(ps []proc, pid int) (used int64, listed bool, err error) {
	for _, p := range ps {
		if int(p.pid) != pid {
			continue
		}
		if p.used == notAvailable {
			return 0, true, fmt.Errorf("%w: the driver reports no per-process memory for process %d (NVML_VALUE_NOT_AVAILABLE)", ErrUnavailable, pid)
		}
		used += int64(p.used)
		listed = true
	}
	return used, listed, nil
}

func deviceName(device int) string {
	if device == AllDevices {
		return "all devices"
	}
	return "device " + strconv.Itoa(device)
}
