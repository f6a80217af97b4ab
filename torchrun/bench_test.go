package torchrun

import (
	"context"
	"runtime"
	"testing"

	"github.com/fwbench/fwbench/recipe"
	"github.com/wangkuiyi/gotorch"
)

// benchTrainStep times one full training step of model name (recipe.Default: VGG's
// hidden 4096, dropout 0.5, SGD with momentum) on a batch of 8 S×S images, on all CPUs.
func benchTrainStep(b *testing.B, name string, S int) {
	cfg := recipe.Default()
	cfg.Model, cfg.ImageSize = name, S
	tr := mustNew(b, cfg, nil)
	batch := synthBatch(0, 8, 3, S, 1)
	ctx := context.Background()
	if _, _, err := tr.TrainStep(ctx, batch); err != nil { // warm-up: oneDNN primitives, allocator
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := tr.TrainStep(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
}

func BenchmarkTrainStep32(b *testing.B)  { benchTrainStep(b, "vgg16", 32) }
func BenchmarkTrainStep64(b *testing.B)  { benchTrainStep(b, "vgg16", 64) }
func BenchmarkTrainStep224(b *testing.B) { benchTrainStep(b, "vgg16", 224) }

// BenchmarkModels64 times the other models at 64 px × 8 (the step-time axis).
func BenchmarkModels64(b *testing.B) {
	for _, name := range []string{"resnet18", "resnet50", "mobilenet_v2"} {
		b.Run(name, func(b *testing.B) { benchTrainStep(b, name, 64) })
	}
}

// BenchmarkGotorchGC measures what gotorch's memory discipline costs per training
// step: gotorch frees native tensors only through Go finalizers and so calls
// runtime.GC() (gotorch.GC) once per step. The benchmark allocates as many gotorch
// tensors as a VGG16 step creates (about 100: activations, gradients, optimizer
// temporaries) and frees them through a forced collection ("gc"), against the same
// loop without the collection ("nogc": what the hot path of torchrun does, whose
// tensors C++ destroys on return). The heap is given a realistic size first
// (a batch of 8 images at S px as Go floats, as dataset hands over), because a
// collection's cost grows with the live Go heap it must mark.
func BenchmarkGotorchGC(b *testing.B) {
	for _, S := range []int{64, 224} {
		live := synthBatch(0, 8, 3, S, 1) // live Go heap: one batch, as in a training loop
		for _, gc := range []bool{false, true} {
			name := "nogc"
			if gc {
				name = "gc"
			}
			b.Run(name+"/"+itoa(S), func(b *testing.B) {
				runtime.LockOSThread() // gotorch's GC bookkeeping is per OS thread
				defer runtime.UnlockOSThread()
				for b.Loop() {
					ts := make([]gotorch.Tensor, 0, 100)
					for range 100 {
						ts = append(ts, gotorch.Empty([]int64{8, 16}, false))
					}
					runtime.KeepAlive(ts)
					if gc {
						gotorch.GC()
					}
				}
				if gc {
					gotorch.FinishGC()
				}
				runtime.KeepAlive(live)
			})
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
