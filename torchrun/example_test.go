package torchrun_test

import (
	"context"
	"fmt"
	"log"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/vgg"
)

// Transfer learning as the study did it: a VGG16 base loaded from torchvision
// weights, a new three-class head, trained on batches from package dataset.
// (Compile-only: it needs a weight file and a dataset.)
func Example() {
	ctx := context.Background()
	cfg := torchrun.DefaultConfig()
	cfg.Model, _ = vgg.Parse("vgg16")
	cfg.Mode = torchrun.ModeFeatures
	tr, err := torchrun.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	if err := tr.LoadWeights("vgg16-397923af.pth"); err != nil { // torchvision's file; the head is kept
		log.Fatal(err)
	}
	var batches []*dataset.Batch // from a dataset.Loader
	for _, b := range batches {
		loss, err := tr.TrainStep(ctx, b)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("loss %.4f\n", loss)
	}
	fmt.Println(tr.Framework(), tr.Version(), tr.Device())
}
