package tfrun

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// fixturePath is the shared PyTorch reference (scripts/reference/make_fixture.py):
// VGG16 at S = 32, 3 classes, hidden 32, dropout 0, batch 4, formula weights
// and input from internal/reftest.
const fixturePath = "../testdata/reference/vgg16_s32.safetensors"

// fixture is a reference file (reftest.Fixture) with tfrun's comparisons.
type fixture struct{ *reftest.Fixture }

func loadFixture(t *testing.T) *fixture { return loadFixtureFile(t, fixturePath) }

func loadFixtureFile(t *testing.T, path string) *fixture {
	t.Helper()
	return &fixture{reftest.LoadFixture(t, path)}
}

func sha(ts []*weights.Tensor) string {
	h := sha256.New()
	for _, t := range ts {
		b := make([]byte, 4*len(t.Data))
		for i, v := range t.Data {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refConfig is the fixture's configuration (its __metadata__["config"]):
// VGG16 at 32 px, 3 classes, hidden 32, dropout 0, scratch, SGD (lr 0.01,
// momentum 0.9, weight decay 5e-4).
func refConfig() recipe.Config {
	cfg := recipe.Default()
	cfg.Model = "vgg16"
	cfg.ImageSize = 32
	cfg.Classes = 3
	cfg.Hidden = 32
	cfg.Dropout = 0
	cfg.Mode = model.ModeScratch
	cfg.LR, cfg.Momentum, cfg.WeightDecay = 0.01, 0.9, 5e-4
	cfg.Threads, cfg.InterOpThreads = 2, 2
	return cfg
}

// refSpec is cfg's model.Spec.
func refSpec(cfg recipe.Config) model.Spec {
	return model.Spec{Name: cfg.Model, Head: cfg.Head, ImageSize: cfg.ImageSize, Classes: cfg.Classes, Hidden: cfg.Hidden}
}

// checkWeights compares a trainer's weights with the fixture's run: every
// element's change within tol of the largest change of its tensor (plus 2
// ulps, see reftest.UpdateDiff), at most maxOver of the compared elements beyond 1e-4 of
// it, and the float64 sums of each conv tensor's change within tol.
func (f *fixture) checkWeights(t *testing.T, tr *Trainer, init []*weights.Tensor, run string, tol, maxOver float64) {
	t.Helper()
	initBy := map[string][]float32{}
	for _, w := range init {
		initBy[w.Name] = w.Data
	}
	ws, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	worst, worstSum := 0.0, 0.0
	over, total := 0.0, 0
	for _, w := range ws {
		got, w0, key := w.Data, initBy[w.Name], run+"/"+w.Name
		if !strings.HasPrefix(w.Name, "classifier.") {
			got, w0, key = got[:64], w0[:64], key+"/first64"
		}
		want := f.Get(t, key)
		e, frac := reftest.UpdateDiff(got, want, w0)
		worst = max(worst, e)
		over += frac * float64(len(want))
		total += len(want)
		if e > tol {
			t.Errorf("%s %s: update differs from PyTorch by up to %.3g of its largest change, want <= %g", run, w.Name, e, tol)
		}
		if strings.HasPrefix(w.Name, "classifier.") {
			continue
		}
		s, err := f.Sums(run + "/" + w.Name)
		if err != nil {
			t.Fatal(err)
		}
		var dsum, dabs float64
		for i, v := range w.Data {
			d := float64(v) - float64(initBy[w.Name][i])
			dsum += d
			dabs += math.Abs(d)
		}
		e1 := math.Abs(dabs-s.DeltaAbsSum) / s.DeltaAbsSum
		e2 := math.Abs(dsum-s.DeltaSum) / s.DeltaAbsSum
		worstSum = max(worstSum, e1, e2)
		if !(e1 <= tol && e2 <= tol) { // also fails on NaN
			t.Errorf("%s %s: sum|Δw| = %.9g, sum Δw = %.9g; PyTorch %.9g, %.9g (relative to sum|Δw|: %.3g, %.3g; want <= %g)",
				run, w.Name, dabs, dsum, s.DeltaAbsSum, s.DeltaSum, e1, e2, tol)
		}
	}
	if frac := over / float64(total); frac > maxOver {
		t.Errorf("%s: %.2g%% of the compared elements differ by more than 1e-4 of their tensor's largest change, want <= %g%%", run, 100*frac, 100*maxOver)
	}
	t.Logf("%s: worst update difference %.3g of the largest change, worst sum difference %.3g, %.0f of %d elements beyond 1e-4",
		run, worst, worstSum, over, total)
}

// checkLogits fails t when logits differ from PyTorch's want by more than 1e-4 of the
// largest |want| (reftest.RelErr) and logs the difference otherwise.
func checkLogits(t *testing.T, logits, want []float32) {
	t.Helper()
	if e := reftest.RelErr(logits, want); e > 1e-4 {
		t.Errorf("logits %v, PyTorch %v: relative difference %.3g, want <= 1e-4", logits, want, e)
	} else {
		t.Logf("logits relative difference %.3g", e)
	}
}

func TestParityWithPyTorch(t *testing.T) {
	f := loadFixture(t)
	ctx := context.Background()
	init, err := reftest.Weights(refSpec(refConfig()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sha(init), f.Meta["weights_sha256"]; got != want {
		t.Fatalf("formula weights sha256 %s, fixture %s: Go and Python start from different weights", got, want)
	}
	batch := reftest.Input(4, 32)

	t.Run("forward", func(t *testing.T) {
		tr, err := New(ctx, refConfig(), init)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		logits, err := tr.Logits(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		want := f.Get(t, "logits")
		// 1e-4 relative to the largest logit: float32 convolutions summed
		// in another order (oneDNN vs torch's kernels) through 16 layers
		// (measured 6.6e-7). A layout mistake (a wrong flatten order, an
		// untransposed filter) gives differences of order 1.
		checkLogits(t, logits, want)
		loss, _, err := tr.Evaluate(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		wantLoss := float64(f.Get(t, "loss")[0])
		// The loss is a mean of 4 log-softmaxes of those logits: 1e-5
		// (measured 0: the float32 results agree exactly).
		if e := math.Abs(loss-wantLoss) / wantLoss; e > 1e-5 {
			t.Errorf("loss %.9g, PyTorch %.9g: relative %.3g, want <= 1e-5", loss, wantLoss, e)
		} else {
			t.Logf("loss relative difference %.3g", e)
		}
	})

	for _, tc := range []struct {
		run   string
		steps int
		adam  bool
		tol   float64
		over  float64 // share of elements allowed beyond 1e-4 of the largest change
	}{
		// SGD: measured 1.7e-6 (float32 summation order: oneDNN vs
		// torch's kernels); 1e-4 still catches a missing weight decay
		// term (about 5e-4 of the largest change here) or a wrong
		// momentum/Nesterov formula.
		{"sgd1", 1, false, 1e-4, 0.01},
		// The second step starts from weights that already differ by rounding
		// (sgd1: 1.7e-6), and its gradient differs by more than that: measured
		// on this project's AMD EPYC machines (2026-12-04) up to 6.0e-3 of the
		// largest change, 3.0% of the elements beyond 1e-4, sums within 1.2e-3
		// (the machine that made the fixture stayed below 1e-4; the cause is
		// not established -- ReLU units near zero switching is the likely
		// one). sgd2 is here for the momentum buffer: a wrong momentum rule
		// moves the second update by the order of the first (momentum 0.9),
		// far beyond 1e-2; weight decay and the update formula are held to
		// 1e-4 by sgd1.
		{"sgd2", 2, false, 1e-2, 0.05},
		// Adam's first step is Δ = −lr·g/(|g|+ε): an element whose
		// gradient is comparable to ε = 1e-8 turns the gradient's float32
		// summation noise (percent-level at 4e-9, which is a cancelling
		// sum of terms near 1e-3) into an update difference of the same
		// relative size. Measured: 3.5e-3 for one element of
		// classifier.0.weight (|g| ≈ 4e-9), 2 ulps for all but 38 of its
		// 16384 elements. The 1%-of-elements bound keeps the loose
		// maximum from hiding a formula error: feeding TF the uncorrected
		// ε fails it.
		{"adam1", 1, true, 1e-2, 0.01},
	} {
		t.Run(tc.run, func(t *testing.T) {
			cfg := refConfig()
			if tc.adam {
				cfg.Optimizer, cfg.LR, cfg.WeightDecay = recipe.Adam, 1e-3, 0
			}
			tr, err := New(ctx, cfg, init)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			wantLoss := f.Get(t, tc.run+"/loss")
			for i := range tc.steps {
				loss, _, err := tr.TrainStep(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				if e := math.Abs(loss-float64(wantLoss[i])) / float64(wantLoss[i]); e > 1e-5 {
					t.Errorf("step %d loss %.9g, PyTorch %.9g: relative %.3g, want <= 1e-5", i+1, loss, wantLoss[i], e)
				}
			}
			f.checkWeights(t, tr, init, tc.run, tc.tol, tc.over)
		})
	}
}

// TestParityBatchNorm checks vgg11_bn (hidden 16, batch 4, dropout 0) against
// the fixture's bn/ entries: evaluation-mode logits, the training-mode loss of
// one SGD step (lr 0.01, momentum 0.9, weight decay 5e-4), and after it
// BatchNorm 1's running statistics and weight and classifier.6.weight.
func TestParityBatchNorm(t *testing.T) {
	f := loadFixture(t)
	ctx := context.Background()
	cfg := refConfig()
	cfg.Model, cfg.Hidden = "vgg11_bn", 16
	init, err := reftest.Weights(refSpec(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sha(init), f.Meta["bn_weights_sha256"]; got != want {
		t.Fatalf("formula weights sha256 %s, fixture %s", got, want)
	}
	tr, err := New(ctx, cfg, init)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	batch := reftest.Input(4, 32)
	logits, err := tr.Logits(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	// Logits: the same 1e-4 as VGG16's (measured in the log).
	if e, want := reftest.RelErr(logits, f.Get(t, "bn/logits_eval")), 1e-4; e > want {
		t.Errorf("eval logits %v, PyTorch %v: relative difference %.3g, want <= %g", logits, f.Get(t, "bn/logits_eval"), e, want)
	} else {
		t.Logf("eval logits relative difference %.3g", e)
	}
	loss, _, err := tr.TrainStep(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	wantLoss := float64(f.Get(t, "bn/sgd1/loss")[0])
	// 1e-4: the batch statistics are float32 sums over 4·32·32 pixels in
	// another order than torch's (measured 7.3e-6).
	if e := math.Abs(loss-wantLoss) / wantLoss; e > 1e-4 {
		t.Errorf("train-mode loss %.9g, PyTorch %.9g: relative %.3g, want <= 1e-4", loss, wantLoss, e)
	} else {
		t.Logf("train-mode loss relative difference %.3g", e)
	}
	ws, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	initBy := map[string][]float32{}
	for _, w := range init {
		initBy[w.Name] = w.Data
	}
	for _, name := range []string{"features.1.running_mean", "features.1.running_var", "features.1.weight", "classifier.6.weight"} {
		got := weights.Lookup(ws, name)
		// Changes within 1e-4 of the largest change (see reftest.UpdateDiff): the
		// running statistics move by 0.1·(batch statistic − running), the
		// weights by the SGD step.
		e, _ := reftest.UpdateDiff(got.Data, f.Get(t, "bn/sgd1/"+name), initBy[name])
		if e > 1e-4 {
			t.Errorf("%s: change differs from PyTorch by %.3g of its largest change, want <= 1e-4", name, e)
		} else {
			t.Logf("%s: change differs by %.3g of its largest change", name, e)
		}
	}
}

// TestParityOptimizers checks what the shared fixture does not reach against
// tfrun's own PyTorch fixture (testdata/make_optim_fixture.py: vgg11, S = 32,
// hidden 16, dropout 0, batch 4, formula weights, two steps on one batch):
// SGD with Nesterov momentum and weight decay, and Adam with weight decay
// through its second step (bias correction with t = 2).
func TestParityOptimizers(t *testing.T) {
	f := loadFixtureFile(t, "testdata/optim_vgg11_s32.safetensors")
	ctx := context.Background()
	base := refConfig()
	base.Model, base.Hidden = "vgg11", 16
	init, err := reftest.Weights(refSpec(base))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sha(init), f.Meta["weights_sha256"]; got != want {
		t.Fatalf("formula weights sha256 %s, fixture %s", got, want)
	}
	batch := reftest.Input(4, 32)
	for _, tc := range []struct {
		run  string
		edit func(*recipe.Config)
		tol  float64 // as in TestParityWithPyTorch, for the same reasons
	}{
		{"nesterov", func(c *recipe.Config) { c.LR, c.Momentum, c.WeightDecay, c.Nesterov = 0.01, 0.9, 5e-4, true }, 1e-4},
		{"adamwd", func(c *recipe.Config) { c.Optimizer, c.LR, c.WeightDecay = recipe.Adam, 1e-3, 5e-4 }, 1e-2},
	} {
		t.Run(tc.run, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			tr, err := New(ctx, cfg, init)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			want := f.Get(t, tc.run+"/loss")
			for i := range want {
				loss, _, err := tr.TrainStep(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				// 1e-5 for the first step's loss (the formula weights);
				// later losses see the previous updates, and after an
				// Adam step those carry its ε-sensitive elements (see
				// TestParityWithPyTorch): 1e-4 (measured 1.4e-5).
				lossTol := 1e-5
				if i > 0 && cfg.Optimizer == recipe.Adam {
					lossTol = 1e-4
				}
				if e := math.Abs(loss-float64(want[i])) / float64(want[i]); e > lossTol {
					t.Errorf("step %d loss %.9g, PyTorch %.9g: relative %.3g, want <= %g", i+1, loss, want[i], e, lossTol)
				}
			}
			f.checkWeights(t, tr, init, tc.run, tc.tol, 0.01)
		})
	}
}
