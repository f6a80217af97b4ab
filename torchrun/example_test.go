package torchrun_test

import (
	"context"
	"fmt"
	"log"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/weights"
)

// Transfer learning as the study did it: torchvision's VGG16 weights, its head
// (AdaptiveAvgPool2d((7, 7)) and fc6/fc7 from the file, kept frozen), a new
// three-class output layer, trained on batches from package dataset. The
// caller composes the initial tensors (weights.Initial); the Trainer takes
// them as they are. (Compile-only: it needs a weight file and a dataset.)
func Example() {
	ctx := context.Background()
	cfg := recipe.Default()
	cfg.Model, cfg.Head = "vgg16", model.HeadTorchvision
	cfg.Mode, cfg.FreezeLoadedHead = model.ModeFeatures, true
	net, err := cfg.Net()
	if err != nil {
		log.Fatal(err)
	}
	file, err := weights.Load("vgg16-397923af.pth") // torchvision's file
	if err != nil {
		log.Fatal(err)
	}
	// The file's 1000-class classifier.6 is replaced by a seeded 3-class one.
	init, _, err := weights.Initial(file, net, cfg.Mode, cfg.Seed, false)
	if err != nil {
		log.Fatal(err)
	}
	tr, err := torchrun.New(ctx, cfg, init)
	if err != nil {
		log.Fatal(err)
	}
	defer tr.Close()
	var batches []*dataset.Batch // from a dataset.Loader
	for _, b := range batches {
		loss, correct, err := tr.TrainStep(ctx, b)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("loss %.4f, %d/%d right\n", loss, correct, b.N)
	}
	info := tr.Info()
	fmt.Println(info.Framework, info.Version, info.Device)
}
