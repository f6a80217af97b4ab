package torchrun

import (
	"archive/zip"
	"context"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr string // "" means valid
	}{
		{"default", func(*Config) {}, ""},
		{"vgg19_bn cuda:1", func(c *Config) { c.Model = vgg.Config{Name: "vgg19", BatchNorm: true}; c.Device = "cuda:1" }, ""},
		{"unknown model", func(c *Config) { c.Model.Name = "resnet50" }, "resnet50"},
		{"size not multiple of 32", func(c *Config) { c.ImageSize = 100 }, "image size 100"},
		{"size too small", func(c *Config) { c.ImageSize = 0 }, "image size 0"},
		{"no classes", func(c *Config) { c.NumClasses = 0 }, "number of classes"},
		{"dropout 1", func(c *Config) { c.Dropout = 1 }, "dropout 1"},
		{"dropout NaN", func(c *Config) { c.Dropout = math.NaN() }, "dropout NaN"},
		{"bad mode", func(c *Config) { c.Mode = "transfer" }, `mode "transfer"`},
		{"bad optimizer", func(c *Config) { c.Optimizer = "rmsprop" }, `optimizer "rmsprop"`},
		{"zero lr", func(c *Config) { c.LR = 0 }, "learning rate 0"},
		{"nesterov without momentum", func(c *Config) { c.Nesterov = true; c.Momentum = 0 }, "nesterov"},
		{"adam beta 1", func(c *Config) { c.Optimizer = OptimizerAdam; c.Beta2 = 1 }, "betas"},
		{"adam eps 0", func(c *Config) { c.Optimizer = OptimizerAdam; c.Eps = 0 }, "eps 0"},
		{"tpu", func(c *Config) { c.Device = "tpu" }, `device "tpu"`},
		{"cuda:x", func(c *Config) { c.Device = "cuda:x" }, `device "cuda:x"`},
		{"negative threads", func(c *Config) { c.Threads = -1 }, "threads -1"},
		{"torchvision head", func(c *Config) { c.Head = vgg.HeadTorchvision; c.FreezeLoadedHead = true }, ""},
		{"unknown head", func(c *Config) { c.Head = "resnet" }, `unknown head "resnet"`},
	}
	for _, tt := range tests {
		cfg := DefaultConfig()
		tt.edit(&cfg)
		err := cfg.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: got error %v, want none", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: got error %v, want one mentioning %q", tt.name, err, tt.wantErr)
		case err != nil && !strings.HasPrefix(err.Error(), "torchrun: config: "):
			t.Errorf("%s: got error %q, want prefix %q", tt.name, err, "torchrun: config: ")
		}
	}
}

// TestArchitecture checks every model of vgg's table against vgg.ParamsHidden
// (names and shapes, read back from libtorch) at two image sizes, and that the
// 224-px VGG16 has torchvision's 138,357,544 parameters (torchvision's
// documentation of VGG16_Weights.IMAGENET1K_V1 lists num_params 138357544).
func TestArchitecture(t *testing.T) {
	for _, name := range []string{"vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg16_bn"} {
		model, err := vgg.Parse(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, S := range []int{32, 64} {
			cfg := tinyConfig()
			cfg.Model, cfg.ImageSize = model, S
			tr := mustNew(t, cfg)
			ws, err := tr.Weights()
			if err != nil {
				t.Fatal(err)
			}
			ps, _ := vgg.ParamsHidden(model, S, 3, 16)
			if err := weights.CheckShapes(ws, ps, false); err != nil {
				t.Errorf("%s at %d px: %v", name, S, err)
			}
			logits, err := tr.Logits(context.Background(), synthBatch(0, 2, 3, S, 1))
			if err != nil {
				t.Fatalf("%s at %d px: %v", name, S, err)
			}
			if got, want := len(logits), 2*3; got != want {
				t.Errorf("%s at %d px: got %d logits, want %d", name, S, got, want)
			}
			tr.Close()
		}
	}
	cfg := DefaultConfig()
	cfg.NumClasses = 1000
	tr := mustNew(t, cfg)
	ws, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, w := range ws {
		n += len(w.Data)
	}
	if n != 138357544 {
		t.Errorf("vgg16 at 224 px, 1000 classes: got %d parameters, want 138357544 (torchvision)", n)
	}
}

func TestInitialWeights(t *testing.T) {
	cfg := tinyConfig()
	cfg.Seed = 42
	tr := mustNew(t, cfg)
	got, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	want, err := weights.InitVGG(cfg.Model, 32, 3, 16, 42)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !equalData(got[i].Data, want[i].Data) {
			t.Errorf("%s: got other values than weights.InitVGG(seed 42)", want[i].Name)
		}
	}
}

