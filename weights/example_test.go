package weights_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// Make the shared initial weights once, write them for both drivers, and
// read them back.
func ExampleInitParams() {
	dir, err := os.MkdirTemp("", "fwbench-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	net, err := model.Build(model.Spec{Name: "vgg11", ImageSize: 32, Classes: 10, Hidden: 64})
	if err != nil {
		fmt.Println(err)
		return
	}
	ts, err := weights.InitParams(net.Params, 42) // seed 42
	if err != nil {
		fmt.Println(err)
		return
	}
	path := filepath.Join(dir, "init.safetensors")
	if err := weights.WriteSafetensors(path, ts, map[string]string{"model": net.Name, "seed": "42"}); err != nil {
		fmt.Println(err)
		return
	}
	back, meta, err := weights.ReadSafetensors(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(back), "tensors for", meta["model"], "- shapes ok:", weights.CheckShapes(back, net.Params, false) == nil)
	fmt.Println(weights.Lookup(back, "classifier.6.weight").Shape)
	// Output:
	// 22 tensors for vgg11 - shapes ok: true
	// [10 64]
}

func ExampleReadPth() {
	ts, err := weights.ReadPth("testdata/tiny_vgg.pth")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(ts[0].Name, ts[0].Shape, ts[0].Data[1])

	_, err = weights.ReadPth("testdata/evil_os_system.pth")
	var fg *weights.ForbiddenGlobalError
	fmt.Println(errors.As(err, &fg), fg.Module+"."+fg.Name)
	// Output:
	// features.0.weight [4 3 3 3] 0.0009765625
	// true os.system
}

// Fine-tune ResNet-18 on 10 classes from a file made for ImageNet's 1000:
// Initial takes every tensor from the file except the output layer fc, which
// finetune mode replaces: the file's 1000-class fc is not used.
func ExampleInitial() {
	net, err := model.Build(model.Spec{Name: "resnet18", ImageSize: 32, Classes: 10})
	if err != nil {
		fmt.Println(err)
		return
	}
	// Stand-in for a pretrained torchvision file.
	imagenet, _ := model.Build(model.Spec{Name: "resnet18", ImageSize: 32, Classes: 1000})
	pretrained, _ := weights.InitParams(imagenet.Params, 1)

	ts, prov, err := weights.Initial(pretrained, net, model.ModeFinetune, 7, false)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(ts), "tensors,", len(prov.FromFile), "from the file")
	fmt.Println("reinitialised:", prov.Reinitialised)
	fmt.Println(weights.Lookup(ts, "fc.weight").Shape)
	// Output:
	// 102 tensors, 100 from the file
	// reinitialised: [fc.weight fc.bias]
	// [10 512]
}

// Write a state dict that torch.load(path, weights_only=True) reads, and load
// it back: Load picks the format from the file's bytes, not its name, and
// removes DataParallel's "module." prefix.
func ExampleWritePth() {
	dir, err := os.MkdirTemp("", "fwbench-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	ts := []*weights.Tensor{
		{Name: "module.classifier.6.weight", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "module.classifier.6.bias", Shape: []int{2}, Data: []float32{0.5, -0.5}},
	}
	path := filepath.Join(dir, "weights.bin")
	if err := weights.WritePth(path, ts); err != nil {
		fmt.Println(err)
		return
	}
	back, err := weights.Load(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(back[0].Name, back[0].Shape, back[1].Name)
	// Output: classifier.6.weight [2 3] classifier.6.bias
}
