package tfrun

import (
	"context"
	"strconv"
	"testing"
)

// BenchmarkTrainStep times one training step of full VGG16 (hidden 4096,
// dropout 0.5, SGD with momentum) on a batch of 8, at 64 and 224 px, with
// all CPUs. It reports the Go-side time per step outside Session.Run
// (go-ns/step) and its share of the step (go-%).
//
//	go test ./tfrun/ -run '^$' -bench TrainStep -benchtime 3x
func BenchmarkTrainStep(b *testing.B) {
	for _, S := range []int{64, 224} {
		b.Run("vgg16/S="+strconv.Itoa(S)+"/batch=8", func(b *testing.B) {
			ctx := context.Background()
			cfg := DefaultConfig()
			cfg.ImageSize = S
			tr := mustNew(b, cfg)
			batch := synthBatch(0, 8, 3, S, 1)
			if _, err := tr.TrainStep(ctx, batch); err != nil { // warm-up: kernels, allocator
				b.Fatal(err)
			}
			go0, n0 := tr.GoOverhead()
			b.ResetTimer()
			for range b.N {
				if _, err := tr.TrainStep(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			goT, n := tr.GoOverhead()
			per := float64(goT-go0) / float64(n-n0)
			b.ReportMetric(per, "go-ns/step")
			b.ReportMetric(100*per/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "go-%")
		})
	}
}
