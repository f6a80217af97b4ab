//go:build cgo

package nvml_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/fwbench/fwbench/internal/nvml"
	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/torchrun"
)

// TestGPUProcessUsedBytes allocates device memory through libtorch (there is
// no CUDA runtime in Go here) and checks NVML's per-process figure against
// what must be resident: VGG16 with torchvision's head (138,357,544
// parameters at 1000 classes) after one SGD-momentum step holds its float32
// parameters, their gradients and the momentum buffers, 3 × 4 bytes each
// (1.55 GiB), on the device. NVML also counts the CUDA context and the
// allocator's cache, so its figure is at least that and at least libtorch's
// own peak-allocated figure. It skips only without an NVIDIA GPU.
func TestGPUProcessUsedBytes(t *testing.T) {
	l, err := nvml.Open()
	if errors.Is(err, nvml.ErrUnavailable) {
		t.Skipf("no NVIDIA GPU: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if n, err := l.DeviceCount(); err != nil || n == 0 {
		t.Skipf("no NVIDIA GPU: NVML sees %d devices (%v)", n, err)
	}
	devs, err := torchrun.CUDADevices()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 {
		t.Skip("no CUDA GPU for libtorch: " + torchrun.CUDAUnavailable())
	}
	pid := os.Getpid()
	before, err := l.ProcessUsedBytes(nvml.AllDevices, pid)
	if errors.Is(err, nvml.ErrNotListed) {
		before = 0 // no CUDA context yet
	} else if err != nil {
		t.Fatal(err)
	}

	peak, err := nvml.StartPeak(nvml.AllDevices, pid, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	cfg := recipe.Default()
	cfg.Model, cfg.ImageSize, cfg.Classes, cfg.Dropout, cfg.Device = "vgg16", 32, 1000, 0, devs[0]
	net, err := cfg.Net()
	if err != nil {
		t.Fatal(err)
	}
	var params int64
	for _, p := range net.Params {
		if p.Kind.Trainable() {
			params += int64(p.NumElements())
		}
	}
	resident := 3 * 4 * params // float32 parameters, gradients, momentum
	tr, err := torchrun.New(context.Background(), cfg, nil)
	if err != nil {
		peak.Stop()
		t.Fatal(err)
	}
	defer tr.Close()
	if _, _, err := tr.TrainStep(context.Background(), reftest.Input(2, 32)); err != nil {
		t.Fatal(err)
	}
	if err := tr.Sync(); err != nil {
		t.Fatal(err)
	}
	after, err := l.ProcessUsedBytes(nvml.AllDevices, pid)
	if err != nil {
		t.Fatal(err)
	}
	dev0, err := l.ProcessUsedBytes(0, pid)
	if err != nil {
		t.Fatal(err)
	}
	top, samples, err := peak.Stop()
	if err != nil {
		t.Fatal(err)
	}
	alloc := tr.PeakGPUBytes()
	t.Logf("params %d, resident lower bound %d B; NVML before %d, after %d (device 0: %d), sampled peak %d in %d samples; libtorch peak allocated %d",
		params, resident, before, after, dev0, top, samples, alloc)
	if resident < 1<<30 {
		t.Fatalf("the model holds %d B, want >= 1 GiB for the test to mean something", resident)
	}
	checks := []struct {
		name      string
		got, want int64
	}{
		{"NVML growth after the step, vs 3 × 4 B × params", after - before, resident},
		{"NVML after the step, vs libtorch's peak allocated", after, alloc},
		{"sampled peak, vs NVML after the step", top, after},
	}
	for _, c := range checks {
		if c.got < c.want {
			t.Errorf("%s: got %d, want >= %d", c.name, c.got, c.want)
		}
	}
	if n, err := l.DeviceCount(); err == nil && n == 1 && dev0 != after {
		t.Errorf("one GPU: device 0 got %d, want all devices' %d", dev0, after)
	}
}
