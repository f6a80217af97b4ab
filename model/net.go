package model

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Op is what one layer computes.
type Op int

// The layer operations. Every op works on one image's C×H×W feature map (the
// drivers add the batch dimension); Flatten and the ops after it see C
// features with H = W = 1.
const (
	Conv            Op = iota // 2-D convolution, torch's Conv2d: Out, Kernel, Stride, Pad, Groups, Bias
	BatchNorm                 // torch's BatchNorm2d (eps BNEps, momentum BNMomentum)
	ReLU                      // max(x, 0)
	ReLU6                     // min(max(x, 0), 6)
	MaxPool                   // torch's MaxPool2d(Kernel, Stride, Pad): padding never wins the max
	AdaptiveAvgPool           // torch's AdaptiveAvgPool2d((Size, Size)), bins as AdaptivePoolBins
	Add                       // the elementwise sum of two inputs (a residual connection)
	Flatten                   // C×H×W to C·H·W features, in torch's C×H×W order
	Linear                    // torch's Linear: Out features, with a bias
	Dropout                   // multiply by the step's dropout mask (DropoutMask, number Mask)
)

var opNames = [...]string{"conv", "batch_norm", "relu", "relu6", "max_pool", "adaptive_avg_pool", "add", "flatten", "linear", "dropout"}

