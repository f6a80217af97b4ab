package tfrun

import (
	"context"
	"strconv"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// TestGPU trains the tiny model on the first GPU and on the CPU from the
// same weights and compares. It is skipped when the loaded libtensorflow
// has no GPU: scripts/setup.sh provisions the tensorflow-cpu build, so CI
// always skips it. Its configuration is the build stage of Dockerfile.cuda
// (FWBENCH_VARIANT=cuda: tensorflow[and-cuda]) on a machine with a CUDA GPU;
// the command is in Dockerfile.cuda's header and docs/reliability.md.
func TestGPU(t *testing.T) {
	gpus, err := CUDADevices()
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) == 0 {
		t.Skip("no GPU in this libtensorflow (CPU build, or no CUDA device): run it in Dockerfile.cuda's build stage, see docs/reliability.md")
	}
	ctx := context.Background()
	cfg := tinyConfig()
	init, err := weights.InitParams(mustNet(t, cfg).Params, 1)
	if err != nil {
		t.Fatal(err)
	}
	cpu := mustNew(t, cfg, init)
	cfg.Device = gpus[0]
	gpu := mustNew(t, cfg, init)
	if got := gpu.Info().Device; got != gpus[0] {
		t.Errorf("Info device: got %q, want %q", got, gpus[0])
	}
	b := synthBatch(0, 8, 3, 32, 1)
	lc, err1 := cpu.Logits(ctx, b)
	lg, err2 := gpu.Logits(ctx, b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	// cuDNN and oneDNN sum in other orders, and cuDNN may use TF32 on
	// Ampere and later: 1e-2 of the largest logit.
	if e := reftest.RelErr(lg, lc); e > 1e-2 {
		t.Errorf("GPU logits differ from the CPU's by %.3g of the largest, want <= 1e-2", e)
	}
	for range 2 {
		l1, _, err1 := cpu.TrainStep(ctx, b)
		l2, _, err2 := gpu.TrainStep(ctx, b)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		if d := (l1 - l2) / l1; d > 1e-2 || d < -1e-2 {
			t.Errorf("loss CPU %v, GPU %v", l1, l2)
		}
	}
	if err := gpu.Sync(); err != nil {
		t.Error(err)
	}
}

// TestGPUSettings checks the GPU-only switches on the first GPU: TF32 off
// for fp32 and on for tf32, as the library reads it back
// (tsl::tensor_float_32_execution_enabled) and as Info reports it, and
// cuDNN autotuning as the recipe asks (tsl::CudnnUseAutotune, which reads
// TF_CUDNN_USE_AUTOTUNE). Skipped without a GPU, like TestGPU.
func TestGPUSettings(t *testing.T) {
	gpus, err := CUDADevices()
	if err != nil {
		t.Fatal(err)
	}
	if len(gpus) == 0 {
		t.Skip("no GPU in this libtensorflow (CPU build, or no CUDA device): run it in Dockerfile.cuda's build stage, see docs/reliability.md")
	}
	for _, c := range []struct {
		precision string
		benchmark bool
		tf32      bool
	}{{recipe.FP32, false, false}, {recipe.TF32, true, true}, {recipe.BF16, true, false}} {
		cfg := tinyConfig()
		cfg.Device, cfg.Precision, cfg.CUDNNBenchmark = gpus[0], c.precision, c.benchmark
		tr, err := New(context.Background(), cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := tr.Info().Settings
		if got, want := s[recipe.SettingTF32], strconv.FormatBool(c.tf32); got != want || tf32Enabled() != c.tf32 {
			t.Errorf("%s: Settings[tf32] %q, library %t; want %q", c.precision, got, tf32Enabled(), want)
		}
		if got, want := s[recipe.SettingCUDNNBenchmark], strconv.FormatBool(c.benchmark); got != want || cudnnAutotune() != c.benchmark {
			t.Errorf("%s: Settings[cudnn_benchmark] %q, library %t; want %q", c.precision, got, cudnnAutotune(), want)
		}
		if _, _, err := tr.TrainStep(context.Background(), synthBatch(0, 8, 3, 32, 1)); err != nil {
			t.Errorf("%s: %v", c.precision, err)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
