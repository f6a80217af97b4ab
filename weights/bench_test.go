package weights

import (
	"path/filepath"
	"testing"

	"github.com/fwbench/fwbench/model"
)

// Full-size VGG16 (224 px, 1000 classes: 138,357,544 values, 553 MB):
// go test -run='^$' -bench=VGG16 -benchtime=1x ./weights/

// vgg16 returns the Params of torchvision's VGG16 for ImageNet.
func vgg16(b *testing.B) []model.Param {
	n, err := model.Build(model.Spec{Name: "vgg16", Head: model.HeadTorchvision, ImageSize: 224, Classes: 1000})
	if err != nil {
		b.Fatal(err)
	}
	return n.Params
}

func BenchmarkInitParamsVGG16(b *testing.B) {
	ps := vgg16(b)
	for b.Loop() {
		if _, err := InitParams(ps, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSafetensorsVGG16(b *testing.B) {
	ts, err := InitParams(vgg16(b), 1)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "vgg16.safetensors")
	for b.Loop() {
		if err := WriteSafetensors(path, ts, nil); err != nil {
			b.Fatal(err)
		}
		if _, _, err := ReadSafetensors(path); err != nil {
			b.Fatal(err)
		}
	}
}
