package model

import (
	"slices"
	"strconv"
	"strings"
)

// Kind says what a parameter tensor is, which decides its layout in each
// framework and its seeded initialisation.
type Kind int

// The parameter kinds, in torchvision's layer terms.
const (
	ConvWeight   Kind = iota // Conv2d weight [out, in/groups, k, k] (OIHW)
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
// and layout. BatchNorm2d's num_batches_tracked (an int64 step counter) is not
// listed: no driver needs it, and fwbench's weight files hold float32 only.
type Param struct {
	Name  string // e.g. "features.0.weight", "layer1.0.bn1.running_var", "fc.bias"
	Shape []int  // conv OIHW [out, in/groups, k, k]; linear [out, in]; bias and BN [out]
	Kind  Kind
	Head  bool // belongs to the head (trained in features mode)
	Layer int  // index of its layer in Net.Layers
}

// NumElements returns the product of p.Shape.
func (p Param) NumElements() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// params lists the layers' tensors in torchvision state-dict order: module
// registration order, which is the layers' order here.
func params(layers []Layer) []Param {
	var ps []Param
	for i, l := range layers {
		add := func(leaf string, k Kind, shape ...int) {
			ps = append(ps, Param{Name: l.Name + "." + leaf, Shape: shape, Kind: k, Head: l.Head, Layer: i})
		}
		switch l.Op {
		case Conv:
			add("weight", ConvWeight, l.Out, l.In.C/l.Groups, l.Kernel, l.Kernel)
			if l.Bias {
				add("bias", ConvBias, l.Out)
			}
		case BatchNorm:
			c := l.In.C
			add("weight", BNWeight, c)
			add("bias", BNBias, c)
			add("running_mean", BNMean, c)
			add("running_var", BNVar, c)
		case Linear:
			add("weight", LinearWeight, l.Out, l.In.C)
			add("bias", LinearBias, l.Out)
		}
	}
	return ps
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

// The training modes: what a run trains and where its initial weights come from.
const (
	ModeScratch  = "scratch"  // every tensor from the weights file, or seeded when there is none; all trained
	ModeFinetune = "finetune" // the replaced head layers seeded (see Reinitialised), the rest from the file; all trained
	ModeFeatures = "features" // as finetune, but the base is frozen (and its batch norms stay in eval mode)
)

// Modes lists the training modes.
func Modes() []string { return []string{ModeScratch, ModeFinetune, ModeFeatures} }

// layerName is the module path of a parameter name: "fc" for "fc.weight".
func layerName(p Param) string {
	for i := len(p.Name) - 1; i >= 0; i-- {
		if p.Name[i] == '.' {
			return p.Name[:i]
		}
	}
	return p.Name
}

// Reinitialised reports whether a run in mode starts p from the seed even when
// a weights file is given: the layers the study replaces (Net.Replaced). In
// scratch mode nothing is: every tensor comes from the file when there is one.
func (n *Net) Reinitialised(mode string, p Param) bool {
	return p.Head && mode != ModeScratch && slices.Contains(n.replaced, layerName(p))
}

// Trainable reports whether the optimiser updates p in mode. BatchNorm's
// running statistics are never trained (they are buffers). In features mode
// the base is frozen, and so are the head layers that came from the weights
// file when freezeLoadedHead is set (torchvision's fc6 and fc7 kept frozen).
func (n *Net) Trainable(mode string, freezeLoadedHead bool, p Param) bool {
	if !p.Kind.Trainable() {
		return false
	}
	if mode != ModeFeatures {
		return true
	}
	if !p.Head {
		return false
	}
	return !freezeLoadedHead || n.Reinitialised(mode, p)
}

// Replaces reports whether finetune and features modes replace a head layer
// whose tensors a weights file may hold under another shape, so that the
// file's tensors under the head's prefixes are ignored rather than refused.
func (n *Net) Replaces(mode string) bool { return mode != ModeScratch && len(n.replaced) > 0 }

// HeadPrefixes returns the top-level modules of the head's layers with
// tensors, each followed by "." ("classifier." for VGG and MobileNetV2, "fc."
// for ResNet): a weights file's tensors under them belong to a head, which
// finetune and features modes may replace.
func (n *Net) HeadPrefixes() []string {
	var out []string
	for _, l := range n.Layers {
		if !l.Head || (l.Op != Linear && l.Op != Conv && l.Op != BatchNorm) {
			continue
		}
		root, _, _ := strings.Cut(l.Name, ".")
		if !slices.Contains(out, root+".") {
			out = append(out, root+".")
		}
	}
	return out
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
