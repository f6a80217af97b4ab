package torchrun

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
)

// The per-model fixtures are torchvision 0.26's own modules run by PyTorch 2.11
// (scripts/reference/make_model_fixtures.py) from the internal/reftest formula weights
// and input, 3 classes, dropout 0: models_s32 holds resnet18, resnet50, mobilenet_v2
// and vgg11_bn (flatten head, hidden 16) at 32 px on reftest.Input(4, 32); models_s64
// resnet50 and mobilenet_v2 at 64 px on reftest.Input(8, 64).
const (
	modelsFixturePath   = "../testdata/reference/models_s32.safetensors"
	modelsFixture64Path = "../testdata/reference/models_s64.safetensors"
)

// Tolerances of TestReferenceModels: reference_test.go's (refRtol 1e-4, refAtol 1e-6;
// the same libtorch CPU kernels as PyTorch, float32 rounding only). Measured on this
// project's 2-core AMD EPYC machine with the fixture's thread count (2): every value
// bit-identical (worst difference 0, logged by the test).
//
// The test runs libtorch with the fixture's thread count (its metadata
// "torch_threads"): at 32 px the last blocks of ResNet-50 and MobileNetV2 see 1×1
// maps, so in training mode BatchNorm normalises each channel over 4 values, and the
// float32 rounding of another reduction split is amplified. PyTorch itself, at 1
// thread instead of 2, gives a train-mode loss of 1.20442498 instead of 1.20473886
// for resnet50 (2.6e-4) and 1.25013077 instead of 1.24939358 for mobilenet_v2, and
// resnet50's updated weights then differ by more than their size; torchrun at 1
// thread gives the same 1.204425 and 1.2501308. Eval mode is well conditioned
// (resnet50's logits within 3.2e-5 at 1 thread). At 64 px × 8 (models_s64) mobilenet_v2
// is well conditioned (PyTorch's float32 training loss within 2.3e-6 of float64's), but
// resnet50's gradients below its last stage still differ from float64's by 36-56% in
// norm (its metadata "float64_spread"), so there too only the same kernels in the same
// order, as here, give the same updates. Measured at 2 threads: every value of both
// models bit-identical too.
const (
	modelRtol = refRtol
	modelAtol = refAtol
)

// worstRel returns the largest |got−want| / (atol + |want|) over the elements, for the
// test log (what the tolerances above were set from).
func worstRel(got, want []float32, atol float64) float64 {
	w := 0.0
	for i := range min(len(got), len(want)) {
		w = max(w, math.Abs(float64(got[i])-float64(want[i]))/(atol+math.Abs(float64(want[i]))))
	}
	return w
}

// TestModelsExercise: the per-model tests below run every op the drivers must
// handle beyond VGG's: depthwise convolution, residual add, ReLU6, padded stride-2
// convolutions and a padded max pool. (A change to the model table that removed one
// would leave it untested here.)
func TestModelsExercise(t *testing.T) {
	found := map[string]bool{}
	for _, name := range []string{"resnet18", "resnet50", "mobilenet_v2"} {
		net, err := model.Build(model.Spec{Name: name, ImageSize: 32, Classes: 3})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range net.Layers {
			found["depthwise conv"] = found["depthwise conv"] || l.Depthwise()
			found["residual add"] = found["residual add"] || l.Op == model.Add
			found["relu6"] = found["relu6"] || l.Op == model.ReLU6
			found["padded stride-2 conv"] = found["padded stride-2 conv"] || l.Op == model.Conv && l.Stride == 2 && l.Pad > 0
			found["padded max pool"] = found["padded max pool"] || l.Op == model.MaxPool && l.Pad > 0
		}
	}
	for _, what := range []string{"depthwise conv", "residual add", "relu6", "padded stride-2 conv", "padded max pool"} {
		if !found[what] {
			t.Errorf("resnet18, resnet50, mobilenet_v2: got no %s, want one", what)
		}
	}
}

// TestReferenceModels compares each model with torchvision's module run by PyTorch:
// eval-mode logits and loss; the train-mode loss of one SGD step (lr 0.01, momentum
// 0.9, weight decay 5e-4, batch statistics in BatchNorm) and its top-1 hits (the
// argmax of PyTorch's train-mode logits); after the step, the output layer in full,
// and for every other tensor (BatchNorm running statistics included) its first 64
// values and its summed update. Both fixtures: models_s32 and models_s64.
func TestReferenceModels(t *testing.T) {
	for _, mf := range reftest.ModelFixtures() {
		t.Run(fmt.Sprintf("s%d", mf.S), func(t *testing.T) {
			referenceModels(t, mf.Path, mf.Models, mf.Batch, mf.S)
		})
	}
}

