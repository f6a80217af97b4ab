package nvml

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// fakeSource returns the values in order, then its last value forever; a
// negative value is "not listed" (0), and fail, when > 0, is the sample
// number (1-based) that returns errSample.
type fakeSource struct {
	values []int64
	fail   int
	calls  atomic.Int32
	closed atomic.Int32
}

var errSample = errors.New("nvml: device 0: fake failure")

func (f *fakeSource) sample() (int64, bool, error) {
	i := int(f.calls.Add(1))
	if f.fail > 0 && i >= f.fail {
		return 0, false, errSample
	}
	v := f.values[min(i, len(f.values))-1]
	if v < 0 {
		return 0, false, nil
	}
	return v, true, nil
}

func (f *fakeSource) close() error { f.closed.Add(1); return nil }

func TestPeak(t *testing.T) {
	tests := []struct {
		name     string
		values   []int64
		fail     int
		peak     int64
		minCalls int
		err      error
	}{
		// The largest value, wherever it falls; the last sample (Stop's) counts too.
		{"rises and falls", []int64{-1, 10, 500, 20}, 0, 500, 4, nil},
		{"peak at the end", []int64{-1, 10, 20, 30, 40, 50}, 0, 50, 6, nil},
		// A failing sampler ends sampling: its error, the peak before it.
		{"sampler fails", []int64{10, 70, 30}, 3, 70, 3, errSample},
		{"never listed", []int64{-1}, 0, 0, 2, ErrNotListed},
	}
	for _, tt := range tests {
		before := runtime.NumGoroutine()
		f := &fakeSource{values: tt.values, fail: tt.fail}
		p, err := startPeak(f.sample, f.close, time.Millisecond, "device 0: process 1")
		if err != nil {
			t.Fatalf("%s: startPeak: %v", tt.name, err)
		}
		// Wait until the goroutine has sampled past every value (or failed).
		deadline := time.Now().Add(10 * time.Second)
		for int(f.calls.Load()) < len(tt.values) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		peak, n, err := p.Stop()
		if peak != tt.peak || !errors.Is(err, tt.err) {
			t.Errorf("%s: Stop: got peak %d, %v, want %d, %v", tt.name, peak, err, tt.peak, tt.err)
		}
		if calls := int(f.calls.Load()); calls < tt.minCalls || (tt.err == nil && n != calls) {
			t.Errorf("%s: got %d samples of %d calls, want >= %d, all counted when none failed", tt.name, n, calls, tt.minCalls)
		}
		if tt.fail > 0 && int(f.calls.Load()) != tt.fail {
			t.Errorf("%s: got %d calls, want %d: a failure ends the sampling", tt.name, f.calls.Load(), tt.fail)
		}
		// Idempotent: the same answer, no second close, no sampling after Stop.
		calls := f.calls.Load()
		peak2, n2, err2 := p.Stop()
		if peak2 != peak || n2 != n || err2 != err {
			t.Errorf("%s: second Stop: got %d, %d, %v, want %d, %d, %v", tt.name, peak2, n2, err2, peak, n, err)
		}
		time.Sleep(5 * time.Millisecond)
		if f.closed.Load() != 1 || f.calls.Load() != calls {
			t.Errorf("%s: after Stop: got %d closes and %d more samples, want 1 and 0", tt.name, f.closed.Load(), f.calls.Load()-calls)
		}
		select {
		case <-p.done:
		default:
			t.Errorf("%s: the sampling goroutine still runs after Stop", tt.name)
		}
		if after := runtime.NumGoroutine(); after > before {
			t.Errorf("%s: got %d goroutines after Stop, want at most %d (before)", tt.name, after, before)
		}
	}
}

// TestStartPeakFirstSampleFails: nothing runs, the library is closed.
func TestStartPeakFirstSampleFails(t *testing.T) {
	f := &fakeSource{values: []int64{1}, fail: 1}
	p, err := startPeak(f.sample, f.close, time.Millisecond, "device 0: process 1")
	if p != nil || !errors.Is(err, errSample) || f.closed.Load() != 1 {
		t.Errorf("startPeak: got %v, %v, %d closes, want nil, errSample, 1", p, err, f.closed.Load())
	}
}

// TestStartPeakUnavailable: without the library StartPeak starts nothing.
func TestStartPeakUnavailable(t *testing.T) {
	defer func(n string) { libName = n }(libName)
	libName = "libfwbench-no-such-nvml.so.1"
	before := runtime.NumGoroutine()
	p, err := StartPeak(AllDevices, os.Getpid(), 20*time.Millisecond)
	if p != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("StartPeak: got %v, %v, want nil and an error wrapping ErrUnavailable", p, err)
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("got %d goroutines, want at most %d", after, before)
	}
	if _, _, err := p.Stop(); err == nil {
		t.Errorf("Stop on the nil Peak: got nil error, want one")
	}
	if _, err := StartPeak(0, os.Getpid(), 0); err == nil {
		t.Errorf("StartPeak(every 0): got nil error, want one")
	}
}
