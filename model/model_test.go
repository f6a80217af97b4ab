package model

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// TestPublishedCounts checks every model against torchvision's published
// figures at 224 px with 1000 classes: num_params and GFLOPS (which count
// multiply-accumulates) from the weights tables of torchvision 0.26's
// documentation (VGG16_Weights.IMAGENET1K_V1: 138,357,544 and 15.47;
// ResNet18_Weights: 11,689,512 and 1.81; ResNet50_Weights.IMAGENET1K_V1:
// 25,557,032 and 4.09; MobileNet_V2_Weights: 3,504,872 and 0.30;
// VGG16_BN_Weights: 138,365,992 and 15.47), and the state-dict length:
// torchvision's len(state_dict()) minus one num_batches_tracked per
// BatchNorm2d (resnet18 122 − 20, resnet50 320 − 53, mobilenet_v2 314 − 52).
func TestPublishedCounts(t *testing.T) {
	for _, c := range []struct {
		name    string
		params  int
		tensors int
		gmacs   float64
	}{
		{"vgg16", 138357544, 32, 15.47},
		{"vgg16_bn", 138365992, 84, 15.47},
		{"resnet18", 11689512, 102, 1.81},
		{"resnet50", 25557032, 267, 4.09},
		{"mobilenet_v2", 3504872, 262, 0.30},
	} {
		t.Run(c.name, func(t *testing.T) {
			n, err := Build(Spec{Name: c.name, Head: HeadTorchvision, ImageSize: 224, Classes: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if tr, _ := Count(n.Params); tr != c.params {
				t.Errorf("trainable parameters: got %d, want %d", tr, c.params)
			}
			if len(n.Params) != c.tensors {
				t.Errorf("tensors: got %d, want %d", len(n.Params), c.tensors)
			}
			base, head := n.FLOPs()
			if got := math.Round((base+head)/2e9*100) / 100; got != c.gmacs {
				t.Errorf("GMACs: got %.4f (rounded %.2f), want %.2f", (base+head)/2e9, got, c.gmacs)
			}
		})
	}
}

// TestTorchvisionNames spot-checks state-dict names and shapes against
// torchvision's modules (resnet.py, mobilenetv2.py, vgg.py).
func TestTorchvisionNames(t *testing.T) {
	for _, c := range []struct {
		model, param string
		shape        []int
	}{
		{"resnet18", "conv1.weight", []int{64, 3, 7, 7}},
		{"resnet18", "layer2.0.downsample.0.weight", []int{128, 64, 1, 1}},
		{"resnet18", "layer4.1.bn2.running_var", []int{512}},
		{"resnet18", "fc.weight", []int{10, 512}},
		{"resnet50", "layer1.0.downsample.0.weight", []int{256, 64, 1, 1}},
		{"resnet50", "layer3.5.conv2.weight", []int{256, 256, 3, 3}},
		{"resnet50", "layer4.2.conv3.weight", []int{2048, 512, 1, 1}},
		{"resnet50", "fc.bias", []int{10}},
		{"mobilenet_v2", "features.0.0.weight", []int{32, 3, 3, 3}},
		{"mobilenet_v2", "features.1.conv.0.0.weight", []int{32, 1, 3, 3}},
		{"mobilenet_v2", "features.1.conv.1.weight", []int{16, 32, 1, 1}},
		{"mobilenet_v2", "features.2.conv.1.0.weight", []int{96, 1, 3, 3}},
		{"mobilenet_v2", "features.17.conv.3.running_mean", []int{320}},
		{"mobilenet_v2", "features.18.0.weight", []int{1280, 320, 1, 1}},
		{"mobilenet_v2", "classifier.1.weight", []int{10, 1280}},
		{"vgg16_bn", "features.41.running_var", []int{512}},
		{"vgg16", "classifier.0.weight", []int{4096, 512}},
	} {
		n, err := Build(Spec{Name: c.model, ImageSize: 32, Classes: 10})
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(n.Params, func(p Param) bool { return p.Name == c.param })
		if i < 0 {
			t.Errorf("%s: no %s", c.model, c.param)
			continue
		}
		if !slices.Equal(n.Params[i].Shape, c.shape) {
			t.Errorf("%s %s: got shape %v, want %v", c.model, c.param, n.Params[i].Shape, c.shape)
		}
	}
}

// TestShapes follows the feature map through each model at 32 px: five
// stride-2 stages leave 1×1 before the head.
func TestShapes(t *testing.T) {
	for _, name := range Names() {
		n, err := Build(Spec{Name: name, ImageSize: 32, Classes: 3, Hidden: 8})
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range n.Layers {
			for _, in := range l.Inputs {
				if in >= i || in < Image {
					t.Fatalf("%s layer %d reads %d", name, i, in)
				}
			}
			if (l.Op == Add) != (len(l.Inputs) == 2) {
				t.Errorf("%s layer %d (%s): %d inputs", name, i, l.Op, len(l.Inputs))
			}
		}
		out := n.Layers[n.Output()]
		if out.Op != Linear || out.Shape != (Shape{3, 1, 1}) || !out.Head {
			t.Errorf("%s: output layer %+v", name, out)
		}
		firstHead := slices.IndexFunc(n.Layers, func(l Layer) bool { return l.Head })
		if got := n.Layers[firstHead].In; got.H != 1 || got.W != 1 {
			t.Errorf("%s: the base ends at %v, want 1×1 at 32 px", name, got)
		}
	}
}

func TestResolve(t *testing.T) {
	for _, c := range []struct {
		in   Spec
		want Spec
		err  string
	}{
		{Spec{Name: " VGG16_BN ", ImageSize: 64, Classes: 3}, Spec{Name: "vgg16_bn", Head: HeadFlatten, ImageSize: 64, Classes: 3, Hidden: DefaultHidden}, ""},
		{Spec{Name: "resnet50", ImageSize: 64, Classes: 3, Hidden: 256}, Spec{Name: "resnet50", Head: HeadTorchvision, ImageSize: 64, Classes: 3}, ""},
		{Spec{Name: "resnet50", Head: "keras", ImageSize: 64, Classes: 3}, Spec{}, `has no head "keras"`},
		{Spec{Name: "resnet34", ImageSize: 64, Classes: 3}, Spec{}, "unknown model"},
		{Spec{Name: "vgg16", ImageSize: 48, Classes: 3}, Spec{}, "multiple of 32"},
		{Spec{Name: "vgg16", ImageSize: 64, Classes: 0}, Spec{}, "classes"},
		{Spec{Name: "vgg16", ImageSize: 64, Classes: 3, Hidden: -1}, Spec{}, "hidden width"},
	} {
		got, err := Resolve(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("Resolve(%+v): got error %v, want one containing %q", c.in, err, c.err)
		case c.err == "" && err != nil:
			t.Errorf("Resolve(%+v): %v", c.in, err)
		case c.err == "" && got != c.want:
			t.Errorf("Resolve(%+v): got %+v, want %+v", c.in, got, c.want)
		}
	}
}

// TestModes checks which tensors each mode re-initialises and trains.
func TestModes(t *testing.T) {
	find := func(n *Net, name string) Param {
		i := slices.IndexFunc(n.Params, func(p Param) bool { return p.Name == name })
		if i < 0 {
			t.Fatalf("%s: no %s", n.Name, name)
		}
		return n.Params[i]
	}
	for _, c := range []struct {
		model, head, param string
		reinit             bool // in finetune and features
		features, frozenFC bool // trainable in features mode, without and with freezeLoadedHead
	}{
		{"vgg16", HeadTorchvision, "classifier.6.weight", true, true, true},
		{"vgg16", HeadTorchvision, "classifier.0.weight", false, true, false},
		{"vgg16", HeadKeras, "classifier.0.weight", true, true, true},
		{"vgg16", HeadFlatten, "features.0.weight", false, false, false},
		{"resnet50", "", "fc.weight", true, true, true},
		{"resnet50", "", "layer4.2.bn3.weight", false, false, false},
		{"mobilenet_v2", "", "classifier.1.bias", true, true, true},
		{"mobilenet_v2", "", "features.18.1.running_mean", false, false, false},
	} {
		n, err := Build(Spec{Name: c.model, Head: c.head, ImageSize: 32, Classes: 3, Hidden: 8})
		if err != nil {
			t.Fatal(err)
		}
		p := find(n, c.param)
		if got := n.Reinitialised(ModeFinetune, p); got != c.reinit {
			t.Errorf("%s %s: Reinitialised(finetune) = %t, want %t", c.model, c.param, got, c.reinit)
		}
		if n.Reinitialised(ModeScratch, p) {
			t.Errorf("%s %s: re-initialised in scratch mode", c.model, c.param)
		}
		if got := n.Trainable(ModeFeatures, false, p); got != c.features {
			t.Errorf("%s %s: Trainable(features) = %t, want %t", c.model, c.param, got, c.features)
		}
		if got := n.Trainable(ModeFeatures, true, p); got != c.frozenFC {
			t.Errorf("%s %s: Trainable(features, freeze) = %t, want %t", c.model, c.param, got, c.frozenFC)
		}
		if got, want := n.Trainable(ModeScratch, true, p), p.Kind.Trainable(); got != want {
			t.Errorf("%s %s: Trainable(scratch) = %t, want %t", c.model, c.param, got, want)
		}
	}
}

// TestAdaptivePoolBins checks torchvision's bin formula on the cases the
// heads meet: 2 → 7 (bins repeat rows) and 10 → 7 (bins overlap).
func TestAdaptivePoolBins(t *testing.T) {
	s, e := AdaptivePoolBins(2, 7)
	if !slices.Equal(s, []int{0, 0, 0, 0, 1, 1, 1}) || !slices.Equal(e, []int{1, 1, 1, 2, 2, 2, 2}) {
		t.Errorf("2→7: got %v %v", s, e)
	}
	s, e = AdaptivePoolBins(10, 7)
	if !slices.Equal(s, []int{0, 1, 2, 4, 5, 7, 8}) || !slices.Equal(e, []int{2, 3, 5, 6, 8, 9, 10}) {
		t.Errorf("10→7: got %v %v", s, e)
	}
}