func equalData(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func sameWeights(t *testing.T, got, want []*weights.Tensor) {
	t.Helper()
	for i := range want {
		if got[i].Name != want[i].Name || !equalData(got[i].Data, want[i].Data) {
			t.Errorf("%s: not bit-identical", want[i].Name)
		}
	}
}

// TestFeaturesMode: the base must come out bit-identical (including BatchNorm's
// running statistics), the head must change; classifier.0 and .3 start from the
// file, classifier.6 (another class count there) from weights.InitHead(Seed).
func TestFeaturesMode(t *testing.T) {
	cfg := tinyConfig()
	cfg.Model = vgg.Config{Name: "vgg11", BatchNorm: true}
	cfg.Mode = ModeFeatures
	cfg.Seed = 3
	base, err := reftest.Weights(cfg.Model, 32, 3, 16)
	if err != nil {
		t.Fatal(err)
	}
	// A loaded file with another head (10 classes) supplies the base only.
	other, _ := reftest.Weights(cfg.Model, 32, 10, 16)
	cfg.Weights = other
	tr := mustNew(t, cfg)
	before, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	head, _ := weights.InitHead(cfg.Model, 32, 3, 16, 3)
	for _, w := range before {
		want := weights.Lookup(base, w.Name)
		if strings.HasPrefix(w.Name, "classifier.6.") {
			want = weights.Lookup(head, w.Name)
		}
		if !equalData(w.Data, want.Data) {
			t.Errorf("%s: initial value is not the expected one", w.Name)
		}
	}
	for i := range 3 {
		if _, err := tr.TrainStep(context.Background(), synthBatch(4*i, 4, 3, 32, 1)); err != nil {
			t.Fatal(err)
		}
	}
	after, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	for i, w := range after {
		changed := !equalData(w.Data, before[i].Data)
		if strings.HasPrefix(w.Name, "classifier.") != changed {
			t.Errorf("%s: got changed=%t, want %t (only the head trains)", w.Name, changed, !changed)
		}
	}
}

// TestFinetuneNewLastLayer: finetune keeps everything from the file but
// classifier.6, which always starts from weights.InitHead's seeded layer (whether
// the file's has 1000 classes or already 3: vgg.Reinitialised).
func TestFinetuneNewLastLayer(t *testing.T) {
	for _, classes := range []int{1000, 3} {
		cfg := tinyConfig()
		cfg.Mode = ModeFinetune
		loaded, _ := reftest.Weights(cfg.Model, 32, classes, 16)
		cfg.Weights = loaded
		tr := mustNew(t, cfg)
		got, err := tr.Weights()
		if err != nil {
			t.Fatal(err)
		}
		head, _ := weights.InitHead(cfg.Model, 32, 3, 16, cfg.Seed)
		for _, w := range got {
			want := weights.Lookup(loaded, w.Name)
			if strings.HasPrefix(w.Name, "classifier.6.") {
				want = weights.Lookup(head, w.Name)
			}
			if !equalData(w.Data, want.Data) {
				t.Errorf("%d-class file: %s: got other values than expected", classes, w.Name)
			}
		}
	}
	// Any other mismatch is an error naming the tensor, in every mode.
	for _, mode := range []string{ModeScratch, ModeFinetune, ModeFeatures} {
		cfg := tinyConfig()
		cfg.Mode = mode
		cfg.Weights, _ = reftest.Weights(cfg.Model, 32, 3, 32)
		_, err := New(context.Background(), cfg)
		if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), "classifier.0.weight") {
			t.Errorf("%s: hidden 32 weights for a hidden 16 model: got %v, want ErrWeights naming classifier.0.weight", mode, err)
		}
	}
	// Scratch takes every tensor from the file: a 1000-class file does not fit.
	cfg := tinyConfig()
	cfg.Weights, _ = reftest.Weights(cfg.Model, 32, 1000, 16)
	if _, err := New(context.Background(), cfg); !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), "classifier.6.weight") {
		t.Errorf("scratch from a 1000-class file: got %v, want ErrWeights naming classifier.6.weight", err)
	}
}

