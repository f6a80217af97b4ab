package tfrun

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// TestLearns trains vgg11_bn from scratch at 32 px on a synthetic three-class
// tree written by dataset.Synthesize (horizontal stripes, disc,
// checkerboard) and read through dataset's loader, and checks that the loss
// falls and that validation accuracy is clearly above chance.
//
// Threshold: 60% of 48 held-out images (29). A chance-level model gets 1/3
// right on average, 16 of 48 with a binomial standard deviation of
// √(48·⅓·⅔) = 3.3 images, so 29 is four standard deviations above chance
// (P ≈ 1e-4 by luck). The same threshold as torchrun's TestLearns.
func TestLearns(t *testing.T) {
	const (
		classes  = 3
		S        = 32
		perClass = 48 // 32 train + 16 validation per class
		batch    = 16
		epochs   = 10
		minAcc   = 0.6
	)
	ctx := context.Background()
	dir := t.TempDir()
	if err := dataset.Synthesize(dir, classes, perClass, S, 7, "png"); err != nil {
		t.Fatal(err)
	}
	d, err := dataset.Open(ctx, dir, dataset.OpenOptions{ValSplit: 1.0 / 3, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	load := func(s *dataset.Subset, shuffle bool, epoch int, size int) []*dataset.Batch {
		l, err := dataset.NewLoader(s, dataset.LoaderConfig{ImageSize: S, BatchSize: size, Seed: 7, Shuffle: shuffle, Normalize: dataset.NormImageNet})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		it := l.Epoch(ctx, epoch)
		defer it.Close()
		var bs []*dataset.Batch
		for {
			b, err := it.Next()
			if err == io.EOF {
				return bs
			}
			if err != nil {
				t.Fatal(err)
			}
			bs = append(bs, b)
		}
	}
	val := load(d.Val(), false, 0, d.Val().Len())[0]

	cfg := tinyConfig()
	cfg.Model = "vgg11_bn"
	cfg.Hidden = 64
	cfg.Dropout = 0.5
	cfg.Optimizer, cfg.LR = recipe.Adam, 1e-3
	tr := mustNew(t, cfg, nil)
	var first, last float64
	for e := range epochs {
		var sum float64
		bs := load(d.Train(), true, e, batch)
		for _, b := range bs {
			sum += mustStep(t, tr, b)
		}
		mean := sum / float64(len(bs))
		if e == 0 {
			first = mean
		}
		last = mean
		t.Logf("epoch %d: mean training loss %.4f", e+1, mean)
	}
	if !(last < 0.8*first) {
		t.Errorf("training loss: got %.4f after %d epochs, want below 80%% of the first epoch's %.4f", last, epochs, first)
	}
	loss, correct, err := tr.Evaluate(ctx, val)
	if err != nil {
		t.Fatal(err)
	}
	acc := float64(correct) / float64(val.N)
	t.Logf("validation: loss %.4f, accuracy %d/%d = %.2f", loss, correct, val.N, acc)
	if val.N != 48 {
		t.Errorf("validation set: got %d images, want 48", val.N)
	}
	if acc < minAcc {
		t.Errorf("validation accuracy: got %.2f (%d/%d), want at least %.2f (chance is 0.33)", acc, correct, val.N, minAcc)
	}
}

// TestFeaturesMode: the base is frozen bit for bit, the head learns, and the
// graph holds no backward op for the base at all, for VGG with and without
// BatchNorm and for ResNet-18 (whose base BatchNorms stay in evaluation
// mode: their running statistics must not move either).
func TestFeaturesMode(t *testing.T) {
	for _, name := range []string{"vgg11", "vgg11_bn", "resnet18"} {
		t.Run(name, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Model = name
			cfg.Classes = 1000
			file, err := weights.InitParams(mustNet(t, cfg).Params, 99) // its 1000-class output layer is replaced by a seeded one
			if err != nil {
				t.Fatal(err)
			}
			cfg.Classes, cfg.Mode = 3, model.ModeFeatures
			net := mustNet(t, cfg)
			init, _, err := weights.Initial(file, net, cfg.Mode, cfg.Seed, false)
			if err != nil {
				t.Fatal(err)
			}
			tr := mustNew(t, cfg, init)
			for _, o := range tr.m.graph.Operations() {
				switch o.Type() {
				case "Conv2DBackpropFilter", "Conv2DBackpropInput", "MaxPoolGrad", "FusedBatchNormGradV3":
					t.Errorf("features mode: graph has %s %s, want no backward pass through the base", o.Type(), o.Name())
				}
			}
			before := mustWeights(t, tr)
			for i := range 3 {
				mustStep(t, tr, synthBatch(4*i, 4, 3, 32, 1))
			}
			after := mustWeights(t, tr)
			for i, p := range net.Params {
				same := sameBits(before[i:i+1], after[i:i+1]) == ""
				if !p.Head && !same {
					t.Errorf("%s changed in features mode, want bit-identical", p.Name)
				}
				if p.Head && p.Kind == model.LinearWeight && same {
					t.Errorf("%s did not change, want the head trained", p.Name)
				}
				if !p.Head && sameBits([]*weights.Tensor{after[i]}, []*weights.Tensor{weights.Lookup(file, p.Name)}) != "" {
					t.Errorf("%s is not the given base tensor", p.Name)
				}
			}
		})
	}
	// Scratch mode does build the backward pass through the base.
	tr := mustNew(t, tinyConfig(), nil)
	n := 0
	for _, o := range tr.m.graph.Operations() {
		if o.Type() == "Conv2DBackpropFilter" {
			n++
		}
	}
	if n != 8 {
		t.Errorf("scratch vgg11: %d Conv2DBackpropFilter ops, want 8 (one per convolution)", n)
	}
}

// rss is the resident set size in bytes (/proc/self/statm, field 2).
func rss(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Fatalf("RSS: %v (this test needs Linux's /proc)", err)
	}
	f := strings.Fields(string(b))
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n * int64(os.Getpagesize())
}

