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
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/weights"
)

var (
	soak  = flag.Bool("soak", false, "run the 1000-step long-run test")
	steps = flag.Int("soak-steps", 1000, "training steps per framework")
)

type stepper interface {
	TrainStep(context.Context, *dataset.Batch) (float64, int, error)
	Close() error
}

// drivers are the two frameworks, by their registered names.
var drivers = []struct {
	name string
	new  func(context.Context, recipe.Config, []*weights.Tensor) (stepper, error)
}{
	{torchrun.Framework, func(ctx context.Context, c recipe.Config, init []*weights.Tensor) (stepper, error) {
		return torchrun.New(ctx, c, init)
	}},
	{tfrun.Framework, func(ctx context.Context, c recipe.Config, init []*weights.Tensor) (stepper, error) {
		return tfrun.New(ctx, c, init)
	}},
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
	const S, classes = 32, 3
	c := recipe.Default()
	c.Model, c.ImageSize, c.Classes, c.Hidden, c.LR = "vgg16", S, classes, 64, 0.001
	batch := reftest.Input(8, S)
	for i := range batch.Labels {
		batch.Labels[i] = int32(i % classes)
	}
	for _, d := range drivers {
		fw := d.name
		t.Run(fw, func(t *testing.T) {
			tr, err := d.new(context.Background(), c, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			warm := *steps / 10
			var rssWarm, rssPeakAfter, rssEnd int64
			var gWarm, gMax int
			for i := 1; i <= *steps; i++ {
				if _, _, err := tr.TrainStep(context.Background(), batch); err != nil {
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
