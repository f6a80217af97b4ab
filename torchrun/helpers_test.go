package torchrun

import (
	"context"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/vgg"
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

// tinyConfig is a fast model for behaviour tests: vgg11 at 32 px with a 16-wide head.
func tinyConfig() Config {
	cfg := DefaultConfig()
	cfg.Model = vgg.Config{Name: "vgg11"}
	cfg.ImageSize, cfg.NumClasses, cfg.Hidden = 32, 3, 16
	cfg.Threads = 2
	return cfg
}

func mustNew(t testing.TB, cfg Config) *Trainer {
	t.Helper()
	tr, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}
