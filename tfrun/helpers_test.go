package tfrun

import (
	"context"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// tinyConfig is a fast model for behaviour tests: vgg11 at 32 px with a
// 16-wide head, dropout 0.5, two threads (the test machine's cores).
func tinyConfig() recipe.Config {
	cfg := recipe.Default()
	cfg.Model = "vgg11"
	cfg.ImageSize, cfg.Classes, cfg.Hidden = 32, 3, 16
	cfg.Threads, cfg.InterOpThreads = 2, 2
	return cfg
}

// mustNet builds cfg's model.
func mustNet(t testing.TB, cfg recipe.Config) *model.Net { return reftest.MustNet(t, cfg) }

// mustNew starts a Trainer from init (nil: seeded) and closes it when the
// test ends.
func mustNew(t testing.TB, cfg recipe.Config, init []*weights.Tensor) *Trainer {
	t.Helper()
	tr, err := New(context.Background(), cfg, init)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// mustStep runs one training step and returns its loss.
func mustStep(t testing.TB, tr *Trainer, b *dataset.Batch) float64 {
	t.Helper()
	loss, _, err := tr.TrainStep(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	return loss
}

// synthBatch renders images first..first+n−1 (round-robin over classes) of
// dataset.SynthImage at size S, scaled to [−1, 1].
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

func mustWeights(t testing.TB, tr *Trainer) []*weights.Tensor {
	t.Helper()
	ws, err := tr.Weights()
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// sameBits reports the first tensor whose bits differ, or "".
func sameBits(a, b []*weights.Tensor) string {
	if len(a) != len(b) {
		return "tensor count"
	}
	for i := range a {
		if a[i].Name != b[i].Name || len(a[i].Data) != len(b[i].Data) {
			return a[i].Name + " (name or size)"
		}
		for j := range a[i].Data {
			if a[i].Data[j] != b[i].Data[j] && !(a[i].Data[j] != a[i].Data[j] && b[i].Data[j] != b[i].Data[j]) {
				return a[i].Name
			}
		}
	}
	return ""
}