// storedCopy rewrites the zip archive src into a temporary file with every entry
// stored (uncompressed), contents unchanged.
func storedCopy(t *testing.T, src string) string {
	t.Helper()
	r, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	f, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	w := zip.NewWriter(f)
	for _, e := range r.File {
		rc, err := e.Open()
		if err != nil {
			t.Fatal(err)
		}
		out, err := w.CreateHeader(&zip.FileHeader{Name: e.Name, Method: zip.Store})
		if err == nil {
			_, err = io.Copy(out, rc)
		}
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestLoadPth loads a real torch.save'd vgg11 state dict (torchrun/testdata, made by
// scripts/reference/make_fixture.py: the internal/reftest formula with the flat index
// taken mod 1009) and compares the tensors and PyTorch's logits.
//
// The committed file is DEFLATE-compressed (268 KB instead of 37 MB); weights.Load
// refuses archives that inflate to more than 4 times their size (a zip-bomb guard), so
// the test first stores the same entries uncompressed, as torch.save itself writes them.
func TestLoadPth(t *testing.T) {
	cfg := tinyConfig()
	tr := mustNew(t, cfg)
	if err := tr.LoadWeights(storedCopy(t, filepath.Join("testdata", "vgg11_s32.pth"))); err != nil {
		t.Fatal(err)
	}
	got, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := reftest.Weights(cfg.Model, 32, 3, 16) // for names, shapes and kinds
	ps, _ := vgg.ParamsHidden(cfg.Model, 32, 3, 16)
	for k, p := range ps {
		w := want[k]
		for j := range w.Data { // recompute with j mod 1009
			u := reftest.U(k, j%1009)
			switch p.Kind {
			case vgg.ConvWeight, vgg.LinearWeight:
				fanIn := 1
				for _, d := range p.Shape[1:] {
					fanIn *= d
				}
				w.Data[j] = float32(u * math.Sqrt(12) * math.Sqrt(2/float64(fanIn)))
			default:
				w.Data[j] = float32(0.01 * u)
			}
		}
	}
	sameWeights(t, got, want)
	ref, _, err := weights.ReadSafetensors(filepath.Join("testdata", "vgg11_s32_logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	logits, err := tr.Logits(context.Background(), reftest.Input(4, 32))
	if err != nil {
		t.Fatal(err)
	}
	if err := closeTo(logits, weights.Lookup(ref, "logits").Data, refRtol, refAtol); err != nil {
		t.Errorf("logits after loading the .pth: %v", err)
	}
}

func TestSaveLoadWeights(t *testing.T) {
	cfg := tinyConfig()
	a := mustNew(t, cfg)
	if _, err := a.TrainStep(context.Background(), synthBatch(0, 4, 3, 32, 1)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := a.SaveWeights(path); err != nil {
		t.Fatal(err)
	}
	cfg.Seed = 99 // other initial weights
	b := mustNew(t, cfg)
	if err := b.LoadWeights(path); err != nil {
		t.Fatal(err)
	}
	wa, _ := a.Weights()
	wb, _ := b.Weights()
	sameWeights(t, wb, wa)
	if err := b.LoadWeights(filepath.Join("..", "weights", "testdata", "tiny_vgg.pth")); err == nil {
		t.Error("loading a file for another model: got nil error, want a shape error")
	}
}

// rss returns the resident set size from /proc/self/statm.
func rss(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatalf("reading /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return pages * int64(os.Getpagesize())
}

// TestMemoryStable: every tensor a step makes is freed by C++ before it returns,
// and every native call runs on the Trainer's one OS thread (see worker), so
// resident memory must not grow with the number of steps.
func TestMemoryStable(t *testing.T) {
	cfg := tinyConfig()
	cfg.Hidden = 8
	tr := mustNew(t, cfg)
	ctx := context.Background()
	b := synthBatch(0, 1, 3, 32, 1)
	step := func(n int) {
		for range n {
			if _, err := tr.TrainStep(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := tr.Evaluate(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	step(20)
	debug.FreeOSMemory() // collect and return Go's free pages, so RSS shows native memory
	at20 := rss(t)
	step(180)
	debug.FreeOSMemory()
	at200 := rss(t)
	t.Logf("RSS after 20 steps %.1f MiB, after 200 steps %.1f MiB", float64(at20)/(1<<20), float64(at200)/(1<<20))
	if float64(at200) > 1.05*float64(at20) {
		t.Errorf("RSS after 200 steps: got %d bytes, want at most 5%% above the %d after 20", at200, at20)
	}
}

// TestNativeErrors provokes libtorch failures and checks they come back as errors
// that leave the Trainer usable.
func TestNativeErrors(t *testing.T) {
	cfg := tinyConfig()
	tr := mustNew(t, cfg)
	ctx := context.Background()
	good := synthBatch(0, 2, 3, 32, 1)
	bad64 := synthBatch(0, 2, 3, 64, 1)
	badLabel := synthBatch(0, 2, 3, 32, 1)
	badLabel.Labels[1] = 7
	short := synthBatch(0, 2, 3, 32, 1)
	short.X = short.X[:10]

	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"64 px batch, Go check", func() error { _, err := tr.TrainStep(ctx, bad64); return err }, "the model wants 32×32×3"},
		{"64 px batch, libtorch", func() error { _, err := tr.trainStep(ctx, bad64, false); return err }, "torchrun: step: mat1 and mat2 shapes cannot be multiplied"},
		{"label out of range, train", func() error { _, err := tr.TrainStep(ctx, badLabel); return err }, "torchrun: step: Target 7 is out of bounds"},
		{"label out of range, evaluate", func() error { _, _, err := tr.Evaluate(ctx, badLabel); return err }, "torchrun: evaluate: Target 7 is out of bounds"},
		{"short buffer", func() error { _, err := tr.TrainStep(ctx, short); return err }, "batch holds 10 values"},
		{"nil batch", func() error { _, err := tr.TrainStep(ctx, nil); return err }, "nil batch"},
	}
	for _, tt := range tests {
		err := tt.run()
		t.Logf("%s: %v", tt.name, err)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
		if _, err := tr.TrainStep(ctx, good); err != nil {
			t.Errorf("%s: the next step failed: %v", tt.name, err)
		}
	}
}

func TestBadDevice(t *testing.T) {
	tests := []struct {
		device string
		want   string
	}{
		{"tpu", `device "tpu": want cpu, cuda or cuda:N`},
		{"cuda:7", "device cuda:7"}, // libtorch: no libtorch_cuda.so, or fewer than 8 GPUs
		{"cuda:-1", `device "cuda:-1"`},
	}
	for _, tt := range tests {
		cfg := tinyConfig()
		cfg.Device = tt.device
		tr, err := New(context.Background(), cfg)
		if err == nil {
			tr.Close()
		}
		t.Logf("%s: %v", tt.device, err)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("device %q: got error %v, want one containing %q", tt.device, err, tt.want)
		}
	}
}

// trainRun trains tr on steps batches starting at step first and returns the losses.
func trainRun(t *testing.T, tr *Trainer, first, steps int) []float64 {
	t.Helper()
	var losses []float64
	for i := first; i < first+steps; i++ {
		loss, err := tr.TrainStep(context.Background(), synthBatch(4*i, 4, 3, 32, 5))
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, loss)
	}
	return losses
}

// TestResume: K steps in one go equal k steps, a checkpoint, a new Trainer and
// K-k more steps, bit for bit (CPU, same seed, dropout on so masks matter).
func TestResume(t *testing.T) {
	const K, k = 4, 2
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"sgd nesterov bn", func(c *Config) {
			c.Model.BatchNorm = true
			c.Nesterov, c.WeightDecay = true, 5e-4
		}},
		{"adam", func(c *Config) { c.Optimizer, c.LR = OptimizerAdam, 1e-3 }},
		{"features sgd", func(c *Config) { c.Mode = ModeFeatures }},
		{"features torchvision frozen fc6/fc7 adam", func(c *Config) {
			c.Mode, c.Head, c.FreezeLoadedHead = ModeFeatures, vgg.HeadTorchvision, true
			c.Optimizer, c.LR = OptimizerAdam, 1e-3
		}},
		{"keras head", func(c *Config) { c.Head = vgg.HeadKeras }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Dropout = 0.5
			tt.edit(&cfg)
			whole := mustNew(t, cfg)
			wantLoss := trainRun(t, whole, 0, K)
			want, _ := whole.Weights()

			first := mustNew(t, cfg)
			gotLoss := trainRun(t, first, 0, k)
			dir := filepath.Join(t.TempDir(), "ckpt")
			if err := first.SaveCheckpoint(dir, 1, k); err != nil {
				t.Fatal(err)
			}
			first.Close()

			second := mustNew(t, cfg)
			epoch, step, err := second.LoadCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			if epoch != 1 || step != k {
				t.Errorf("LoadCheckpoint: got epoch %d step %d, want 1 %d", epoch, step, k)
			}
			gotLoss = append(gotLoss, trainRun(t, second, k, K-k)...)
			got, _ := second.Weights()
			for i := range wantLoss {
				if gotLoss[i] != wantLoss[i] {
					t.Errorf("step %d loss: got %v, want %v", i+1, gotLoss[i], wantLoss[i])
				}
			}
			sameWeights(t, got, want)
		})
	}
}

func TestCheckpointOptimizerMismatch(t *testing.T) {
	cfg := tinyConfig()
	a := mustNew(t, cfg)
	trainRun(t, a, 0, 1)
	dir := t.TempDir()
	if err := a.SaveCheckpoint(dir, 0, 1); err != nil {
		t.Fatal(err)
	}
	cfg.Optimizer = OptimizerAdam
	b := mustNew(t, cfg)
	if _, _, err := b.LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "optimizer sgd(") {
		t.Errorf("loading an SGD checkpoint into Adam: got %v, want an optimizer error", err)
	}
}

// TestTwoTrainers trains two Trainers at once from two goroutines; each must match
// a Trainer trained alone.
func TestTwoTrainers(t *testing.T) {
	cfg := tinyConfig()
	cfg.Dropout = 0.5
	solo := mustNew(t, cfg)
	wantLoss := trainRun(t, solo, 0, 3)
	want, _ := solo.Weights()

	trs := []*Trainer{mustNew(t, cfg), mustNew(t, cfg)}
	losses := make([][]float64, 2)
	var wg sync.WaitGroup
	for i, tr := range trs {
		wg.Go(func() {
			for s := range 3 {
				l, err := tr.TrainStep(context.Background(), synthBatch(4*s, 4, 3, 32, 5))
				if err != nil {
					t.Error(err)
					return
				}
				losses[i] = append(losses[i], l)
			}
		})
	}
	wg.Wait()
	for i, tr := range trs {
		got, _ := tr.Weights()
		sameWeights(t, got, want)
		for s := range wantLoss {
			if s < len(losses[i]) && losses[i][s] != wantLoss[s] {
				t.Errorf("trainer %d step %d: got loss %v, want %v", i, s+1, losses[i][s], wantLoss[s])
			}
		}
	}
}

func TestBusyAndClosed(t *testing.T) {
	tr := mustNew(t, tinyConfig())
	ctx := context.Background()
	b := synthBatch(0, 2, 3, 32, 1)
	dir := t.TempDir()
	calls := []struct {
		name string
		run  func() error
	}{
		{"TrainStep", func() error { _, err := tr.TrainStep(ctx, b); return err }},
		{"Evaluate", func() error { _, _, err := tr.Evaluate(ctx, b); return err }},
		{"Logits", func() error { _, err := tr.Logits(ctx, b); return err }},
		{"Weights", func() error { _, err := tr.Weights(); return err }},
		{"SaveWeights", func() error { return tr.SaveWeights(filepath.Join(dir, "w.safetensors")) }},
		{"LoadWeights", func() error { return tr.LoadWeights(filepath.Join(dir, "w.safetensors")) }},
		{"SaveCheckpoint", func() error { return tr.SaveCheckpoint(dir, 0, 0) }},
		{"LoadCheckpoint", func() error { _, _, err := tr.LoadCheckpoint(dir); return err }},
		{"Sync", tr.Sync},
	}
	for _, c := range calls {
		if err := c.run(); err != nil {
			t.Fatalf("%s on an open trainer: %v", c.name, err)
		}
	}
	tr.mu.Lock() // as if another call were in flight
	for _, c := range calls {
		if err := c.run(); !errors.Is(err, ErrBusy) {
			t.Errorf("%s during another call: got %v, want ErrBusy", c.name, err)
		}
	}
	tr.mu.Unlock()
	for range 2 {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: got %v, want nil (idempotent)", err)
		}
	}
	for _, c := range calls {
		if err := c.run(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", c.name, err)
		}
	}
	if got := tr.PeakGPUBytes(); got != 0 {
		t.Errorf("PeakGPUBytes after Close: got %d, want 0", got)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := New(cctx, tinyConfig()); !errors.Is(err, context.Canceled) {
		t.Errorf("New with a cancelled context: got %v, want context.Canceled", err)
	}
}

func TestInfo(t *testing.T) {
	cfg := tinyConfig()
	cfg.Threads = 1
	tr := mustNew(t, cfg)
	var intra int
	var err error
	tr.w.do(func() { intra, _, err = nativeThreads() })
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		what      string
		got, want any
	}{
		{"Framework", tr.Framework(), "torch"},
		{"Device", tr.Device(), "cpu"},
		{"Threads", tr.Threads(), 1},
		// gotorch's init (linked into this test binary) set NumCPU/2; New overrides it.
		{"libtorch intra-op threads", intra, 1},
		{"Version", tr.Version(), "2.11.0"}, // scripts/versions.sh TORCH_VERSION
		{"PeakGPUBytes", tr.PeakGPUBytes(), int64(0)},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.what, tt.got, tt.want)
		}
	}
	// Logits and Evaluate agree.
	b := synthBatch(0, 6, 3, 32, 2)
	logits, err := tr.Logits(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	_, correct, err := tr.Evaluate(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range 6 {
		row := logits[3*i : 3*i+3]
		best := 0
		for c := range row {
			if row[c] > row[best] {
				best = c
			}
		}
		if int32(best) == b.Labels[i] {
			want++
		}
	}
	if correct != want {
		t.Errorf("Evaluate correct: got %d, want %d (argmax of Logits)", correct, want)
	}
}
