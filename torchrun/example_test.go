package torchrun_test

import (
	"context"
	"fmt"
	"log"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// Transfer learning as the study did it: torchvision's VGG16 weights, its head
// (AdaptiveAvgPool2d((7, 7)) and fc6/fc7 from the file, kept frozen), a new
// three-class output layer, trained on batches from package dataset.
// (Compile-only: it needs a weight file and a dataset.)
func Example() {
	ctx := context.Background()
	ts, err := weights.Load("vgg16-397923af.pth") // torchvision's file
	if err != nil {
		log.Fatal(err)
	}
	cfg := torchrun.DefaultConfig()
	cfg.Model, _ = vgg.Parse("vgg16")
	cfg.Mode, cfg.Head, cfg.FreezeLoadedHead = torchrun.ModeFeatures, vgg.HeadTorchvision, true
	cfg.Weights = ts // its 1000-class classifier.6 is replaced by a seeded 3-class one
	tr, err := torchrun.New(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
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
