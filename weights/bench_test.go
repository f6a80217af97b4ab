package weights

import (
	"path/filepath"
	"testing"

	"github.com/fwbench/fwbench/vgg"
)

// Full-size VGG16 (224 px, 1000 classes: 138,357,544 values, 553 MB):
// go test -run='^$' -bench=VGG16 -benchtime=1x ./weights/

func BenchmarkInitVGG16(b *testing.B) {
	for b.Loop() {
		if _, err := InitVGG(vgg.Config{Name: "vgg16"}, 224, 1000, 0, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSafetensorsVGG16(b *testing.B) {
	ts, err := InitVGG(vgg.Config{Name: "vgg16"}, 224, 1000, 0, 1)
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
