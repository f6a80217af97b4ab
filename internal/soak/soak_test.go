package soak

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"testing"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/vgg"
)

var (
	soak  = flag.Bool("soak", false, "run the 1000-step long-run test")
	steps = flag.Int("soak-steps", 1000, "training steps per framework")
)

type stepper interface {
	TrainStep(context.Context, *dataset.Batch) (float64, error)
	Close() error
}

// TestSoak trains each framework for -soak-steps steps on one 32 px batch size and checks
// that RSS grows less than 5% after warm-up (the first 10% of steps) and that the goroutine
// count is stable (issue: long runs lose nothing).
func TestSoak(t *testing.T) {
	// The one documented exception to "skip only for a missing GPU": a run of minutes that
	// CI does not make (docs/reliability.md, Long runs).
	if testing.Short() || !*soak {
		t.Skip("soak: a long run (1000 steps per framework, ~4 min), not a short test: opt in with -args -soak")
	}
	model, _ := vgg.Parse("vgg16")
	const S, classes, hidden = 32, 3, 64
	batch := reftest.Input(8, S)
	for i := range batch.Labels {
		batch.Labels[i] = int32(i % classes)
	}
	for _, fw := range []string{compare.Torch, compare.TensorFlow} {
		t.Run(fw, func(t *testing.T) {
			var tr stepper
			var err error
			switch fw {
			case compare.Torch:
				c := torchrun.DefaultConfig()
				c.Model, c.ImageSize, c.NumClasses, c.Hidden, c.LR = model, S, classes, hidden, 0.001
				tr, err = torchrun.New(context.Background(), c)
			case compare.TensorFlow:
				c := tfrun.DefaultConfig()
				c.Model, c.ImageSize, c.NumClasses, c.Hidden, c.LR = model, S, classes, hidden, 0.001
				tr, err = tfrun.New(context.Background(), c)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			warm := *steps / 10
			var rssWarm, rssPeakAfter, rssEnd int64
			var gWarm, gMax int
			for i := 1; i <= *steps; i++ {
				if _, err := tr.TrainStep(context.Background(), batch); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if i%50 == 0 || i == warm || i == *steps {
					rss, g := compare.RSS(), runtime.NumGoroutine()
					if i == warm {
						rssWarm, gWarm = rss, g
					}
					if i > warm {
						rssPeakAfter, gMax = max(rssPeakAfter, rss), max(gMax, g)
					}
					rssEnd = rss
					t.Logf("step %4d: RSS %7.1f MiB, goroutines %d", i, float64(rss)/(1<<20), g)
				}
			}
			growth := float64(rssPeakAfter-rssWarm) / float64(rssWarm)
			t.Logf("%s: RSS after warm-up (step %d) %.1f MiB, peak after %.1f MiB, end %.1f MiB: growth %.2f%%; goroutines %d -> max %d",
				fw, warm, float64(rssWarm)/(1<<20), float64(rssPeakAfter)/(1<<20), float64(rssEnd)/(1<<20), 100*growth, gWarm, gMax)
			if growth >= 0.05 {
				t.Errorf("RSS grew %.2f%% after warm-up, want < 5%%", 100*growth)
			}
			if gMax > gWarm+2 {
				t.Errorf("goroutines: got up to %d after warm-up, want stable near %d", gMax, gWarm)
			}
			fmt.Println()
		})
	}
}
