package weights_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// Make the shared initial weights once, write them for both drivers, and
// read them back.
func ExampleInitVGG() {
	dir, err := os.MkdirTemp("", "fwbench-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	c, _ := vgg.Parse("vgg11")
	ts, err := weights.InitVGG(c, 32, 10, 64, 42) // 32 px, 10 classes, hidden 64, seed 42
	if err != nil {
		fmt.Println(err)
		return
	}
	path := filepath.Join(dir, "init.safetensors")
	if err := weights.WriteSafetensors(path, ts, map[string]string{"model": c.String(), "seed": "42"}); err != nil {
		fmt.Println(err)
		return
	}
	back, meta, err := weights.ReadSafetensors(path)
	if err != nil {
		fmt.Println(err)
		return
	}
	ps, _ := vgg.ParamsHidden(c, 32, 10, 64)
	fmt.Println(len(back), "tensors for", meta["model"], "- shapes ok:", weights.CheckShapes(back, ps, false) == nil)
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

func ExampleWithNewHead() {
	c := vgg.Config{Name: "vgg11"}
	// Stand-in for a pretrained file: torchvision-like 1000-class head.
	pretrained, _ := weights.InitVGG(c, 32, 1000, 64, 1)
	// Features mode: keep the base, new 10-class head.
	ts, err := weights.WithNewHead(pretrained, c, 32, 10, 64, 7)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(ts), ts[len(ts)-2].Name, ts[len(ts)-2].Shape)
	// Output:
	// 22 classifier.6.weight [10 64]
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
