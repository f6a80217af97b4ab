package torchrun

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

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
// algorithms sum in other orders than the CPU kernels (and may use TF32 unless
// disabled), so the tolerance is looser than on the CPU: rtol 1e-3.
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
