package tfrun_test

import (
	"context"
	"fmt"
	"log"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/tfrun"
)

// Example trains MobileNetV2 at 32 px for one step from seeded weights and
// evaluates it. It needs libtensorflow, so it is compiled but not run by go
// test.
func Example() {
	ctx := context.Background()
	cfg := recipe.Default()
	cfg.Model, cfg.Head = "mobilenet_v2", ""
	cfg.ImageSize, cfg.Classes = 32, 3
	tr, err := tfrun.New(ctx, cfg, nil) // nil: every tensor seeded from cfg.Seed
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	b := &dataset.Batch{X: make([]float32, 2*32*32*3), Labels: []int32{0, 2}, N: 2, H: 32, W: 32, C: 3}
	loss, _, err := tr.TrainStep(ctx, b)
	if err != nil {
		log.Fatal(err)
	}
	_, correct, err := tr.Evaluate(ctx, b)
	if err != nil {
		log.Fatal(err)
	}
	info := tr.Info()
	fmt.Printf("%s %s on %s: loss %.3f, %d/%d correct\n", info.Framework, info.Version, info.Device, loss, correct, b.N)
}
