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
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// TestBadRecipes: New refuses every recipe.BadRecipes entry with Validate's own
// error, unchanged, before any native call.
func TestBadRecipes(t *testing.T) {
	for _, c := range recipe.BadRecipes() {
		t.Run(c.Name, func(t *testing.T) {
			tr, err := New(context.Background(), c.Config, nil)
			if err == nil {
				tr.Close()
				t.Fatal("got nil error, want recipe.ErrInvalid")
			}
			if !errors.Is(err, recipe.ErrInvalid) {
				t.Errorf("got %v, want an error wrapping recipe.ErrInvalid", err)
			}
			if got, want := err.Error(), c.Config.Validate().Error(); got != want {
				t.Errorf("got message %q, want Validate's %q", got, want)
			}
			if !strings.Contains(err.Error(), c.Want) {
				t.Errorf("got message %q, want it to hold %q", err, c.Want)
			}
		})
	}
}

// TestArchitecture builds every model of package model's table and checks the
// tensors read back from libtorch against the Net's Params (names, order, shapes),
// and the logits' shape, at 32 px (VGG also at 64 px, where its flatten head is 4
// times wider).
func TestArchitecture(t *testing.T) {
	for _, name := range model.Names() {
		sizes := []int{32}
		if name == "vgg11" || name == "vgg16_bn" {
			sizes = append(sizes, 64)
		}
		for _, S := range sizes {
			cfg := tinyConfig()
			cfg.Model, cfg.ImageSize = name, S
			net := mustNet(t, cfg)
			tr := mustNew(t, cfg, nil)
			ws, err := tr.Weights()
			if err != nil {
				t.Fatal(err)
			}
			if err := weights.CheckShapes(ws, net.Params, false); err != nil {
				t.Errorf("%s at %d px: %v", name, S, err)
			}
			for i, p := range net.Params {
				if i < len(ws) && ws[i].Name != p.Name {
					t.Errorf("%s at %d px: tensor %d: got %s, want %s (model.Net.Params)", name, S, i, ws[i].Name, p.Name)
					break
				}
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
}

// TestParameterCounts: the trainable elements libtorch holds, for 1000 classes, are
// torchvision's documented num_params (the model pages' weight tables: VGG16_Weights
// 138,357,544 (at 224 px, where the flatten head equals torchvision's),
// ResNet18_Weights 11,689,512, ResNet50_Weights 25,557,032, MobileNet_V2_Weights
// 3,504,872; ResNet and MobileNetV2 do not depend on the image size, so they are
// built at 32 px).
func TestParameterCounts(t *testing.T) {
	tests := []struct {
		name string
		S    int
		want int
	}{
		{"resnet18", 32, 11689512},
		{"resnet50", 32, 25557032},
		{"mobilenet_v2", 32, 3504872},
		{"vgg16", 224, 138357544},
	}
	for _, tt := range tests {
		cfg := recipe.Default()
		cfg.Model, cfg.ImageSize, cfg.Classes, cfg.Threads = tt.name, tt.S, 1000, 2
		net := mustNet(t, cfg)
		tr := mustNew(t, cfg, nil)
		ws, err := tr.Weights()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for i, w := range ws {
			if net.Params[i].Kind.Trainable() {
				n += len(w.Data)
			}
		}
		if n != tt.want {
			t.Errorf("%s, 1000 classes: got %d trainable elements, want %d (torchvision)", tt.name, n, tt.want)
		}
		tr.Close()
	}
}

// TestInitialWeights: without init, New starts from weights.InitParams(net.Params, Seed).
func TestInitialWeights(t *testing.T) {
	for _, name := range []string{"vgg11", "mobilenet_v2"} {
		cfg := tinyConfig()
		cfg.Model, cfg.Seed = name, 42
		tr := mustNew(t, cfg, nil)
		got, err := tr.Weights()
		if err != nil {
			t.Fatal(err)
		}
		want, err := weights.InitParams(mustNet(t, cfg).Params, 42)
		if err != nil {
			t.Fatal(err)
		}
		sameWeights(t, got, want)
		tr.Close()
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
	if len(got) != len(want) {
		t.Errorf("got %d tensors, want %d", len(got), len(want))
		return
	}
	for i := range want {
		if got[i].Name != want[i].Name || !equalData(got[i].Data, want[i].Data) {
			t.Errorf("%s: not bit-identical", want[i].Name)
		}
	}
}

// TestFeaturesMode: in features mode only head tensors change; the base comes out
// bit-identical, BatchNorm running statistics included (eval mode), for VGG's
// classifier head and ResNet's fc. The initial tensors are composed as a caller does
// (weights.Initial) from a file for another class count: its head layers are
// replaced by seeded ones.
func TestFeaturesMode(t *testing.T) {
	for _, name := range []string{"vgg11_bn", "resnet18"} {
		t.Run(name, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Model, cfg.Mode, cfg.Seed = name, model.ModeFeatures, 3
			file, err := reftest.Weights(model.Spec{Name: name, ImageSize: 32, Classes: 10, Hidden: 16})
			if err != nil {
				t.Fatal(err)
			}
			tr := mustNew(t, cfg, initial(t, cfg, file))
			before, err := tr.Weights()
			if err != nil {
				t.Fatal(err)
			}
			net := mustNet(t, cfg)
			for i, w := range before {
				if p := net.Params[i]; !p.Head && !equalData(w.Data, weights.Lookup(file, w.Name).Data) {
					t.Errorf("%s: initial value is not the file's", w.Name)
				}
			}
			for i := range 3 {
				if _, _, err := tr.TrainStep(context.Background(), synthBatch(4*i, 4, 3, 32, 1)); err != nil {
					t.Fatal(err)
				}
			}
			after, err := tr.Weights()
			if err != nil {
				t.Fatal(err)
			}
			for i, w := range after {
				changed := !equalData(w.Data, before[i].Data)
				if want := net.Params[i].Head; changed != want {
					t.Errorf("%s: got changed=%t, want %t (only the head trains)", w.Name, changed, want)
				}
			}
		})
	}
}

// TestInitMismatch: init must hold exactly the model's tensors; anything else is an
// error wrapping ErrWeights that names the tensor.
func TestInitMismatch(t *testing.T) {
	cfg := tinyConfig()
	good, err := reftest.Weights(model.Spec{Name: "vgg11", ImageSize: 32, Classes: 3, Hidden: 16})
	if err != nil {
		t.Fatal(err)
	}
	hidden32, _ := reftest.Weights(model.Spec{Name: "vgg11", ImageSize: 32, Classes: 3, Hidden: 32})
	classes1000, _ := reftest.Weights(model.Spec{Name: "vgg11", ImageSize: 32, Classes: 1000, Hidden: 16})
	extra := append(slices.Clone(good), &weights.Tensor{Name: "fc.weight", Shape: []int{1}, Data: []float32{1}})
	tests := []struct {
		name string
		init []*weights.Tensor
		want string
	}{
		{"hidden 32 for hidden 16", hidden32, "classifier.0.weight"},
		{"1000 classes for 3", classes1000, "classifier.6.weight"},
		{"one missing", good[1:], "features.0.weight: missing"},
		{"one unexpected", extra, "fc.weight: unexpected"},
		{"resnet18 for vgg11", func() []*weights.Tensor {
			ws, _ := reftest.Weights(model.Spec{Name: "resnet18", ImageSize: 32, Classes: 3})
			return ws
		}(), "conv1.weight: unexpected"},
	}
	for _, tt := range tests {
		tr, err := New(context.Background(), cfg, tt.init)
		if err == nil {
			tr.Close()
		}
		if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want ErrWeights naming %q", tt.name, err, tt.want)
		}
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

// TestLoadPth starts a Trainer from a real torch.save'd vgg11 state dict
// (torchrun/testdata, made by scripts/reference/make_fixture.py: the internal/reftest
// formula with the flat index taken mod 1009) read by weights.Load, and compares the
// tensors and PyTorch's logits.
//
// The committed file is DEFLATE-compressed (268 KB instead of 37 MB); weights.Load
// refuses archives that inflate to more than 4 times their size (a zip-bomb guard), so
// the test first stores the same entries uncompressed, as torch.save itself writes them.
func TestLoadPth(t *testing.T) {
	cfg := tinyConfig()
	ts, err := weights.Load(storedCopy(t, filepath.Join("testdata", "vgg11_s32.pth")))
	if err != nil {
		t.Fatal(err)
	}
	tr := mustNew(t, cfg, ts)
	got, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	net := mustNet(t, cfg)
	want := reftest.WeightsForNet(net) // for names and shapes
	for k, p := range net.Params {
		w := want[k]
		for j := range w.Data { // recompute with j mod 1009
			u := reftest.U(k, j%1009)
			switch p.Kind {
			case model.ConvWeight, model.LinearWeight:
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
	tr := mustNew(t, cfg, nil)
	ctx := context.Background()
	b := synthBatch(0, 1, 3, 32, 1)
	step := func(n int) {
		for range n {
			if _, _, err := tr.TrainStep(ctx, b); err != nil {
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
	tr := mustNew(t, cfg, nil)
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
		{"64 px batch, Go check", func() error { _, _, err := tr.TrainStep(ctx, bad64); return err }, "the model wants 32×32×3"},
		{"64 px batch, libtorch", func() error { _, _, err := tr.trainStep(ctx, bad64, false); return err }, "torchrun: step: mat1 and mat2 shapes cannot be multiplied"},
		{"label out of range, train", func() error { _, _, err := tr.TrainStep(ctx, badLabel); return err }, "torchrun: step: Target 7 is out of bounds"},
		{"label out of range, evaluate", func() error { _, _, err := tr.Evaluate(ctx, badLabel); return err }, "torchrun: evaluate: Target 7 is out of bounds"},
		{"short buffer", func() error { _, _, err := tr.TrainStep(ctx, short); return err }, "batch holds 10 values"},
		{"nil batch", func() error { _, _, err := tr.TrainStep(ctx, nil); return err }, "nil batch"},
	}
	for _, tt := range tests {
		err := tt.run()
		t.Logf("%s: %v", tt.name, err)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
		if _, _, err := tr.TrainStep(ctx, good); err != nil {
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
		{"cuda:7", "torchrun: new: device cuda:7"}, // libtorch: no libtorch_cuda.so, or fewer than 8 GPUs
		{"cuda:-1", `device "cuda:-1"`},
	}
	for _, tt := range tests {
		cfg := tinyConfig()
		cfg.Device = tt.device
		tr, err := New(context.Background(), cfg, nil)
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
		loss, _, err := tr.TrainStep(context.Background(), synthBatch(4*i, 4, 3, 32, 5))
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
		edit func(*recipe.Config)
	}{
		{"sgd nesterov bn", func(c *recipe.Config) {
			c.Model = "vgg11_bn"
			c.Nesterov, c.WeightDecay = true, 5e-4
		}},
		{"adam", func(c *recipe.Config) { c.Optimizer, c.LR = recipe.Adam, 1e-3 }},
		{"features sgd", func(c *recipe.Config) { c.Mode = model.ModeFeatures }},
		{"features torchvision frozen fc6/fc7 adam", func(c *recipe.Config) {
			c.Mode, c.Head, c.FreezeLoadedHead = model.ModeFeatures, model.HeadTorchvision, true
			c.Optimizer, c.LR = recipe.Adam, 1e-3
		}},
		{"keras head", func(c *recipe.Config) { c.Head = model.HeadKeras }},
		{"resnet18 adam", func(c *recipe.Config) { c.Model, c.Optimizer, c.LR = "resnet18", recipe.Adam, 1e-3 }},
		{"mobilenet_v2 sgd", func(c *recipe.Config) { c.Model = "mobilenet_v2" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Dropout = 0.5
			tt.edit(&cfg)
			resumeMatches(t, cfg, k, K)
		})
	}
}

// resumeMatches trains cfg for K steps in one Trainer (whole), and for k steps, a checkpoint
// and K−k more steps in a new Trainer (second): the losses and weights must be identical.
// It returns both Trainers for further checks.
func resumeMatches(t *testing.T, cfg recipe.Config, k, K int) (whole, second *Trainer) {
	t.Helper()
	whole = mustNew(t, cfg, nil)
	wantLoss := trainRun(t, whole, 0, K)
	want, _ := whole.Weights()

	first := mustNew(t, cfg, nil)
	gotLoss := trainRun(t, first, 0, k)
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := first.SaveCheckpoint(dir, 1, k); err != nil {
		t.Fatal(err)
	}
	first.Close()

	second = mustNew(t, cfg, nil)
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
	return whole, second
}

// TestCheckpointMeta: the checkpoint records the recipe package's keys, and a
// checkpoint for another optimizer or another model is refused.
func TestCheckpointMeta(t *testing.T) {
	cfg := tinyConfig()
	cfg.Model = "resnet18"
	a := mustNew(t, cfg, nil)
	trainRun(t, a, 0, 1)
	dir := t.TempDir()
	if err := a.SaveCheckpoint(dir, 0, 1); err != nil {
		t.Fatal(err)
	}
	meta, err := weights.ReadCheckpointMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{recipe.MetaStep: "1", recipe.MetaModel: "resnet18", recipe.MetaHead: "torchvision", recipe.MetaMode: "scratch"} {
		if got := meta.Extra[k]; got != want {
			t.Errorf("checkpoint %s: got %q, want %q", k, got, want)
		}
	}
	if got, want := meta.Optimizer, cfg.OptimizerString(); got != want {
		t.Errorf("checkpoint optimizer: got %q, want %q (recipe.Config.OptimizerString)", got, want)
	}
	adam := cfg
	adam.Optimizer = recipe.Adam
	other := cfg
	other.Model = "mobilenet_v2"
	tests := []struct {
		name string
		cfg  recipe.Config
		want string
	}{
		{"adam", adam, "optimizer sgd("},
		{"mobilenet_v2", other, `model "resnet18"`},
	}
	for _, tt := range tests {
		b := mustNew(t, tt.cfg, nil)
		if _, _, err := b.LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("loading a resnet18 SGD checkpoint into %s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
		b.Close()
	}
}

// TestTwoTrainers trains two Trainers at once from two goroutines; each must match
// a Trainer trained alone.
func TestTwoTrainers(t *testing.T) {
	cfg := tinyConfig()
	cfg.Dropout = 0.5
	solo := mustNew(t, cfg, nil)
	wantLoss := trainRun(t, solo, 0, 3)
	want, _ := solo.Weights()

	trs := []*Trainer{mustNew(t, cfg, nil), mustNew(t, cfg, nil)}
	losses := make([][]float64, 2)
	var wg sync.WaitGroup
	for i, tr := range trs {
		wg.Go(func() {
			for s := range 3 {
				l, _, err := tr.TrainStep(context.Background(), synthBatch(4*s, 4, 3, 32, 5))
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
	tr := mustNew(t, tinyConfig(), nil)
	ctx := context.Background()
	b := synthBatch(0, 2, 3, 32, 1)
	dir := t.TempDir()
	calls := []struct {
		name string
		run  func() error
	}{
		{"TrainStep", func() error { _, _, err := tr.TrainStep(ctx, b); return err }},
		{"Evaluate", func() error { _, _, err := tr.Evaluate(ctx, b); return err }},
		{"Logits", func() error { _, err := tr.Logits(ctx, b); return err }},
		{"Weights", func() error { _, err := tr.Weights(); return err }},
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
	if got := tr.Info().Framework; got != Framework {
		t.Errorf("Info after Close: got framework %q, want %q", got, Framework)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := New(cctx, tinyConfig(), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("New with a cancelled context: got %v, want context.Canceled", err)
	}
}

func TestInfo(t *testing.T) {
	cfg := tinyConfig()
	cfg.Threads = 1
	tr := mustNew(t, cfg, nil)
	var intra int
	var err error
	tr.w.do(func() { intra, _, err = nativeThreads() })
	if err != nil {
		t.Fatal(err)
	}
	info := tr.Info()
	tests := []struct {
		what      string
		got, want any
	}{
		{"Framework", info.Framework, "torch"},
		{"Device", info.Device, "cpu"},
		{"Threads", info.Threads, 1},
		// gotorch's init (linked into this test binary) set NumCPU/2; New overrides it.
		{"libtorch intra-op threads", intra, 1},
		{"Version", info.Version, "2.11.0"}, // scripts/versions.sh TORCH_VERSION
		{"mkldnn setting", info.Settings["mkldnn"], "true"},
		{"deterministic setting", info.Settings["deterministic"], "false"},
		{"PeakGPUBytes", tr.PeakGPUBytes(), int64(0)},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.what, tt.got, tt.want)
		}
	}
	if _, ok := info.Settings["inter_op_threads"]; !ok {
		t.Errorf("Settings: got %v, want an inter_op_threads entry", info.Settings)
	}
	info.Settings["mkldnn"] = "changed"
	if got := tr.Info().Settings["mkldnn"]; got != "true" {
		t.Errorf("Info's map after the caller changed its copy: got %q, want \"true\"", got)
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
	if want := argmaxHits(logits, b.Labels); correct != want {
		t.Errorf("Evaluate correct: got %d, want %d (argmax of Logits)", correct, want)
	}
}

// argmaxHits counts the rows of an N×C logits matrix (N = len(labels)) whose
// largest entry is at the label.
func argmaxHits(logits []float32, labels []int32) int {
	c := len(logits) / len(labels)
	hits := 0
	for i, l := range labels {
		row := logits[c*i : c*i+c]
		best := 0
		for j := range row {
			if row[j] > row[best] {
				best = j
			}
		}
		if int32(best) == l {
			hits++
		}
	}
	return hits
}
