// Package vgg owns the VGG model description that every fwbench driver shares:
// the configuration table (VGG-11/13/16/19, with or without batch
// normalisation), the canonical torchvision parameter names and shapes, and
// analytic FLOP counts.
//
// The package is pure Go, imports only the standard library and needs no
// native library. It describes the model; it does not hold weights. Seeded
// torchvision-style initial values are made by package weights (InitVGG),
// which imports this package.
//
// The model follows torchvision.models.VGG with one deliberate difference:
// torchvision puts AdaptiveAvgPool2d((7, 7)) between the convolutional base
// and the classifier, fwbench flattens the base's output directly (as Keras'
// VGG16 does). The first classifier layer therefore has 512·(S/32)² inputs for
// an S×S image; at S = 224 that is 512·7·7 = 25088, exactly torchvision's
// shape, and at every size the flattening order is torch's C×H×W.
package vgg

import (
	"fmt"
	"strings"
)

// Pool marks a 2×2 stride-2 max-pooling layer in Config.Layers.
const Pool = -1

// DefaultHidden is the width of the two hidden classifier layers in
// torchvision's VGG (Linear(·, 4096) → ReLU → Dropout → Linear(4096, 4096)).
const DefaultHidden = 4096

// Dropout is the drop probability of the two classifier Dropout layers, as in
// torchvision's VGG (dropout=0.5).
const Dropout = 0.5

// cfgs is torchvision's cfgs table (torchvision/models/vgg.py: "A", "B", "D",
// "E"), with "M" written as Pool.
var cfgs = map[string][]int{
	"vgg11": {64, Pool, 128, Pool, 256, 256, Pool, 512, 512, Pool, 512, 512, Pool},
	"vgg13": {64, 64, Pool, 128, 128, Pool, 256, 256, Pool, 512, 512, Pool, 512, 512, Pool},
	"vgg16": {64, 64, Pool, 128, 128, Pool, 256, 256, 256, Pool, 512, 512, 512, Pool, 512, 512, 512, Pool},
	"vgg19": {64, 64, Pool, 128, 128, Pool, 256, 256, 256, 256, Pool, 512, 512, 512, 512, Pool, 512, 512, 512, 512, Pool},
}

// Names returns the model names that Parse accepts, without the "_bn"
// suffix: vgg11, vgg13, vgg16, vgg19.
func Names() []string { return []string{"vgg11", "vgg13", "vgg16", "vgg19"} }

// Config selects one VGG variant.
type Config struct {
	Name      string // "vgg11", "vgg13", "vgg16" or "vgg19"
	BatchNorm bool   // BatchNorm2d after every convolution (torchvision's *_bn models)
}

// Parse reads a model name such as "vgg16" or "vgg16_bn" (case and
// surrounding space are ignored).
func Parse(name string) (Config, error) {
	s := strings.ToLower(strings.TrimSpace(name))
	c := Config{Name: s}
	if base, ok := strings.CutSuffix(s, "_bn"); ok {
		c = Config{Name: base, BatchNorm: true}
	}
	if _, ok := cfgs[c.Name]; !ok {
		return Config{}, fmt.Errorf("vgg: unknown model %q (want vgg11, vgg13, vgg16 or vgg19, optionally with _bn)", name)
	}
	return c, nil
}

// String returns the torchvision name of the model: "vgg16" or "vgg16_bn".
func (c Config) String() string {
	if c.BatchNorm {
		return c.Name + "_bn"
	}
	return c.Name
}

// Validate reports whether c names a known model.
func (c Config) Validate() error {
	if _, ok := cfgs[c.Name]; !ok {
		return fmt.Errorf("vgg: unknown model %q (want vgg11, vgg13, vgg16 or vgg19)", c.Name)
	}
	return nil
}

// Layers returns torchvision's configuration list for the model: the output
// channels of each 3×3 convolution in order, with Pool for each max-pooling
// layer. vgg16 is 64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512,M.
// The slice is a fresh copy; it is nil for an unknown model.
func (c Config) Layers() []int {
	cfg, ok := cfgs[c.Name]
	if !ok {
		return nil
	}
	return append([]int(nil), cfg...)
}

// Layer is one convolution or pooling layer of the convolutional base, with
// the indices that torchvision's nn.Sequential "features" gives it.
type Layer struct {
	Index int  // index in torchvision's features: the Conv2d, or the MaxPool2d when Pool
	Pool  bool // a 2×2 stride-2 max pooling (BN and ReLU are -1)
	In    int  // input channels
	Out   int  // output channels (equal to In for a pool)
	BN    int  // index of the BatchNorm2d after the convolution, or -1 without batch norm
	ReLU  int  // index of the ReLU after the convolution (or after its BatchNorm2d)
	Size  int  // input height = width of this layer for an S×S image, filled by FeatureLayers
}

// FeatureLayers describes the convolutional base layer by layer, in order, for
// an imageSize×imageSize RGB input. Convolutions are 3×3, stride 1, padding 1.
func (c Config) FeatureLayers(imageSize int) ([]Layer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := checkImageSize(imageSize); err != nil {
		return nil, err
	}
	var out []Layer
	idx, in, size := 0, 3, imageSize
	for _, v := range cfgs[c.Name] {
		if v == Pool {
			out = append(out, Layer{Index: idx, Pool: true, BN: -1, ReLU: -1, In: in, Out: in, Size: size})
			idx++
			size /= 2
			continue
		}
		l := Layer{Index: idx, In: in, Out: v, BN: -1, Size: size}
		if c.BatchNorm {
			l.BN = idx + 1
			l.ReLU = idx + 2
			idx += 3
		} else {
			l.ReLU = idx + 1
			idx += 2
		}
		out = append(out, l)
		in = v
	}
	return out, nil
}

// ClassifierInput returns the number of inputs of the first classifier layer
// for an imageSize×imageSize image: 512·(imageSize/32)², 25088 at 224.
func ClassifierInput(imageSize int) (int, error) {
	if err := checkImageSize(imageSize); err != nil {
		return 0, err
	}
	s := imageSize / 32
	return 512 * s * s, nil
}

func checkImageSize(imageSize int) error {
	// 1<<15 keeps 512·(S/32)²·hidden far below int64 overflow.
	if imageSize < 32 || imageSize%32 != 0 || imageSize > 1<<15 {
		return fmt.Errorf("vgg: image size %d: want a multiple of 32 between 32 and 32768", imageSize)
	}
	return nil
}