func (o Op) String() string {
	if o >= 0 && int(o) < len(opNames) {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// BatchNorm's constants, torch's BatchNorm2d defaults, used by every model
// here: running ← (1−BNMomentum)·running + BNMomentum·batch statistic.
const (
	BNEps      = 1e-5
	BNMomentum = 0.1
)

// Image is the input index of a layer that reads the image itself.
const Image = -1

// Shape is one image's feature map: channels × height × width.
type Shape struct{ C, H, W int }

// Elements returns C·H·W.
func (s Shape) Elements() int { return s.C * s.H * s.W }

// Layer is one node of a Net, in an order where every input comes first.
type Layer struct {
	Op Op
	// Name is torchvision's module path ("features.0", "layer1.0.conv1",
	// "fc"); a layer with tensors has them under Name + ".weight" and so on.
	// Layers without tensors may have an empty name.
	Name string
	// Inputs are the indices in Net.Layers of the layers this one reads, or
	// Image; Add reads two, every other op one.
	Inputs []int
	Out    int // Conv: output channels; Linear: output features
	Kernel int // Conv, MaxPool: the square kernel's side
	Stride int // Conv, MaxPool
	Pad    int // Conv, MaxPool: symmetric zero padding (MaxPool: padding never wins)
	Groups int // Conv: 1, or the input channels for a depthwise convolution
	Bias   bool
	Size   int // AdaptiveAvgPool: the output side
	Mask   int // Dropout: its number among the net's dropout layers (0, 1, ...), DropoutMask's layer
	// Head marks the classifier on top of the base: what trains in features
	// mode while the base stays frozen (and its batch norms in eval mode).
	Head bool
	// In and Shape are the input and output map of one image, filled by Build.
	In, Shape Shape
}

// Depthwise reports whether l is a depthwise convolution (one group per
// input channel).
func (l Layer) Depthwise() bool { return l.Op == Conv && l.Groups > 1 }

// Net is one model, built for an image size, a class count and a head.
type Net struct {
	Name      string // the table name: "vgg16_bn", "resnet50", "mobilenet_v2"
	Head      string // the head, resolved: never ""
	ImageSize int    // S: the input is S×S×3
	Classes   int
	Hidden    int // the hidden width of VGG's classifier; 0 for models without one
	Layers    []Layer
	// Params are the tensors, in torchvision state-dict order (without
	// BatchNorm's num_batches_tracked).
	Params []Param
	// replaced are the head layers that finetune and features modes start
	// from the seed instead of the weights file.
	replaced []string
}

// Output is the index of the last layer, whose output is the logits.
func (n *Net) Output() int { return len(n.Layers) - 1 }

// Dropouts returns the indices of the Dropout layers in mask order.
func (n *Net) Dropouts() []int {
	var out []int
	for i, l := range n.Layers {
		if l.Op == Dropout {
			out = append(out, i)
		}
	}
	return out
}

// Replaced returns the names of the head layers that finetune and features
// modes re-initialise (the study's new output layer; with VGG's keras head
// the whole head).
func (n *Net) Replaced() []string { return slices.Clone(n.replaced) }

// Spec selects a model and what it is built for.
type Spec struct {
	Name      string // a table name (Names), case and spaces ignored
	Head      string // one of Heads(Name); "" means the model's default
	ImageSize int    // S: a multiple of 32, at least 32
	Classes   int
	// Hidden is the width of VGG's hidden classifier layers (0: DefaultHidden);
	// models without hidden layers ignore it.
	Hidden int
}

// DefaultHidden is the width of torchvision's VGG hidden classifier layers.
const DefaultHidden = 4096

// Limits of a Spec. MaxImageSize keeps every element count far below int overflow.
const (
	MaxImageSize = 1 << 15
	MaxClasses   = 1 << 24
	MaxHidden    = 1 << 20
)

// entry is one row of the model table.
type entry struct {
	heads  []string // the first is the default
	hidden bool     // has hidden classifier layers whose width Spec.Hidden sets
	build  func(b *builder, name, head string, hidden, classes int)
}

var table = map[string]entry{}

// register adds a model to the table; the model files call it from init.
func register(name string, e entry) {
	if _, dup := table[name]; dup {
		panic("model: " + name + " registered twice")
	}
	table[name] = e
}

// Names returns the model names Build accepts, sorted.
func Names() []string {
	var ns []string
	for n := range table {
		ns = append(ns, n)
	}
	slices.Sort(ns)
	return ns
}

// Heads returns the heads a model accepts, its default first.
func Heads(name string) ([]string, error) {
	e, ok := table[normalise(name)]
	if !ok {
		return nil, unknown(name)
	}
	return slices.Clone(e.heads), nil
}

// HasHidden reports whether the model's head has hidden layers whose width
// Spec.Hidden sets (VGG's classifier); false for an unknown model.
func HasHidden(name string) bool { return table[normalise(name)].hidden }

func normalise(name string) string { return strings.ToLower(strings.TrimSpace(name)) }

func unknown(name string) error {
	return fmt.Errorf("model: unknown model %q (want one of %s)", name, strings.Join(Names(), ", "))
}

// Resolve checks s against the table and returns it normalised: the lower-case
// name, the head ("" becomes the default), Hidden resolved (0 becomes
// DefaultHidden for VGG, and any value 0 for models without hidden layers).
// It does not build the layers.
func Resolve(s Spec) (Spec, error) {
	s.Name = normalise(s.Name)
	e, ok := table[s.Name]
	if !ok {
		return Spec{}, unknown(s.Name)
	}
	s.Head = normalise(s.Head)
	if s.Head == "" {
		s.Head = e.heads[0]
	}
	if !slices.Contains(e.heads, s.Head) {
		return Spec{}, fmt.Errorf("model: %s has no head %q (want %s)", s.Name, s.Head, strings.Join(e.heads, " or "))
	}
	if s.ImageSize < 32 || s.ImageSize%32 != 0 || s.ImageSize > MaxImageSize {
		return Spec{}, fmt.Errorf("model: image size %d: want a multiple of 32 between 32 and %d", s.ImageSize, MaxImageSize)
	}
	if s.Classes < 1 || s.Classes > MaxClasses {
		return Spec{}, fmt.Errorf("model: %d classes: want between 1 and %d", s.Classes, MaxClasses)
	}
	switch {
	case !e.hidden:
		s.Hidden = 0
	case s.Hidden == 0:
		s.Hidden = DefaultHidden
	case s.Hidden < 1 || s.Hidden > MaxHidden:
		return Spec{}, fmt.Errorf("model: hidden width %d: want between 1 and %d", s.Hidden, MaxHidden)
	}
	return s, nil
}

// Build makes the Net that s describes.
func Build(s Spec) (*Net, error) {
	s, err := Resolve(s)
	if err != nil {
		return nil, err
	}
	in := Shape{C: 3, H: s.ImageSize, W: s.ImageSize}
	b := &builder{cur: Image, shape: in, input: in}
	table[s.Name].build(b, s.Name, s.Head, s.Hidden, s.Classes)
	if last := len(b.layers) - 1; b.err == nil && (last < 0 || b.layers[last].Op != Linear) {
		b.fail("the last layer is not a Linear")
	}
	if b.err != nil {
		return nil, fmt.Errorf("model: %s at %d px: %w", s.Name, s.ImageSize, b.err)
	}
	n := &Net{Name: s.Name, Head: s.Head, ImageSize: s.ImageSize, Classes: s.Classes, Hidden: s.Hidden,
		Layers: b.layers, replaced: b.replaced}
	n.Params = params(n.Layers)
	return n, nil
}

// builder appends layers, tracking the current layer and its output shape.
type builder struct {
	layers   []Layer
	cur      int   // the layer the next one reads by default (Image at first)
	input    Shape // the image
	shape    Shape // cur's output
	head     bool  // layers added now belong to the head
	mask     int   // the next dropout's number
	replaced []string
	err      error
}

func (b *builder) fail(format string, a ...any) {
	if b.err == nil {
		b.err = fmt.Errorf(format, a...)
	}
}

// shapeOf returns the output shape of layer i (Image: the input).
func (b *builder) shapeOf(i int) Shape {
	if i == Image {
		return b.input
	}
	return b.layers[i].Shape
}

// add appends l reading the current layer and makes it current.
func (b *builder) add(l Layer, out Shape) int {
	if l.Inputs == nil {
		l.Inputs = []int{b.cur}
	}
	l.In, l.Shape, l.Head = b.shape, out, b.head
	if out.C < 1 || out.H < 1 || out.W < 1 {
		b.fail("%s %s: the %d×%d×%d input is too small", l.Op, l.Name, b.shape.C, b.shape.H, b.shape.W)
	}
	b.layers = append(b.layers, l)
	b.cur, b.shape = len(b.layers)-1, out
	return b.cur
}

// window is torch's output side for a kernel k, stride s and padding p.
func window(in, k, s, p int) int { return (in+2*p-k)/s + 1 }

func (b *builder) conv(name string, out, k, stride, pad, groups int, bias bool) int {
	in := b.shape
	if groups != 1 && (groups != in.C || out != in.C) {
		b.fail("conv %s: %d groups over %d→%d channels: only depthwise (groups = in = out) is supported", name, groups, in.C, out)
	}
	return b.add(Layer{Op: Conv, Name: name, Out: out, Kernel: k, Stride: stride, Pad: pad, Groups: groups, Bias: bias},
		Shape{C: out, H: window(in.H, k, stride, pad), W: window(in.W, k, stride, pad)})
}

func (b *builder) batchNorm(name string) int { return b.add(Layer{Op: BatchNorm, Name: name}, b.shape) }
func (b *builder) relu() int                 { return b.add(Layer{Op: ReLU}, b.shape) }
func (b *builder) relu6() int                { return b.add(Layer{Op: ReLU6}, b.shape) }

func (b *builder) maxPool(name string, k, stride, pad int) int {
	in := b.shape
	return b.add(Layer{Op: MaxPool, Name: name, Kernel: k, Stride: stride, Pad: pad},
		Shape{C: in.C, H: window(in.H, k, stride, pad), W: window(in.W, k, stride, pad)})
}

func (b *builder) adaptiveAvgPool(name string, size int) int {
	return b.add(Layer{Op: AdaptiveAvgPool, Name: name, Size: size}, Shape{C: b.shape.C, H: size, W: size})
}

// residual adds layer a's output to the current one.
func (b *builder) residual(a int) int {
	if as := b.shapeOf(a); as != b.shape {
		b.fail("add: shapes %v and %v differ", as, b.shape)
	}
	return b.add(Layer{Op: Add, Inputs: []int{a, b.cur}}, b.shape)
}

// from makes layer i current again (a branch starts there).
func (b *builder) from(i int) {
	b.cur, b.shape = i, b.shapeOf(i)
}

func (b *builder) flatten() int {
	return b.add(Layer{Op: Flatten}, Shape{C: b.shape.Elements(), H: 1, W: 1})
}

func (b *builder) linear(name string, out int) int {
	if b.shape.H != 1 || b.shape.W != 1 {
		b.fail("linear %s: its input must be flat, got %d×%d×%d", name, b.shape.C, b.shape.H, b.shape.W)
	}
	return b.add(Layer{Op: Linear, Name: name, Out: out, Bias: true}, Shape{C: out, H: 1, W: 1})
}

func (b *builder) dropout(name string) int {
	b.mask++
	return b.add(Layer{Op: Dropout, Name: name, Mask: b.mask - 1}, b.shape)
}

// startHead marks the layers that follow as the head.
func (b *builder) startHead() { b.head = true }

// replace names the head layers that finetune and features modes re-initialise.
func (b *builder) replace(names ...string) { b.replaced = append(b.replaced, names...) }
