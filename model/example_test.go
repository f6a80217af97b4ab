package model_test

import (
	"fmt"

	"github.com/fwbench/fwbench/model"
)

func ExampleBuild() {
	n, err := model.Build(model.Spec{Name: "resnet50", ImageSize: 224, Classes: 1000})
	if err != nil {
		fmt.Println(err)
		return
	}
	trainable, _ := model.Count(n.Params)
	base, head := n.FLOPs()
	fmt.Println(n.Name, "head", n.Head+":", len(n.Params), "tensors,", trainable, "parameters")
	fmt.Printf("%.2f GMACs per 224 px image\n", (base+head)/2e9)
	fmt.Println(n.Params[0].Name, n.Params[0].Shape)
	// Output:
	// resnet50 head torchvision: 267 tensors, 25557032 parameters
	// 4.09 GMACs per 224 px image
	// conv1.weight [64 3 7 7]
}
