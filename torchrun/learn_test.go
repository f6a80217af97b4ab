package torchrun

import (
	"context"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
)

// TestLearns trains vgg11_bn at 32 px on dataset.SynthImage's first three classes
// (horizontal stripes, disc, checkerboard) and checks that the loss falls and that
// validation accuracy is clearly above chance.
//
// Threshold: 60% of 48 held-out images (29). A chance-level model gets 1/3 right on
// average, 16 of 48 with a binomial standard deviation of √(48·⅓·⅔) = 3.3 images, so
// 29 is four standard deviations above chance (P ≈ 1e-4 by luck).
func TestLearns(t *testing.T) {
	const (
		classes = 3
		S       = 32
		train   = 96 // 32 images per class
		val     = 48
		batch   = 16
		epochs  = 6
		minAcc  = 0.6
	)
	cfg := tinyConfig()
	cfg.Model, cfg.Hidden, cfg.Dropout = "vgg11_bn", 64, 0.5
	cfg.Optimizer, cfg.LR = recipe.Adam, 1e-3
	tr := mustNew(t, cfg, nil)
	ctx := context.Background()

	batches := make([]*dataset.Batch, 0, train/batch)
	for i := 0; i < train; i += batch {
		batches = append(batches, synthBatch(i, batch, classes, S, 7))
	}
	valBatch := synthBatch(train, val, classes, S, 7) // images the model never trains on

	var first, last float64
	for e := range epochs {
		var sum float64
		for _, b := range batches {
			loss, _, err := tr.TrainStep(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			sum += loss
		}
		mean := sum / float64(len(batches))
		if e == 0 {
			first = mean
		}
		last = mean
		t.Logf("epoch %d: mean training loss %.4f", e+1, mean)
	}
	if !(last < 0.8*first) {
		t.Errorf("training loss: got %.4f after %d epochs, want below 80%% of the first epoch's %.4f", last, epochs, first)
	}
	loss, correct, err := tr.Evaluate(ctx, valBatch)
	if err != nil {
		t.Fatal(err)
	}
	acc := float64(correct) / val
	t.Logf("validation: loss %.4f, accuracy %d/%d = %.2f", loss, correct, val, acc)
	if acc < minAcc {
		t.Errorf("validation accuracy: got %.2f (%d/%d), want at least %.2f (chance is 0.33)", acc, correct, val, minAcc)
	}
}