// TestMemoryFlat: native memory does not grow with the number of steps.
// RSS after 200 steps must be within 5% of RSS after 20 (the first 20 let
// TensorFlow's allocator and oneDNN's primitive cache reach their working
// set). The batch (4×32×32×3) is refilled in place and the loss tensor
// freed at once, so nothing per step is left for the garbage collector.
func TestMemoryFlat(t *testing.T) {
	ctx := context.Background()
	tr := mustNew(t, tinyConfig(), nil)
	b := synthBatch(0, 4, 3, 32, 1)
	measure := func() int64 {
		runtime.GC()
		debug.FreeOSMemory()
		return rss(t)
	}
	var at20 int64
	for i := 1; i <= 200; i++ {
		mustStep(t, tr, b)
		if i%20 == 0 {
			// Evaluate and Logits too: they fetch tensors as well.
			if _, _, err := tr.Evaluate(ctx, b); err != nil {
				t.Fatal(err)
			}
			if _, err := tr.Logits(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if i == 20 {
			at20 = measure()
		}
	}
	at200 := measure()
	growth := float64(at200-at20) / float64(at20)
	t.Logf("RSS after 20 steps %d MiB, after 200 steps %d MiB (%+.2f%%)", at20>>20, at200>>20, 100*growth)
	if growth > 0.05 {
		t.Errorf("RSS grew %.1f%% from step 20 to step 200 (%d → %d bytes), want <= 5%%", 100*growth, at20, at200)
	}
}

// TestResumeEqualsUninterrupted: K steps in one Trainer equal k steps, a
// checkpoint, a new Trainer that loads it, and K−k more steps, bit for bit
// on the CPU (same Config, same batches; dropout on, so the masks must come
// back too).
func TestResumeEqualsUninterrupted(t *testing.T) {
	const K, k = 6, 3
	batches := make([]*dataset.Batch, K)
	for i := range batches {
		batches[i] = synthBatch(4*i, 4, 3, 32, 3)
	}
	for _, tc := range []struct {
		name string
		edit func(*recipe.Config)
	}{
		{"sgd-nesterov-wd", func(c *recipe.Config) { c.Momentum, c.Nesterov, c.WeightDecay = 0.9, true, 5e-4 }},
		{"adam", func(c *recipe.Config) { c.Optimizer, c.LR = recipe.Adam, 1e-3 }},
		{"sgd-bn", func(c *recipe.Config) { c.Model = "vgg11_bn" }},
		{"resnet18-adam", func(c *recipe.Config) { c.Model, c.Head, c.Optimizer, c.LR = "resnet18", "", recipe.Adam, 1e-3 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tinyConfig()
			tc.edit(&cfg)
			a := mustNew(t, cfg, nil)
			var lossA []float64
			for _, b := range batches {
				lossA = append(lossA, mustStep(t, a, b))
			}

			dir := filepath.Join(t.TempDir(), "ckpt")
			b1 := mustNew(t, cfg, nil)
			for _, b := range batches[:k] {
				mustStep(t, b1, b)
			}
			if err := b1.SaveCheckpoint(dir, 1, k); err != nil {
				t.Fatal(err)
			}
			if err := b1.Close(); err != nil {
				t.Fatal(err)
			}
			b2 := mustNew(t, cfg, nil)
			epoch, step, err := b2.LoadCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			if epoch != 1 || step != k {
				t.Errorf("LoadCheckpoint: got epoch %d step %d, want 1 %d", epoch, step, k)
			}
			for i, b := range batches[k:] {
				if l := mustStep(t, b2, b); l != lossA[k+i] {
					t.Errorf("step %d loss: resumed %v, uninterrupted %v, want equal bits", k+i+1, l, lossA[k+i])
				}
			}
			if d := sameBits(mustWeights(t, a), mustWeights(t, b2)); d != "" {
				t.Errorf("after %d steps: %s differs between the resumed and the uninterrupted run, want equal bits", K, d)
			}
		})
	}
}

// TestDropoutMasks: dropout is on in training (the training loss differs
// from the evaluation loss of the same weights), and its masks depend on
// the seed: two Trainers with one seed agree bit for bit, another seed
// gives another loss. (TestDropoutMaskApplied checks the masks' values.)
// MobileNetV2's dropout sits before its only Linear layer, on the pooled
// 1280 features; its Trainers take tens of seconds to start on two cores,
// so it is checked with one seed only (dropout changes the loss).
func TestDropoutMasks(t *testing.T) {
	for _, tc := range []struct{ model, head string }{
		{"vgg11", model.HeadFlatten}, {"vgg11", model.HeadTorchvision}, {"vgg11", model.HeadKeras},
		{"mobilenet_v2", model.HeadTorchvision},
	} {
		t.Run(tc.model+"/"+tc.head, func(t *testing.T) {
			ctx := context.Background()
			b := synthBatch(0, 8, 3, 32, 5)
			cfg := tinyConfig()
			cfg.Model, cfg.Head, cfg.Dropout = tc.model, tc.head, 0.5
			init, err := weights.InitParams(mustNet(t, cfg).Params, 1)
			if err != nil {
				t.Fatal(err)
			}
			step := func(seed int64) (train, eval float64) {
				c := cfg
				c.Seed = seed
				tr := mustNew(t, c, init)
				eval, _, err := tr.Evaluate(ctx, b)
				if err != nil {
					t.Fatal(err)
				}
				return mustStep(t, tr, b), eval
			}
			t1, e1 := step(1)
			if t1 == e1 {
				t.Errorf("training loss %v equals the evaluation loss: dropout did nothing", t1)
			}
			if tc.model == "mobilenet_v2" {
				return
			}
			t1b, _ := step(1)
			t2, _ := step(2)
			if t1 != t1b {
				t.Errorf("seed 1 twice: losses %v and %v, want equal bits", t1, t1b)
			}
			if t1 == t2 {
				t.Errorf("seeds 1 and 2: both losses %v, want different masks", t1)
			}
		})
	}
}

// TestNativeErrors provokes TensorFlow's own errors and checks they arrive
// as Go errors carrying TF's message.
func TestNativeErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("image size", func(t *testing.T) {
		tr := mustNew(t, tinyConfig(), nil)
		for _, S := range []int{33, 64} {
			_, _, err := tr.TrainStep(ctx, synthBatch(0, 2, 3, S, 1))
			if err == nil || !strings.HasPrefix(err.Error(), "tfrun: train step: ") || !strings.Contains(err.Error(), "is not compatible with expected shape") {
				t.Errorf("%d px batch into a 32 px model: got %v, want tfrun: train step: ... TensorFlow's shape message", S, err)
			}
			_, err = tr.Logits(ctx, synthBatch(0, 2, 3, S, 1))
			if err == nil || !strings.Contains(err.Error(), "[2,"+strconv.Itoa(S)+","+strconv.Itoa(S)+",3]") {
				t.Errorf("%d px logits: got %v, want TF's message naming the shape", S, err)
			}
		}
		// The Trainer is still usable.
		if _, _, err := tr.TrainStep(ctx, synthBatch(0, 2, 3, 32, 1)); err != nil {
			t.Errorf("after a native error: %v", err)
		}
	})
	t.Run("device", func(t *testing.T) {
		gpus, err := CUDADevices()
		if err != nil {
			t.Fatal(err)
		}
		// A GPU this library does not have: cuda:0 on a CPU-only build.
		cfg := tinyConfig()
		cfg.Device = "cuda:" + strconv.Itoa(len(gpus))
		_, err = New(ctx, cfg, nil)
		if err == nil {
			t.Fatalf("New on %s with GPUs %v: no error", cfg.Device, gpus)
		}
		msg := err.Error()
		for _, want := range []string{"tfrun: new: device: ", cfg.Device, "/device:CPU:0", "available devices"} {
			if !strings.Contains(msg, want) {
				t.Errorf("New on %s: got %q, want it to contain %q", cfg.Device, msg, want)
			}
		}
	})
	t.Run("go-side checks", func(t *testing.T) {
		tr := mustNew(t, tinyConfig(), nil)
		bad := synthBatch(0, 2, 3, 32, 1)
		bad.Labels[1] = 3
		if _, _, err := tr.TrainStep(ctx, bad); err == nil || !strings.Contains(err.Error(), "label 3") {
			t.Errorf("label 3 of 3 classes: got %v, want an error naming it", err)
		}
		short := synthBatch(0, 2, 3, 32, 1)
		short.X = short.X[:10]
		if _, _, err := tr.TrainStep(ctx, short); err == nil {
			t.Error("batch with too few values: no error")
		}
		if _, _, err := tr.TrainStep(ctx, nil); err == nil {
			t.Error("nil batch: no error")
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := tr.TrainStep(cctx, synthBatch(0, 2, 3, 32, 1)); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled context: got %v, want context.Canceled", err)
		}
		if _, err := New(cctx, tinyConfig(), nil); !errors.Is(err, context.Canceled) {
			t.Errorf("New with a cancelled context: got %v, want context.Canceled", err)
		}
	})
}

// TestBadRecipes: New refuses every recipe of recipe.BadRecipes before any
// native call, with Validate's own error unchanged (it wraps
// recipe.ErrInvalid), so the CLI, compare and both drivers give the same
// message.
func TestBadRecipes(t *testing.T) {
	ctx := context.Background()
	for _, c := range recipe.BadRecipes() {
		tr, err := New(ctx, c.Config, nil)
		if err == nil {
			tr.Close()
			t.Errorf("%s: New succeeded, want recipe.ErrInvalid", c.Name)
			continue
		}
		want := c.Config.Validate()
		if want == nil {
			t.Errorf("%s: Validate accepts it, want an error", c.Name)
			continue
		}
		if !errors.Is(err, recipe.ErrInvalid) || err.Error() != want.Error() {
			t.Errorf("%s: got %q, want Validate's %q wrapping recipe.ErrInvalid", c.Name, err, want)
		}
		if !strings.Contains(err.Error(), c.Want) {
			t.Errorf("%s: got %q, want it to contain %q", c.Name, err, c.Want)
		}
	}
	if err := tinyConfig().Validate(); err != nil {
		t.Errorf("tinyConfig: %v", err)
	}
}

// TestConcurrency: overlapping calls on one Trainer get ErrBusy; two
// Trainers in one process train concurrently and each gets exactly what it
// gets alone.
func TestConcurrency(t *testing.T) {
	ctx := context.Background()
	b := synthBatch(0, 4, 3, 32, 2)
	tr := mustNew(t, tinyConfig(), nil)
	tr.mu.Lock() // a call in flight
	if _, _, err := tr.TrainStep(ctx, b); !errors.Is(err, ErrBusy) {
		t.Errorf("TrainStep during another call: got %v, want ErrBusy", err)
	}
	if _, err := tr.Weights(); !errors.Is(err, ErrBusy) {
		t.Errorf("Weights during another call: got %v, want ErrBusy", err)
	}
	tr.mu.Unlock()

	const steps = 4
	run := func(tr *Trainer) ([]float64, error) {
		var ls []float64
		for i := range steps {
			l, _, err := tr.TrainStep(ctx, synthBatch(4*i, 4, 3, 32, 2))
			if err != nil {
				return nil, err
			}
			ls = append(ls, l)
		}
		return ls, nil
	}
	cfgs := [2]recipe.Config{tinyConfig(), tinyConfig()}
	cfgs[1].Seed, cfgs[1].Optimizer, cfgs[1].LR = 2, recipe.Adam, 1e-3
	cfgs[0].Threads, cfgs[1].Threads = 1, 1
	var alone [2][]float64
	for i, c := range cfgs {
		ls, err := run(mustNew(t, c, nil))
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = ls
	}
	var together [2][]float64
	var errs [2]error
	var wg sync.WaitGroup
	for i, c := range cfgs {
		tr := mustNew(t, c, nil)
		wg.Go(func() { together[i], errs[i] = run(tr) })
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil {
			t.Fatalf("trainer %d: %v", i, errs[i])
		}
		for j := range steps {
			if together[i][j] != alone[i][j] {
				t.Errorf("trainer %d step %d: loss %v beside another Trainer, %v alone; want equal bits", i, j, together[i][j], alone[i][j])
			}
		}
	}
}

// TestClose: idempotent, ErrClosed afterwards, and a Close during a call
// waits for it.
func TestClose(t *testing.T) {
	ctx := context.Background()
	tr, err := New(ctx, tinyConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := synthBatch(0, 4, 3, 32, 1)
	done := make(chan error)
	go func() {
		_, _, err := tr.TrainStep(ctx, b)
		done <- err
	}()
	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The step either ran first (Close waited for it), or found Close
	// running (ErrBusy) or done (ErrClosed).
	if err := <-done; err != nil && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrBusy) {
		t.Errorf("TrainStep racing Close: got %v, want nil, ErrBusy or ErrClosed", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, _, err := tr.TrainStep(ctx, b); !errors.Is(err, ErrClosed) {
		t.Errorf("TrainStep after Close: got %v, want ErrClosed", err)
	}
	if _, _, err := tr.Evaluate(ctx, b); !errors.Is(err, ErrClosed) {
		t.Errorf("Evaluate after Close: got %v, want ErrClosed", err)
	}
	if _, err := tr.Weights(); !errors.Is(err, ErrClosed) {
		t.Errorf("Weights after Close: got %v, want ErrClosed", err)
	}
	if err := tr.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: got %v, want ErrClosed", err)
	}
	if _, _, err := tr.LoadCheckpoint(t.TempDir()); !errors.Is(err, ErrClosed) {
		t.Errorf("LoadCheckpoint after Close: got %v, want ErrClosed", err)
	}
}

// TestWeightsRoundTrip: Weights returns canonical torchvision shapes, and a
// new Trainer started from them reproduces the weights and the logits bit
// for bit, for every layout the converter knows (VGG's convolutions and
// Linear layers, MobileNetV2's depthwise filters); finetune composed by
// weights.Initial with another class count replaces the output layer only.
func TestWeightsRoundTrip(t *testing.T) {
	ctx := context.Background()
	b := synthBatch(0, 4, 3, 32, 4)
	for _, name := range []string{"vgg11", "mobilenet_v2"} {
		t.Run(name, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Model, cfg.Dropout = name, 0
			net := mustNet(t, cfg)
			a := mustNew(t, cfg, nil)
			for range 2 {
				mustStep(t, a, b)
			}
			trained := mustWeights(t, a)
			if err := weights.CheckShapes(trained, net.Params, false); err != nil {
				t.Errorf("Weights are not in canonical layout: %v", err)
			}
			c2 := cfg
			c2.Seed = 42
			c := mustNew(t, c2, trained)
			if d := sameBits(trained, mustWeights(t, c)); d != "" {
				t.Errorf("started from the trained weights: %s differs", d)
			}
			la, err1 := a.Logits(ctx, b)
			lc, err2 := c.Logits(ctx, b)
			if err := errors.Join(err1, err2); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(la, lc) {
				t.Errorf("logits from the copied weights %v, want %v", lc, la)
			}

			// Finetune to 5 classes from the 3-class weights.
			ft := cfg
			ft.Mode, ft.Classes = model.ModeFinetune, 5
			fnet := mustNet(t, ft)
			init, _, err := weights.Initial(trained, fnet, ft.Mode, ft.Seed, false)
			if err != nil {
				t.Fatal(err)
			}
			seeded, err := weights.InitParams(fnet.Params, ft.Seed)
			if err != nil {
				t.Fatal(err)
			}
			f := mustNew(t, ft, init)
			for i, w := range mustWeights(t, f) {
				want := weights.Lookup(trained, w.Name)
				if fnet.Reinitialised(ft.Mode, fnet.Params[i]) {
					want = seeded[i]
				}
				if d := sameBits([]*weights.Tensor{w}, []*weights.Tensor{want}); d != "" {
					t.Errorf("finetune to 5 classes: %s is not the expected tensor", w.Name)
				}
			}
		})
	}
}

// TestInfo: Info and the other reporting methods.
func TestInfo(t *testing.T) {
	tr := mustNew(t, tinyConfig(), nil)
	info := tr.Info()
	if info.Framework != "tensorflow" || info.Device != "cpu" || info.Threads != 2 {
		t.Errorf("Info: got framework %q, device %q, threads %d; want tensorflow, cpu, 2", info.Framework, info.Device, info.Threads)
	}
	if !strings.HasPrefix(info.Version, "2.") {
		t.Errorf("Info version: got %q, want 2.x (scripts/setup.sh provisions 2.21.0)", info.Version)
	}
	if got := info.Settings["inter_op_threads"]; got != "2" {
		t.Errorf("Info settings inter_op_threads: got %q, want 2", got)
	}
	if err := tr.Sync(); err != nil {
		t.Errorf("Sync: %v", err)
	}
	if got := tr.PeakGPUBytes(); got != 0 {
		t.Errorf("PeakGPUBytes on the CPU: got %d, want 0", got)
	}
	b := synthBatch(0, 4, 3, 32, 1)
	for range 3 {
		mustStep(t, tr, b)
	}
	if total, n := tr.GoOverhead(); n != 3 || total <= 0 {
		t.Errorf("GoOverhead after 3 steps: got %v over %d steps, want > 0 over 3", total, n)
	}
	if got := tr.Step(); got != 3 {
		t.Errorf("Step after 3 steps: got %d, want 3", got)
	}
	if !layoutOK {
		t.Error("the pinned binding's tf.Tensor/tf.Graph layout changed: tfrun falls back to GC-freed tensors")
	}
}