// referenceModels is TestReferenceModels for the fixture at path, which holds models
// from reftest.Input(batch, S).
func referenceModels(t *testing.T, path string, models []string, batch, S int) {
	f := reftest.LoadFixture(t, path)
	meta, get := f.Meta, f.Get
	threads, err := strconv.Atoi(meta["torch_threads"])
	if err != nil {
		t.Fatalf("fixture torch_threads %q: %v", meta["torch_threads"], err)
	}
	var config struct {
		Models    []string `json:"models"`
		Batch     int      `json:"batch"`
		ImageSize int      `json:"image_size"`
	}
	if err := json.Unmarshal([]byte(meta["config"]), &config); err != nil {
		t.Fatalf("fixture config: %v", err)
	}
	if !slices.Equal(config.Models, models) || config.Batch != batch || config.ImageSize != S {
		t.Fatalf("fixture models %v, batch %d, %d px: want %v, %d, %d px", config.Models, config.Batch, config.ImageSize, models, batch, S)
	}
	for _, name := range models {
		t.Run(name, func(t *testing.T) {
			cfg := refConfig(recipe.SGD)
			cfg.Model, cfg.Hidden, cfg.ImageSize, cfg.Threads = name, 16, S, threads
			net := mustNet(t, cfg)
			init := reftest.WeightsForNet(net)
			tr := mustNew(t, cfg, init)
			ctx := context.Background()
			in := reftest.Input(batch, S)

			logits, err := tr.Logits(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			want := get(t, name+"/logits")
			t.Logf("eval logits: worst relative difference %.3g", worstRel(logits, want, 0))
			if err := closeTo(logits, want, modelRtol, modelAtol); err != nil {
				t.Errorf("eval logits: %v", err)
			}
			loss, _, err := tr.Evaluate(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			if w := float64(get(t, name+"/loss")[0]); math.Abs(loss-w) > modelRtol*math.Abs(w) {
				t.Errorf("eval loss: got %.8g, want %.8g (PyTorch)", loss, w)
			}

			loss, correct, err := tr.TrainStep(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			w := float64(get(t, name+"/sgd1/loss")[0])
			t.Logf("train loss: got %.8g, want %.8g (relative difference %.3g)", loss, w, math.Abs(loss-w)/w)
			if math.Abs(loss-w) > modelRtol*math.Abs(w) {
				t.Errorf("train loss: got %.8g, want %.8g (PyTorch)", loss, w)
			}
			if want := argmaxHits(get(t, name+"/train_logits"), in.Labels); correct != want {
				t.Errorf("train-mode hits: got %d, want %d (argmax of PyTorch's train-mode logits)", correct, want)
			}

			ws, err := tr.Weights()
			if err != nil {
				t.Fatal(err)
			}
			run := name + "/sgd1/"
			var worstFull, worstFirst float64
			for i, w := range ws {
				if full := f.Tensor(run + w.Name); full != nil { // the output layer
					worstFull = max(worstFull, worstRel(w.Data, full.Data, modelAtol))
					if err := closeTo(w.Data, full.Data, modelRtol, modelAtol); err != nil {
						t.Errorf("%s: %v", w.Name, err)
					}
					continue
				}
				first := get(t, run+w.Name+"/first64")
				got := w.Data[:min(len(w.Data), len(first))]
				worstFirst = max(worstFirst, worstRel(got, first, modelAtol))
				if err := closeTo(got, first, modelRtol, modelAtol); err != nil {
					t.Errorf("%s (first 64): %v", w.Name, err)
				}
				checkSummedUpdate(t, f, run+w.Name, w, init[i])
			}
			t.Logf("after the step: output layer worst relative difference %.3g, first 64 of the others %.3g", worstFull, worstFirst)
			if out := net.Layers[net.Output()].Name; f.Tensor(run+out+".weight") == nil {
				t.Errorf("fixture: got no full %s.weight, want the output layer stored in full", out)
			}
		})
	}
}

// TestModelsLearn: each model fits a tiny batch (8 images of dataset.SynthImage's
// first three classes at 32 px): after learnSteps Adam steps (lr 1e-3) on the same
// batch, the training loss is below learnFraction of the first step's. Measured on
// this machine, first loss → after 5 steps: resnet18 1.0981 → 0.0072, resnet50
// 1.3157 → 0.0022, mobilenet_v2 1.0915 → 0.0717 (all below 7% of the first), so a
// quarter leaves room, while a model that does not learn (a gradient cut off by a
// wrong in-place op, a frozen layer) stays near ln 3 ≈ 1.1.
func TestModelsLearn(t *testing.T) {
	const (
		learnSteps    = 5
		learnFraction = 0.25
	)
	b := synthBatch(0, 8, 3, 32, 11)
	for _, name := range []string{"resnet18", "resnet50", "mobilenet_v2"} {
		t.Run(name, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Model, cfg.Optimizer, cfg.LR, cfg.Dropout = name, recipe.Adam, 1e-3, 0
			tr := mustNew(t, cfg, nil)
			var losses []float64
			for range learnSteps + 1 {
				loss, _, err := tr.TrainStep(context.Background(), b)
				if err != nil {
					t.Fatal(err)
				}
				losses = append(losses, loss)
			}
			t.Logf("losses %s", fmt.Sprintf("%.4f", losses))
			if first, last := losses[0], losses[learnSteps]; !(last < learnFraction*first) {
				t.Errorf("loss after %d steps: got %.4f, want below %.2f × the first step's %.4f", learnSteps, last, learnFraction, first)
			}
		})
	}
}
