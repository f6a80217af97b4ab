package compare

import (
	"os"
	"strings"
	"time"

	"github.com/fwbench/fwbench/internal/nvml"
	"github.com/fwbench/fwbench/recipe"
)

// GPUSampleInterval is how often a CUDA run samples NVML for this process's
// GPU memory (RunRecord.PeakGPUBytes is the largest sample).
const GPUSampleInterval = 20 * time.Millisecond

// SettingGPUMemory is the settings key that says how PeakGPUBytes was
// measured on a CUDA run, or why it is absent ("nvml unavailable: ...").
const SettingGPUMemory = "gpu_memory"

// gpuPeak is a running sampler of this process's peak GPU memory (nvml.Peak).
type gpuPeak interface {
	Stop() (peak int64, samples int, err error)
}

// startGPUPeak starts NVML's sampler for this process, summed over every GPU
// NVML sees: NVML numbers GPUs in its own order, which CUDA_VISIBLE_DEVICES
// does not change, and a process holds memory only on the GPUs it uses. A
// variable, so that tests give a fake.
var startGPUPeak = func() (gpuPeak, error) {
	p, err := nvml.StartPeak(nvml.AllDevices, os.Getpid(), GPUSampleInterval)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// gpuSampler measures a run's peak GPU memory through NVML, the same way for
// every framework. nil (the CPU, or NVML unavailable) does nothing.
type gpuSampler struct {
	p gpuPeak
}

// startGPU starts sampling on a CUDA device; where NVML cannot, the record's
// settings say why and nil is returned.
func startGPU(r *RunRecord, device string) *gpuSampler {
	if d, err := recipe.ParseDevice(device); err != nil || !d.GPU {
		return nil
	}
	p, err := startGPUPeak()
	if err != nil {
		why := strings.TrimPrefix(err.Error(), "nvml: ")
		r.Settings[SettingGPUMemory] = "nvml unavailable: " + strings.TrimPrefix(why, nvml.ErrUnavailable.Error()+": ")
		return nil
	}
	r.Settings[SettingGPUMemory] = "nvml, sampled every " + GPUSampleInterval.String()
	return &gpuSampler{p: p}
}

// stop ends the sampling and records NVML's peak in r.PeakGPUBytes; a
// sampler that failed leaves it nil and says why in the settings. Safe on
// nil and to call twice.
func (g *gpuSampler) stop(r *RunRecord) {
	if g == nil || g.p == nil {
		return
	}
	peak, _, err := g.p.Stop()
	g.p = nil
	if err != nil {
		r.Settings[SettingGPUMemory] = "nvml failed: " + strings.TrimPrefix(err.Error(), "nvml: ")
		return
	}
	r.PeakGPUBytes = &peak
}
