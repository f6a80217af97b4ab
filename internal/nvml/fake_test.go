//go:build cgo

package nvml

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeLib builds testdata/fakenvml.c into a shared library (with the C
// compiler that cgo uses) and points Open at it.
func fakeLib(t *testing.T) {
	t.Helper()
	cc := strings.Fields(os.Getenv("CC"))
	if len(cc) == 0 {
		out, err := exec.Command("go", "env", "CC").Output()
		if err != nil {
			t.Fatalf("go env CC: %v", err)
		}
		cc = strings.Fields(string(out))
	}
	so := filepath.Join(t.TempDir(), "libnvidia-ml.so.1")
	args := append(cc[1:], "-shared", "-fPIC", "-o", so, filepath.Join("testdata", "fakenvml.c"))
	if out, err := exec.Command(cc[0], args...).CombinedOutput(); err != nil {
		t.Fatalf("building the fake NVML: %v\n%s", err, out)
	}
	old := libName
	libName = so
	t.Cleanup(func() { libName = old })
}

// TestFakeLibrary runs Open and ProcessUsedBytes through dlopen against a
// fake NVML whose process lists are written with each stride.
func TestFakeLibrary(t *testing.T) {
	fakeLib(t)
	me := os.Getpid()
	var many []string // 40 processes: more than the first buffer holds (32)
	for i := range 39 {
		many = append(many, fmt.Sprintf("%d:%d", 100000+i, 1<<20))
	}
	many = append(many, fmt.Sprintf("%d:%d", me, 7<<30))
	tests := []struct {
		name    string
		devices string
		device  int
		want    int64
		err     error
	}{
		{"one device, listed", fmt.Sprintf("11:100,%d:5000,13:7", me), 0, 5000, nil},
		{"more processes than the first buffer", strings.Join(many, ","), 0, 7 << 30, nil},
		{"all devices: summed", fmt.Sprintf("%d:1000;12:5;%d:2000", me, me), AllDevices, 3000, nil},
		{"one of two devices", fmt.Sprintf("%d:1000;12:5;%d:2000", me, me), 2, 2000, nil},
		{"not listed", "11:100,12:200", 0, 0, ErrNotListed},
		{"no processes", "", 0, 0, ErrNotListed},
		{"no per-process figure", fmt.Sprintf("%d:18446744073709551615", me), 0, 0, ErrUnavailable},
	}
	for _, stride := range strides {
		t.Setenv("FAKE_NVML_STRIDE", fmt.Sprint(stride))
		for _, tt := range tests {
			t.Setenv("FAKE_NVML_DEVICES", tt.devices)
			l, err := Open()
			if err != nil {
				t.Fatalf("stride %d, %s: Open: %v", stride, tt.name, err)
			}
			got, err := l.ProcessUsedBytes(tt.device, me)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("stride %d, %s: got %d, %v, want %d, %v", stride, tt.name, got, err, tt.want, tt.err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("stride %d, %s: Close: %v", stride, tt.name, err)
			}
		}
	}
}

// TestFakeLibraryErrors: NVML's refusals come back as errors with its message.
func TestFakeLibraryErrors(t *testing.T) {
	fakeLib(t)
	t.Setenv("FAKE_NVML_DEVICES", "1:1")
	l, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	want := "nvml: device 3: Invalid Argument (code 2)"
	if _, err := l.ProcessUsedBytes(3, os.Getpid()); err == nil || err.Error() != want {
		t.Errorf("a device NVML does not have: got %v, want %q", err, want)
	}
	if _, err := l.ProcessUsedBytes(-2, os.Getpid()); err == nil {
		t.Errorf("device -2: got nil error, want one")
	}
	// nvmlInit_v2 failing (the fake refuses a malformed list): ErrUnavailable.
	t.Setenv("FAKE_NVML_DEVICES", "garbage")
	if l2, err := Open(); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "nvmlInit_v2") {
		t.Errorf("nvmlInit_v2 failing: got %v, %v, want ErrUnavailable naming nvmlInit_v2", l2, err)
	}
}

// TestFakeStartPeak runs the sampler end to end on the fake library.
func TestFakeStartPeak(t *testing.T) {
	fakeLib(t)
	me := os.Getpid()
	t.Setenv("FAKE_NVML_DEVICES", fmt.Sprintf("9:1,%d:4096", me))
	p, err := StartPeak(0, me, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	peak, n, err := p.Stop()
	if peak != 4096 || n < 2 || err != nil {
		t.Errorf("got peak %d in %d samples, %v, want 4096 in >= 2 (the first and Stop's), nil", peak, n, err)
	}
	t.Setenv("FAKE_NVML_DEVICES", "9:1")
	if p, err = StartPeak(0, me, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.Stop(); !errors.Is(err, ErrNotListed) {
		t.Errorf("never listed: got %v, want ErrNotListed", err)
	}
}
