package nvml

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

// TestOpenMissingLibrary points Open at a soname that no machine has.
func TestOpenMissingLibrary(t *testing.T) {
	defer func(n string) { libName = n }(libName)
	libName = "libfwbench-no-such-nvml.so.1"
	l, err := Open()
	if l != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open(%s): got %v, %v, want nil and an error wrapping ErrUnavailable", libName, l, err)
	}
	if !strings.HasPrefix(err.Error(), "nvml: ") || !strings.Contains(err.Error(), libName) {
		t.Errorf("Open(%s): got %q, want the package prefix and the soname", libName, err)
	}
}

// TestOpenHere opens the real libnvidia-ml.so.1: a machine without an NVIDIA
// driver (this one) must get ErrUnavailable; one with a driver must get a Lib
// that lists devices and closes twice.
func TestOpenHere(t *testing.T) {
	l, err := Open()
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Open: got %v, want nil or an error wrapping ErrUnavailable", err)
		}
		t.Logf("no NVML here: %v", err)
		return
	}
	n, err := l.DeviceCount()
	if err != nil || n < 0 {
		t.Errorf("DeviceCount: got %d, %v, want >= 0, nil", n, err)
	}
	// This test process holds no CUDA context: NVML does not list it.
	if n > 0 {
		if _, err := l.ProcessUsedBytes(AllDevices, os.Getpid()); !errors.Is(err, ErrNotListed) {
			t.Errorf("ProcessUsedBytes(this process, before any CUDA call): got %v, want ErrNotListed", err)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("Close: got %v, want nil", err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if _, err := l.ProcessUsedBytes(0, os.Getpid()); err != ErrClosed {
		t.Errorf("ProcessUsedBytes after Close: got %v, want ErrClosed", err)
	}
}

// entry writes one nvmlProcessInfo of the given stride: pid at 0,
// usedGpuMemory at 8, then (24 and 32 bytes) gpuInstanceId and
// computeInstanceId, 0xFFFFFFFF without MIG (NVML's documentation), then (32)
// usedGpuCcProtectedMemory, 0.
func entry(b []byte, stride int, pid uint32, used uint64) {
	binary.NativeEndian.PutUint32(b[0:], pid)
	binary.NativeEndian.PutUint32(b[4:], 0) // padding; NVML's copy writes it
	binary.NativeEndian.PutUint64(b[8:], used)
	if stride >= 24 {
		binary.NativeEndian.PutUint32(b[16:], math.MaxUint32)
		binary.NativeEndian.PutUint32(b[20:], math.MaxUint32)
	}
	if stride == 32 {
		binary.NativeEndian.PutUint64(b[24:], 0)
	}
}

// TestParseProcs reads lists written with each layout's stride, whatever
// stride the entry point is documented to use.
func TestParseProcs(t *testing.T) {
	want := []proc{{101, 1 << 30}, {202, 300 << 20}, {303, 5 << 20}}
	for _, stride := range strides {
		for _, doc := range []int{16, 24} {
			for n := 1; n <= len(want); n++ {
				buf := make([]byte, 8*maxStride)
				for i := range buf {
					buf[i] = sentinel
				}
				for i := range n {
					entry(buf[i*stride:], stride, want[i].pid, want[i].used)
				}
				if got := probeStride(buf, n, doc); got != stride {
					t.Errorf("stride %d, %d entries, documented %d: got stride %d, want %d", stride, n, doc, got, stride)
				}
				got := parseProcs(buf, n, doc)
				for i := range n {
					if got[i] != want[i] {
						t.Errorf("stride %d, %d entries: entry %d: got %+v, want %+v", stride, n, i, got[i], want[i])
					}
				}
			}
		}
	}
	// Nothing written: the documented stride stands.
	buf := make([]byte, 4*maxStride)
	for i := range buf {
		buf[i] = sentinel
	}
	if got := probeStride(buf, 0, 24); got != 24 {
		t.Errorf("no entries: got stride %d, want 24", got)
	}
}

func TestUsedBy(t *testing.T) {
	ps := []proc{{7, 100}, {8, 50}, {7, 20}}
	tests := []struct {
		name   string
		ps     []proc
		pid    int
		used   int64
		listed bool
		err    error
	}{
		{"listed twice (two contexts): summed", ps, 7, 120, true, nil},
		{"listed once", ps, 8, 50, true, nil},
		{"not listed", ps, 9, 0, false, nil},
		{"empty list", nil, 7, 0, false, nil},
		{"no per-process figure", []proc{{7, notAvailable}}, 7, 0, true, ErrUnavailable},
	}
	for _, tt := range tests {
		used, listed, err := usedBy(tt.ps, tt.pid)
		if used != tt.used || listed != tt.listed || !errors.Is(err, tt.err) {
			t.Errorf("%s: got %d, %v, %v, want %d, %v, %v", tt.name, used, listed, err, tt.used, tt.listed, tt.err)
		}
	}
}
