package tfrun

import (
	"context"
	"strconv"
	"testing"

	"github.com/fwbench/fwbench/recipe"
)

// BenchmarkTrainStep times one training step on a batch of 8 with all CPUs,
// for full VGG16 (hidden 4096, dropout 0.5, SGD with momentum: recipe.Default)
// and for ResNet-18, ResNet-50 and MobileNetV2 (their torchvision heads), at
// 64 and 224 px. It reports the Go-side time per step outside Session.Run
// (go-ns/step) and its share of the step (go-%).
//
//	go test ./tfrun/ -run '^$' -bench 'TrainStep/vgg16/S=64' -benchtime 5x
func BenchmarkTrainStep(b *testing.B) {
	for _, name := range []string{"vgg16", "resnet18", "resnet50", "mobilenet_v2"} {
		for _, S := range []int{64, 224} {
			b.Run(name+"/S="+strconv.Itoa(S)+"/batch=8", func(b *testing.B) {
				ctx := context.Background()
				cfg := recipe.Default()
				cfg.Model, cfg.ImageSize = name, S
				tr := mustNew(b, cfg, nil)
				batch := synthBatch(0, 8, 3, S, 1)
				if _, _, err := tr.TrainStep(ctx, batch); err != nil { // warm-up: kernels, allocator
					b.Fatal(err)
				}
				go0, n0 := tr.GoOverhead()
				b.ResetTimer()
				for range b.N {
					if _, _, err := tr.TrainStep(ctx, batch); err != nil {
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
}
