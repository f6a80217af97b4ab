package torchrun

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// cudaDevice returns the first CUDA device or skips the test; "no CUDA GPU" is
// the only reason a torchrun test skips.
func cudaDevice(t *testing.T) string {
	t.Helper()
	devs, err := CUDADevices()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 {
		t.Skip("no CUDA GPU: " + CUDAUnavailable())
	}
	return devs[0]
}

// TestCUDAReference runs the PyTorch CPU fixture on the GPU. cuDNN's convolution
// algorithms sum in other orders than the CPU kernels (TF32 is off: the recipe
// is fp32), so the tolerance is looser than on the CPU: rtol 1e-3.
func TestCUDAReference(t *testing.T) {
	dev := cudaDevice(t)
	f := loadFixture(t)
	init, err := reftest.Weights(refSpec)
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []string{recipe.SGD, recipe.Adam} {
		cfg := refConfig(opt)
		cfg.Device = dev
		tr := mustNew(t, cfg, init)
		if got := tr.Info().Device; got != dev {
			t.Errorf("Device: got %s, want %s", got, dev)
		}
		in := reftest.Input(4, 32)
		logits, err := tr.Logits(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if err := closeTo(logits, f.get(t, "logits").Data, 1e-3, 1e-5); err != nil {
			t.Errorf("%s logits: %v", opt, err)
		}
		loss, _, err := tr.TrainStep(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		run := "sgd1"
		if opt == recipe.Adam {
			run = "adam1"
		}
		if w := float64(f.get(t, run+"/loss").Data[0]); math.Abs(loss-w) > 1e-3*math.Abs(w) {
			t.Errorf("%s loss: got %.8g, want %.8g", opt, loss, w)
		}
		if err := tr.Sync(); err != nil {
			t.Fatal(err)
		}
		ws, err := tr.Weights()
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			if strings.HasPrefix(w.Name, "classifier.") {
				if err := closeTo(w.Data, f.get(t, run+"/"+w.Name).Data, 1e-3, 1e-5); err != nil {
					t.Errorf("%s %s: %v", opt, w.Name, err)
				}
			}
		}
		if got := tr.PeakGPUBytes(); got <= 0 {
			t.Errorf("PeakGPUBytes: got %d, want > 0 on %s", got, dev)
		}
	}
}

// TestCUDAFeatures: features mode keeps the base bit-identical on the GPU.
func TestCUDAFeatures(t *testing.T) {
	dev := cudaDevice(t)
	cfg := tinyConfig()
	cfg.Device = dev
	cfg.Mode = model.ModeFeatures
	tr := mustNew(t, cfg, nil)
	before, _ := tr.Weights()
	trainRun(t, tr, 0, 3)
	after, _ := tr.Weights()
	for i, w := range after {
		if !strings.HasPrefix(w.Name, "classifier.") && !equalData(w.Data, before[i].Data) {
			t.Errorf("%s changed in features mode", w.Name)
		}
	}
}

// TestCUDAOutOfMemory asks for far more memory than any GPU has and expects
// ErrOutOfMemory with the batch-size hint, and a Trainer that still works.
func TestCUDAOutOfMemory(t *testing.T) {
	dev := cudaDevice(t)
	cfg := recipe.Default()
	cfg.Device = dev
	cfg.Hidden = 16
	tr := mustNew(t, cfg, nil)
	// A 224-px VGG16 training step keeps about 100 MB of activations per image:
	// 2048 images need ~200 GB, more than any single GPU holds (an H200 has 141 GB).
	b := synthBatch(0, 1, 3, 224, 1)
	big := *b
	big.N = 2048
	big.X = make([]float32, big.N*224*224*3)
	big.Labels = make([]int32, big.N)
	_, _, err := tr.TrainStep(context.Background(), &big)
	if !errors.Is(err, ErrOutOfMemory) || !strings.Contains(err.Error(), "lower the batch size") {
		t.Fatalf("got %v, want ErrOutOfMemory with a batch-size hint", err)
	}
	if _, _, err := tr.TrainStep(context.Background(), b); err != nil {
		t.Errorf("step after the out-of-memory error: %v", err)
	}
}

func TestCUDABadIndex(t *testing.T) {
	cudaDevice(t)
	all, _ := CUDADevices()
	cfg := tinyConfig()
	cfg.Device = "cuda:" + itoa(len(all))
	if _, err := New(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "CUDA device(s) present") {
		t.Errorf("device %s with %d GPUs: got %v, want an error counting the devices", cfg.Device, len(all), err)
	}
}

// TestCUDAHeads runs the head fixture's vgg11 cases on the GPU (rtol 1e-3, as
// TestCUDAReference), and checks that the Go-drawn dropout masks give the GPU the
// CPU's training losses (same masks; different masks would move the loss by far
// more than 1e-3, see TestDropoutMasks) and that FreezeLoadedHead holds there too.
func TestCUDAHeads(t *testing.T) {
	dev := cudaDevice(t)
	ts, _, err := weights.ReadSafetensors(filepath.FromSlash(headFixturePath))
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{model.HeadTorchvision, model.HeadKeras} {
		prefix := h + "/vgg11/"
		cfg := refConfig(recipe.SGD)
		cfg.Model, cfg.Head, cfg.Hidden, cfg.Device = "vgg11", h, 16, dev
		init := reftest.WeightsForNet(mustNet(t, cfg))
		tr := mustNew(t, cfg, init)
		in := reftest.Input(4, 32)
		logits, err := tr.Logits(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if err := closeTo(logits, weights.Lookup(ts, prefix+"logits").Data, 1e-3, 1e-5); err != nil {
			t.Errorf("%s logits: %v", h, err)
		}
		loss, _, err := tr.TrainStep(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if w := float64(weights.Lookup(ts, prefix+"sgd1/loss").Data[0]); math.Abs(loss-w) > 1e-3*math.Abs(w) {
			t.Errorf("%s loss: got %.8g, want %.8g (PyTorch)", h, loss, w)
		}

		var losses [2][]float64
		for i, d := range []string{"cpu", dev} {
			c := headConfig(h)
			c.Dropout, c.Device = 0.5, d
			c.Mode, c.FreezeLoadedHead = model.ModeFeatures, true
			tr := mustNew(t, c, initial(t, c, init))
			before, _ := tr.Weights()
			losses[i] = trainRun(t, tr, 0, 3)
			after, _ := tr.Weights()
			for k, w := range after {
				want := (h == model.HeadKeras && strings.HasPrefix(w.Name, "classifier.")) || strings.HasPrefix(w.Name, "classifier.6.")
				if changed := !equalData(w.Data, before[k].Data); changed != want {
					t.Errorf("%s on %s: %s: got changed=%t, want %t", h, d, w.Name, changed, want)
				}
			}
		}
		for s := range losses[0] {
			if g, c := losses[1][s], losses[0][s]; math.Abs(g-c) > 1e-3*math.Abs(c) {
				t.Errorf("%s dropout step %d: got loss %.8g on %s, want %.8g (CPU, same masks)", h, s+1, g, dev, c)
			}
		}
	}
}

// TestCUDAModels runs the per-model fixture on the GPU (rtol 1e-3, as
// TestCUDAReference): eval logits, the train-mode loss of one SGD step and the output
// layer after it; and a 3-step run with dropout 0.5 (mobilenet_v2's classifier.0)
// whose losses equal the CPU's within 1e-3 (same Go-drawn masks).
func TestCUDAModels(t *testing.T) {
	dev := cudaDevice(t)
	ts, _, err := weights.ReadSafetensors(filepath.FromSlash(modelsFixturePath))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"resnet18", "resnet50", "mobilenet_v2"} {
		cfg := refConfig(recipe.SGD)
		cfg.Model, cfg.Device = name, dev
		net := mustNet(t, cfg)
		tr := mustNew(t, cfg, reftest.WeightsForNet(net))
		in := reftest.Input(4, 32)
		logits, err := tr.Logits(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if err := closeTo(logits, weights.Lookup(ts, name+"/logits").Data, 1e-3, 1e-5); err != nil {
			t.Errorf("%s logits: %v", name, err)
		}
		loss, _, err := tr.TrainStep(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if w := float64(weights.Lookup(ts, name+"/sgd1/loss").Data[0]); math.Abs(loss-w) > 1e-3*math.Abs(w) {
			t.Errorf("%s loss: got %.8g, want %.8g (PyTorch)", name, loss, w)
		}
		ws, err := tr.Weights()
		if err != nil {
			t.Fatal(err)
		}
		out := net.Layers[net.Output()].Name
		for _, leaf := range []string{".weight", ".bias"} {
			if err := closeTo(weights.Lookup(ws, out+leaf).Data, weights.Lookup(ts, name+"/sgd1/"+out+leaf).Data, 1e-3, 1e-5); err != nil {
				t.Errorf("%s %s%s: %v", name, out, leaf, err)
			}
		}
		tr.Close()

		var losses [2][]float64
		for i, d := range []string{"cpu", dev} {
			c := tinyConfig()
			c.Model, c.Dropout, c.Device = name, 0.5, d
			tr := mustNew(t, c, nil)
			losses[i] = trainRun(t, tr, 0, 3)
			tr.Close()
		}
		for s := range losses[0] {
			if g, c := losses[1][s], losses[0][s]; math.Abs(g-c) > 1e-3*math.Abs(c) {
				t.Errorf("%s step %d: got loss %.8g on %s, want %.8g (CPU)", name, s+1, g, dev, c)
			}
		}
	}
}

// TestCUDASettings: the process-wide switches that New sets, read back from
// libtorch on the GPU: fp32 turns TF32 off for cuBLAS and cuDNN (libtorch's
// default leaves cuDNN's on), tf32 turns both on, cudnn_benchmark sets the
// autotuner. TF32 also shows in the numbers: it keeps 10 significant bits (unit
// roundoff 2^-11 ≈ 4.9e-4), so tf32's logits differ from fp32's by more than
// 1e-5 relative and, as bf16's (TestBF16NearFP32) with 8× the unit roundoff, by
// at most 8·2^-11 ≈ 3.9e-3.
func TestCUDASettings(t *testing.T) {
	dev := cudaDevice(t)
	tests := []struct {
		name      string
		precision string
		benchmark bool
		want      map[string]string
	}{
		{"fp32", recipe.FP32, false, map[string]string{"precision": "fp32", "tf32": "false", "cudnn_allow_tf32": "false",
			"cublas_allow_tf32": "false", "cudnn_benchmark": "false", "memory_format": "contiguous", "xla": "n/a", "deterministic": "false"}},
		{"tf32 benchmark", recipe.TF32, true, map[string]string{"precision": "tf32", "tf32": "true", "cudnn_allow_tf32": "true",
			"cublas_allow_tf32": "true", "cudnn_benchmark": "true", "memory_format": "contiguous", "xla": "n/a", "deterministic": "false"}},
		{"bf16", recipe.BF16, false, map[string]string{"precision": "bf16", "tf32": "false", "cudnn_allow_tf32": "false",
			"cublas_allow_tf32": "false", "cudnn_benchmark": "false", "memory_format": "contiguous", "xla": "n/a", "deterministic": "false"}},
	}
	b := synthBatch(0, 4, 3, 32, 5)
	logits := map[string][]float32{}
	for _, tt := range tests {
		cfg := precConfig("vgg11_bn", tt.precision)
		cfg.Device, cfg.CUDNNBenchmark = dev, tt.benchmark
		tr := mustNew(t, cfg, nil)
		s := tr.Info().Settings
		for k, want := range tt.want {
			if s[k] != want {
				t.Errorf("%s: %s: got %q, want %q", tt.name, k, s[k], want)
			}
		}
		var err error
		if logits[tt.precision], err = tr.Logits(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		tr.Close()
	}
	d := maxRelDiff(logits[recipe.TF32], logits[recipe.FP32])
	t.Logf("tf32 vs fp32 logits: max|diff|/max|fp32| %.3g", d)
	if !(d > 1e-5 && d <= 8.0/2048) {
		t.Errorf("tf32 vs fp32 logits: relative difference got %.3g, want in (1e-5, %.3g]", d, 8.0/2048)
	}
}

// TestCUDAMixedPrecision: a bf16 and an fp16 training step on the GPU: finite
// losses, BFloat16 (Half) conv outputs, Float parameters after the step, and
// fp16's loss scale still at recipe.LossScaleInit after a normal step of vgg11
// (as on the CPU, TestFP16LossScale); bf16's logits within TestBF16NearFP32's
// bound (8·2^-8) of fp32's on the same device.
func TestCUDAMixedPrecision(t *testing.T) {
	dev := cudaDevice(t)
	low := map[string]string{recipe.BF16: "BFloat16", recipe.FP16: "Half"}
	b := synthBatch(0, 4, 3, 32, 5)
	logits := map[string][]float32{}
	for _, prec := range []string{recipe.FP32, recipe.BF16, recipe.FP16} {
		cfg := precConfig("vgg11", prec)
		cfg.Device = dev
		tr := mustNew(t, cfg, nil)
		var err error
		if logits[prec], err = tr.Logits(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if prec == recipe.FP32 {
			continue
		}
		ls, ts := recordStep(t, tr, true)
		for _, r := range ls {
			if l := tr.net.Layers[r.layer]; l.Op == model.Conv && r.dtype != low[prec] {
				t.Errorf("%s: %s output: got %s, want %s", prec, l.Name, r.dtype, low[prec])
			}
		}
		for _, r := range ts {
			if r.dtype != "Float" {
				t.Errorf("%s: %s after the step: got %s, want Float", prec, r.name, r.dtype)
			}
		}
		loss := trainRun(t, tr, 1, 1)[0]
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			t.Errorf("%s step on %s: loss got %v, want a finite number", prec, dev, loss)
		}
		if prec == recipe.FP16 {
			if got := tr.LossScale(); got != recipe.LossScaleInit {
				t.Errorf("fp16 LossScale after two normal steps on %s: got %v, want %v", dev, got, recipe.LossScaleInit)
			}
		}
	}
	if d := maxRelDiff(logits[recipe.BF16], logits[recipe.FP32]); !(d > 1e-5 && d <= 8.0/256) {
		t.Errorf("bf16 vs fp32 logits on %s: relative difference got %.3g, want in (1e-5, %.3g]", dev, d, 8.0/256)
	}
}

// TestCUDADeterministic: deterministic algorithms on the GPU. New sets cuBLAS's
// workspace (CUBLAS_WORKSPACE_CONFIG=:4096:8) unless the environment has one;
// two resnet18 Trainers from the same weights are bit-identical after three
// steps. VGG cannot train so: its adaptive average pool to 7×7 has no
// deterministic CUDA backward in libtorch 2.11 (torch.use_deterministic_algorithms'
// list: AdaptiveAvgPool2d), and with warn_only off the step fails with
// libtorch's message instead of silently running a nondeterministic kernel
// (resnet18's pool to 1×1 is a mean, which is deterministic).
func TestCUDADeterministic(t *testing.T) {
	dev := cudaDevice(t)
	_, preset := os.LookupEnv(cublasWorkspaceEnv)
	cfg := precConfig("resnet18", recipe.FP32)
	cfg.Device, cfg.Deterministic = dev, true
	twoRunsAgree(t, cfg)
	if got := os.Getenv(cublasWorkspaceEnv); !preset && got != cublasWorkspace {
		t.Errorf("%s: got %q, want %q", cublasWorkspaceEnv, got, cublasWorkspace)
	}

	cfg.Model = "vgg11"
	tr := mustNew(t, cfg, nil)
	if _, _, err := tr.TrainStep(context.Background(), synthBatch(0, 4, 3, 32, 5)); err == nil || !strings.Contains(err.Error(), "deterministic") {
		t.Errorf("deterministic vgg11 step on %s: got %v, want libtorch's error naming the missing deterministic implementation", dev, err)
	}
}

// TestCUDAParallelNCCL is #16's NCCL check on one GPU: a world of 1 rank on
// c10d's ProcessGroupNCCL (the plugin, the store, the reducer's buckets on the
// GPU and NCCL's all-reduce) trains 3 SGD steps to the weights a single
// process trains to on the same GPU. With one rank the all-reduce is a copy
// and the gradients are multiplied by 1/1, so the two runs differ only where
// cuDNN's kernels are not deterministic: within 1e-4 of each tensor's largest
// magnitude (the bound for 2 ranks).
func TestCUDAParallelNCCL(t *testing.T) {
	dev := cudaDevice(t)
	if _, err := NCCL(); err != nil {
		t.Fatalf("a GPU is here but NCCL is not usable: %v", err)
	}
	const steps, batch = 3, 16
	cfg := tinyConfig()
	cfg.Device, cfg.Dropout, cfg.LR = dev, 0, 0.1
	init, err := weights.InitParams(mustNet(t, cfg).Params, cfg.Seed)
	if err != nil {
		t.Fatal(err)
	}
	single := mustNew(t, cfg, init)
	rank := startRanks(t, cfg, init, 1, time.Minute)[0]
	if got := rank.Info().Settings[recipe.SettingBackend]; got != recipe.BackendNCCL {
		t.Errorf("Settings[%q] got %q, want %q", recipe.SettingBackend, got, recipe.BackendNCCL)
	}
	for s := range steps {
		b := synthBatch(s*batch, batch, cfg.Classes, cfg.ImageSize, 7)
		b.GlobalN = batch
		if _, _, err := single.TrainStep(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		if _, _, err := rank.TrainStep(context.Background(), b); err != nil {
			t.Fatalf("step %d on NCCL: %v", s, err)
		}
	}
	want, err := single.Weights()
	if err != nil {
		t.Fatal(err)
	}
	got, err := rank.Weights()
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if d := reftest.RelErr(got[i].Data, w.Data); d > 1e-4 {
			t.Errorf("%s: NCCL world size 1 got max|Δ| %.3g of max|w|, want ≤ 1e-4 (single process)", w.Name, d)
		}
	}
	if c := rank.CommSeconds(); !(c > 0) {
		t.Errorf("CommSeconds after %d steps on NCCL got %v, want > 0", steps, c)
	}
}
