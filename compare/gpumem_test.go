package compare

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/fwbench/fwbench/internal/nvml"
	"github.com/fwbench/fwbench/recipe"
)

// gpuFake is a fakeTrainer on a CUDA device whose allocator reports a peak.
type gpuFake struct {
	*fakeTrainer
	device string
	alloc  int64
}

func (g *gpuFake) Info() recipe.Info {
	i := g.fakeTrainer.Info()
	i.Device = g.device
	return i
}
func (g *gpuFake) PeakGPUBytes() int64 { return g.alloc }

// fakePeak stands in for nvml.Peak and records when, in steps, it ran.
type fakePeak struct {
	tr                  *fakeTrainer
	peak                int64
	err                 error
	stops, stepsAtStart int
	stepsAtStop         int
}

func (f *fakePeak) Stop() (int64, int, error) {
	f.stops++
	f.stepsAtStop = f.tr.steps
	return f.peak, 7, f.err
}

// TestTrainGPUMemory checks the record's GPU-memory wiring with a fake NVML
// sampler: on a CUDA run PeakGPUBytes is the sampler's peak, taken over the
// whole run, and PeakGPUAllocatorBytes the driver's allocator figure; where
// NVML is missing or fails, PeakGPUBytes is absent and the settings say why;
// the CPU starts nothing. (NVML itself is tested in internal/nvml.)
func TestTrainGPUMemory(t *testing.T) {
	defer func(f func() (gpuPeak, error)) { startGPUPeak = f }(startGPUPeak)
	const nvmlPeak, allocPeak = 3 << 30, 1 << 30
	unavailable := fmt.Errorf("nvml: %w: dlopen: libnvidia-ml.so.1: cannot open shared object file", nvml.ErrUnavailable)
	tests := []struct {
		name                string
		device              string
		startErr, stopErr   error
		wantPeak, wantAlloc int64 // 0: absent
		wantStarts          int
		wantSetting         string // "": absent
	}{
		{"cpu", "cpu", nil, nil, 0, allocPeak, 0, ""},
		{"cuda, nvml", "cuda:0", nil, nil, nvmlPeak, allocPeak, 1, "nvml, sampled every 20ms"},
		{"cuda, no nvml", "cuda:0", unavailable, nil, 0, allocPeak, 1,
			"nvml unavailable: dlopen: libnvidia-ml.so.1: cannot open shared object file"},
		{"cuda, sampler failed", "cuda:0", nil, errors.New("nvml: device 0: GPU is lost (code 15)"), 0, allocPeak, 1,
			"nvml failed: device 0: GPU is lost (code 15)"},
	}
	for _, tt := range tests {
		data := synthLoaders(t, 4)
		s := testSpec()
		s.Epochs, s.BatchSize = 1, 4
		ft := &fakeTrainer{name: Torch}
		var starts int
		var fp *fakePeak
		startGPUPeak = func() (gpuPeak, error) {
			starts++
			if tt.startErr != nil {
				return nil, tt.startErr
			}
			fp = &fakePeak{tr: ft, peak: nvmlPeak, err: tt.stopErr, stepsAtStart: ft.steps}
			return fp, nil
		}
		rec, err := Train(context.Background(), &gpuFake{ft, tt.device, allocPeak}, s, data, nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		deref := func(p *int64) int64 {
			if p == nil {
				return 0
			}
			return *p
		}
		setting, ok := rec.Settings[SettingGPUMemory]
		if !ok {
			setting = ""
		}
		checks := []struct {
			what      string
			got, want any
		}{
			{"samplers started", starts, tt.wantStarts},
			{"peak_gpu_bytes", deref(rec.PeakGPUBytes), tt.wantPeak},
			{"peak_gpu_allocator_bytes", deref(rec.PeakGPUAllocatorBytes), tt.wantAlloc},
			{"settings[gpu_memory]", setting, tt.wantSetting},
		}
		if fp != nil {
			checks = append(checks, []struct {
				what      string
				got, want any
			}{
				{"Stop calls", fp.stops, 1},
				{"steps when sampling started", fp.stepsAtStart, 0},
				{"steps when sampling stopped", fp.stepsAtStop, ft.steps},
			}...)
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s: %s: got %v, want %v", tt.name, c.what, c.got, c.want)
			}
		}
	}
}

// TestTrainGPUMemoryStopsOnError: a run that fails before its first step
// still stops its sampler.
func TestTrainGPUMemoryStopsOnError(t *testing.T) {
	defer func(f func() (gpuPeak, error)) { startGPUPeak = f }(startGPUPeak)
	ft := &fakeTrainer{name: Torch}
	fp := &fakePeak{tr: ft, peak: 1}
	startGPUPeak = func() (gpuPeak, error) { return fp, nil }
	s := testSpec()
	s.Epochs, s.BatchSize, s.Checkpoint = 1, 4, t.TempDir()
	// Only Trainer's methods: no Checkpointer, so Train refuses the checkpoint folder.
	tr := struct{ Trainer }{&gpuFake{ft, "cuda:0", 0}}
	if _, err := Train(context.Background(), tr, s, synthLoaders(t, 4), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	if fp.stops != 1 {
		t.Errorf("Stop calls: got %d, want 1", fp.stops)
	}
}
