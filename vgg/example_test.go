package vgg_test

import (
	"fmt"

	"github.com/fwbench/fwbench/vgg"
)

func ExampleParams() {
	c, err := vgg.Parse("vgg16")
	if err != nil {
		fmt.Println(err)
		return
	}
	ps, err := vgg.Params(c, 224, 1000)
	if err != nil {
		fmt.Println(err)
		return
	}
	trainable, _ := vgg.Count(ps)
	fmt.Println(c, len(ps), "tensors,", trainable, "parameters")
	fmt.Println(ps[0].Name, ps[0].Shape)
	fmt.Println(ps[len(ps)-2].Name, ps[len(ps)-2].Shape)
	// Output:
	// vgg16 32 tensors, 138357544 parameters
	// features.0.weight [64 3 3 3]
	// classifier.6.weight [1000 4096]
}

func ExampleTrainFLOPs() {
	c := vgg.Config{Name: "vgg16"}
	fwd, train := vgg.TrainFLOPs(c, 224, 1000, vgg.DefaultHidden, 32)
	fmt.Printf("forward %.1f GFLOP, train step %.1f GFLOP per batch of 32\n", fwd/1e9, train/1e9)
	// Output:
	// forward 990.1 GFLOP, train step 2970.3 GFLOP per batch of 32
}
