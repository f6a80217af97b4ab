package torchrun

import (
	"context"
	"math"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// synthBatch renders images first..first+n-1 (round-robin over classes) of
// dataset.SynthImage at size S, scaled to [-1, 1] ("tf" normalisation).
func synthBatch(first, n, classes, S int, seed int64) *dataset.Batch {
	b := &dataset.Batch{X: make([]float32, 0, n*S*S*3), Labels: make([]int32, n), N: n, H: S, W: S, C: 3}
	for i := range n {
		k := first + i
		class := k % classes
		img := dataset.SynthImage(class, k/classes, S, seed)
		for y := range S {
			for x := range S {
				o := img.PixOffset(x, y)
				for c := range 3 {
					b.X = append(b.X, float32(img.Pix[o+c])/127.5-1)
				}
			}
		}
		b.Labels[i] = int32(class)
	}
	return b
}

// tinyConfig is a fast model for behaviour tests: vgg11 at 32 px with a 16-wide head,
// three classes, two threads.
func tinyConfig() recipe.Config {
	cfg := recipe.Default()
	cfg.Model, cfg.ImageSize, cfg.Classes, cfg.Hidden = "vgg11", 32, 3, 16
	cfg.Threads = 2
	return cfg
}

// mustNew makes a Trainer that the test closes at its end.
func mustNew(t testing.TB, cfg recipe.Config, init []*weights.Tensor) *Trainer {
	t.Helper()
	tr, err := New(context.Background(), cfg, init)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// mustNet builds cfg's model.
func mustNet(t testing.TB, cfg recipe.Config) *model.Net { return reftest.MustNet(t, cfg) }

// initial composes cfg's initial tensors from loaded as a caller does (weights.Initial).
func initial(t testing.TB, cfg recipe.Config, loaded []*weights.Tensor) []*weights.Tensor {
	t.Helper()
	ts, _, err := weights.Initial(loaded, mustNet(t, cfg), cfg.Mode, cfg.Seed, false)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// setWeights replaces tr's tensors with ws and clears its optimizer state (the step
// counter stays).
func setWeights(t testing.TB, tr *Trainer, ws []*weights.Tensor) {
	t.Helper()
	if err := tr.run(func() error { return tr.setWeights("test", ws) }); err != nil {
		t.Fatal(err)
	}
}

// checkSummedUpdate compares w's summed change from init with the fixture's sums
// for key: they must agree to 1% of the summed absolute change (a wrong update
// rule or a missing weight decay is off by far more).
func checkSummedUpdate(t *testing.T, f *reftest.Fixture, key string, w, init *weights.Tensor) {
	t.Helper()
	s, err := f.Sums(key)
	if err != nil {
		t.Fatal(err)
	}
	var delta float64
	for j, v := range w.Data {
		delta += float64(v) - float64(init.Data[j])
	}
	if d := math.Abs(delta - s.DeltaSum); d > 1e-2*s.DeltaAbsSum+1e-9 {
		t.Errorf("%s: summed update got %.6g, want %.6g (|diff| %.3g > 1%% of Σ|update| %.3g)", w.Name, delta, s.DeltaSum, d, s.DeltaAbsSum)
	}
}

// checkRefLogits compares logits with PyTorch's within the reference tolerances
// (refRtol, refAtol), and their deviations from the batch mean within devRtol:
// the part of the logits that decides the loss and the ranking.
func checkRefLogits(t *testing.T, got, want []float32) {
	t.Helper()
	if err := closeTo(got, want, refRtol, refAtol); err != nil {
		t.Errorf("logits: %v", err)
	}
	gd, wd := deviations(got, 3), deviations(want, 3)
	if err := closeTo(gd, wd, devRtol, devRtol*maxAbs(wd)); err != nil {
		t.Errorf("logits minus batch mean: %v", err)
	}
}
