package vgg

import (
	"fmt"
	"strconv"
	"strings"
)

// Head is the classifier on top of the convolutional base. Every head names
// its Linear layers the way torchvision's nn.Sequential "classifier" does:
// Linear at index i, then ReLU at i+1 and Dropout at i+2 for a hidden layer.
type Head string

// The heads fwbench builds in both frameworks.
const (
	// HeadFlatten flattens the base's output (torch's C×H×W order, 512·(S/32)²
	// values) straight into torchvision's three Linear layers classifier.0
	// (hidden), classifier.3 (hidden) and classifier.6 (classes), with ReLU and
	// Dropout after each hidden layer. It is Keras VGG16's include_top head with
	// torchvision's dropout, and equals torchvision's head at 224 px, where the
	// base's output is already 7×7. The default.
	HeadFlatten Head = "flatten"
	// HeadTorchvision is torchvision's VGG head: AdaptiveAvgPool2d((7, 7)),
	// then classifier.0 (25088 → hidden), classifier.3 and classifier.6 as in
	// HeadFlatten. A torchvision weight file's fc6 and fc7 fit it at every
	// image size. The study's PyTorch side.
	HeadTorchvision Head = "torchvision"
	// HeadKeras is the study's Keras head: Flatten → Dense(hidden, relu)
	// (classifier.0) → Dropout → Dense(classes) (classifier.3).
	HeadKeras Head = "keras"
)

// Heads lists the heads ParseHead accepts, the default first.
func Heads() []Head { return []Head{HeadFlatten, HeadTorchvision, HeadKeras} }

// ParseHead reads a head name; "" means HeadFlatten.
func ParseHead(name string) (Head, error) {
	h := Head(strings.ToLower(strings.TrimSpace(name)))
	if h == "" {
		return HeadFlatten, nil
	}
	for _, k := range Heads() {
		if h == k {
			return h, nil
		}
	}
	return "", fmt.Errorf("vgg: unknown head %q (want flatten, torchvision or keras)", name)
}

// PoolSize is the side of torchvision's AdaptiveAvgPool2d output (7×7).
const PoolSize = 7

// AdaptivePool reports whether the head starts with AdaptiveAvgPool2d((7, 7)).
func (h Head) AdaptivePool() bool { return h == HeadTorchvision }

// HeadLayer is one Linear layer of a head, in order.
type HeadLayer struct {
	Index   int  // torchvision index in "classifier": the Linear's parameters are classifier.<Index>.weight|bias
	In, Out int  // Linear(In → Out)
	Hidden  bool // followed by ReLU and Dropout; false for the output layer (logits)
	Dropout int  // the dropout layer's number among the head's dropouts (0, 1, ...) when Hidden, else -1
}

// Layers describes the head's Linear layers for an imageSize×imageSize image,
// numClasses outputs and hidden width hidden (0 means DefaultHidden).
func (h Head) Layers(imageSize, numClasses, hidden int) ([]HeadLayer, error) {
	hidden, err := checkHead(numClasses, hidden)
	if err != nil {
		return nil, err
	}
	in, err := h.Input(imageSize)
	if err != nil {
		return nil, err
	}
	widths := []int{hidden, hidden, numClasses}
	if h == HeadKeras {
		widths = []int{hidden, numClasses}
	}
	ls := make([]HeadLayer, len(widths))
	for i, out := range widths {
		last := i == len(widths)-1
		ls[i] = HeadLayer{Index: 3 * i, In: in, Out: out, Hidden: !last, Dropout: i}
		if last {
			ls[i].Dropout = -1
		}
		in = out
	}
	return ls, nil
}

// Input returns the width of the head's first Linear layer: 512·(S/32)² for
// the flattening heads, 512·7·7 = 25088 after the adaptive pool.
func (h Head) Input(imageSize int) (int, error) {
	if _, err := ParseHead(string(h)); err != nil {
		return 0, err
	}
	if h.AdaptivePool() {
		if err := checkImageSize(imageSize); err != nil {
			return 0, err
		}
		return 512 * PoolSize * PoolSize, nil
	}
	return ClassifierInput(imageSize)
}

// ParamsFor lists the model's tensors with head h, in torchvision state-dict
// order: the base (as ParamsHidden) followed by each head layer's weight and
// bias. ParamsHidden is ParamsFor with HeadFlatten.
func ParamsFor(c Config, h Head, imageSize, numClasses, hidden int) ([]Param, error) {
	ps, err := ParamsHidden(c, imageSize, numClasses, hidden)
	if err != nil || h == HeadFlatten {
		return ps, err
	}
	ls, err := h.Layers(imageSize, numClasses, hidden)
	if err != nil {
		return nil, err
	}
	base := ps[:0]
	for _, p := range ps {
		if !p.Head {
			base = append(base, p)
		}
	}
	for _, l := range ls {
		f := "classifier." + strconv.Itoa(l.Index) + "."
		base = append(base,
			Param{Name: f + "weight", Shape: []int{l.Out, l.In}, Kind: LinearWeight, Head: true},
			Param{Name: f + "bias", Shape: []int{l.Out}, Kind: LinearBias, Head: true})
	}
	return base, nil
}

// The training modes (what a run trains and where its initial weights come from).
const (
	ModeScratch  = "scratch"  // every tensor from the weights file, or seeded when there is none; all trained
	ModeFinetune = "finetune" // the head's new layers seeded (see Reinitialised), the rest from the file; all trained
	ModeFeatures = "features" // as finetune, but the base is frozen (and BatchNorm in the base stays in eval mode)
)

// Reinitialised reports whether a run in mode with head h starts p from a
// seeded initialisation even when a weights file is given: the layers the
// study replaces. In finetune and features mode the output layer is always
// new; with HeadKeras the whole head is new (the study's Keras side puts a
// new head on VGG16's base). In scratch mode nothing is: every tensor comes
// from the file when there is one.
func Reinitialised(mode string, h Head, p Param) bool {
	if !p.Head || mode == ModeScratch {
		return false
	}
	out := "classifier." + strconv.Itoa(h.OutputIndex()) + "."
	return h == HeadKeras || p.Name == out+"weight" || p.Name == out+"bias"
}

// OutputIndex is the classifier index of h's output layer: 6, or 3 for HeadKeras.
func (h Head) OutputIndex() int {
	if h == HeadKeras {
		return 3
	}
	return 6
}

// Trainable reports whether the optimiser updates p in mode with head h.
// BatchNorm's running statistics are never trained (they are buffers). In
// features mode the base is frozen, and so are the head layers that came from
// the weights file when freezeLoadedHead is set (torchvision's fc6 and fc7
// kept frozen).
func Trainable(mode string, h Head, freezeLoadedHead bool, p Param) bool {
	if !p.Kind.Trainable() {
		return false
	}
	if mode != ModeFeatures {
		return true
	}
	if !p.Head {
		return false
	}
	return !freezeLoadedHead || Reinitialised(mode, h, p)
}

// AdaptivePoolBins returns torchvision's AdaptiveAvgPool bins for an input
// side of in and an output side of out: output cell i averages input rows
// [start[i], end[i]) with start = ⌊i·in/out⌋ and end = ⌈(i+1)·in/out⌉. Bins
// overlap when in is not a multiple of out, and repeat input rows when in <
// out (a 1×1 input is copied to all 7×7 cells).
func AdaptivePoolBins(in, out int) (start, end []int) {
	start, end = make([]int, out), make([]int, out)
	for i := range out {
		start[i] = i * in / out
		end[i] = ((i+1)*in + out - 1) / out
	}
	return start, end
}
