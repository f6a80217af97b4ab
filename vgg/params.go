package vgg

import (
	"fmt"
	"strconv"
)

// Kind says what a parameter tensor is, which decides its torchvision
// initialisation.
type Kind int

// The parameter kinds, in torchvision's layer terms.
const (
	ConvWeight   Kind = iota // Conv2d weight [out, in, 3, 3] (OIHW)
	ConvBias                 // Conv2d bias [out]
	LinearWeight             // Linear weight [out, in]
	LinearBias               // Linear bias [out]
	BNWeight                 // BatchNorm2d weight (gamma) [channels]
	BNBias                   // BatchNorm2d bias (beta) [channels]
	BNMean                   // BatchNorm2d running_mean buffer [channels]
	BNVar                    // BatchNorm2d running_var buffer [channels]
)

var kindNames = [...]string{"conv weight", "conv bias", "linear weight", "linear bias", "bn weight", "bn bias", "bn running mean", "bn running var"}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Trainable reports whether the optimiser updates tensors of this kind. The
// BatchNorm running statistics are buffers: they change in training mode but
// receive no gradient, and torchvision's parameter counts leave them out.
func (k Kind) Trainable() bool { return k != BNMean && k != BNVar }

// Param describes one tensor of the model's state dict in torchvision's naming
// and layout.
//
// BatchNorm2d's num_batches_tracked (an int64 scalar buffer that only counts
// steps) is not listed: no driver needs it, and fwbench's weight files hold
// float32 tensors only.
type Param struct {
	Name  string // e.g. "features.0.weight", "features.1.running_var", "classifier.6.bias"
	Shape []int  // conv OIHW [out, in, 3, 3]; linear [out, in]; bias and BN [out]
	Kind  Kind
	Head  bool // true for classifier.* (trained in "features" mode), false for the convolutional base
}

// NumElements returns the product of p.Shape.
func (p Param) NumElements() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Params lists the model's tensors, in torchvision state-dict order, for an
// imageSize×imageSize input and numClasses outputs, with torchvision's hidden
// classifier width DefaultHidden (4096).
func Params(c Config, imageSize, numClasses int) ([]Param, error) {
	return ParamsHidden(c, imageSize, numClasses, DefaultHidden)
}

// ParamsHidden is Params with a chosen width for the two hidden classifier
// layers; hidden 0 means DefaultHidden. The classifier is torchvision's
// Linear(512·(S/32)² → hidden) → ReLU → Dropout(0.5) → Linear(hidden → hidden)
// → ReLU → Dropout(0.5) → Linear(hidden → numClasses), at indices 0, 3 and 6.
func ParamsHidden(c Config, imageSize, numClasses, hidden int) ([]Param, error) {
	layers, err := c.FeatureLayers(imageSize)
	if err != nil {
		return nil, err
	}
	hidden, err = checkHead(numClasses, hidden)
	if err != nil {
		return nil, err
	}
	var ps []Param
	for _, l := range layers {
		if l.Pool {
			continue
		}
		f := "features." + strconv.Itoa(l.Index) + "."
		ps = append(ps,
			Param{Name: f + "weight", Shape: []int{l.Out, l.In, 3, 3}, Kind: ConvWeight},
			Param{Name: f + "bias", Shape: []int{l.Out}, Kind: ConvBias})
		if l.BN >= 0 {
			b := "features." + strconv.Itoa(l.BN) + "."
			ps = append(ps,
				Param{Name: b + "weight", Shape: []int{l.Out}, Kind: BNWeight},
				Param{Name: b + "bias", Shape: []int{l.Out}, Kind: BNBias},
				Param{Name: b + "running_mean", Shape: []int{l.Out}, Kind: BNMean},
				Param{Name: b + "running_var", Shape: []int{l.Out}, Kind: BNVar})
		}
	}
	in, _ := ClassifierInput(imageSize)
	for i, out := range []int{hidden, hidden, numClasses} {
		f := "classifier." + strconv.Itoa(3*i) + "."
		ps = append(ps,
			Param{Name: f + "weight", Shape: []int{out, in}, Kind: LinearWeight, Head: true},
			Param{Name: f + "bias", Shape: []int{out}, Kind: LinearBias, Head: true})
		in = out
	}
	return ps, nil
}

func checkHead(numClasses, hidden int) (int, error) {
	if numClasses < 1 || numClasses > 1<<24 {
		return 0, fmt.Errorf("vgg: %d classes: want between 1 and %d", numClasses, 1<<24)
	}
	if hidden == 0 {
		hidden = DefaultHidden
	}
	if hidden < 1 || hidden > 1<<20 {
		return 0, fmt.Errorf("vgg: hidden width %d: want between 1 and %d", hidden, 1<<20)
	}
	return hidden, nil
}

// Count returns the number of trainable elements (what torchvision's
// documentation calls num_params: weights and biases, BatchNorm weight and
// bias included) and the number of buffer elements (BatchNorm running mean
// and variance) in ps.
func Count(ps []Param) (trainable, buffers int) {
	for _, p := range ps {
		if p.Kind.Trainable() {
			trainable += p.NumElements()
		} else {
			buffers += p.NumElements()
		}
	}
	return trainable, buffers
}
