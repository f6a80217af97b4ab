package tfrun_test

import (
	"context"
	"fmt"
	"log"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/vgg"
)

// Example trains VGG11 at 32 px for one step and evaluates it. It needs
// libtensorflow, so it is compiled but not run by go test.
func Example() {
	ctx := context.Background()
	cfg := tfrun.DefaultConfig()
	cfg.Model = vgg.Config{Name: "vgg11"}
	cfg.ImageSize, cfg.NumClasses, cfg.Hidden = 32, 3, 64
	tr, err := tfrun.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()

	b := &dataset.Batch{X: make([]float32, 2*32*32*3), Labels: []int32{0, 2}, N: 2, H: 32, W: 32, C: 3}
	loss, err := tr.TrainStep(ctx, b)
	if err != nil {
		log.Fatal(err)
	}
	_, correct, err := tr.Evaluate(ctx, b)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s on %s: loss %.3f, %d/%d correct\n", tr.Framework(), tr.Version(), tr.Device(), loss, correct, b.N)
}
