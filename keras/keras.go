// Package keras reads and writes Keras weight files (HDF5) for fwbench's VGG
// models, mapping them onto the canonical torchvision names and layouts that
// package model describes and package weights exchanges: convolution weights OIHW
// named features.<i>.weight|bias at torchvision's indices, linear weights
// [out, in] named classifier.<k>.weight|bias.
//
// Read understands three layouts:
//
//   - Keras 2 weight files: a layer_names attribute (on the root, or on the
//     model_weights group of a whole-model .h5), one group per layer with a
//     weight_names attribute. This covers the original keras.applications
//     files (block1_conv1_W_1:0, block1_conv1_b_1:0, ...), later Keras 2
//     (block1_conv1/kernel:0) and Keras 3's legacy .h5 writer.
//   - Keras 3 .weights.h5: layers/<name>/vars/0 (kernel) and /1 (bias), where
//     <name> is the snake-case class name with a counter (conv2d, conv2d_1,
//     ..., dense, dense_1) and a nested model (keras.Sequential([VGG16(...),
//     ...])) adds a level: layers/functional/layers/conv2d.
//
// Conv2D layers, in order, become the convolutions of the plain VGG whose
// count they match (vgg11 8, vgg13 10, vgg16 13, vgg19 16), kernels HWIO ->
// OIHW. Dense layers become classifier.0, 3 (model.HeadKeras: two) and 6
// (model.HeadFlatten, Keras VGG16's fc1, fc2, predictions: three), kernels
// [in, out] -> [out, in]; the first one's input rows are permuted from Keras'
// H×W×C flattening to torch's C×H×W. Anything else with weights is an error
// that names it.
//
// WriteWeightsH5 writes the inverse: a Keras 3 .weights.h5 that
// model.load_weights reads into the model that
// scripts/reference/make_keras_fixtures.py defines (keras_model):
// keras.applications.VGG16(include_top=False, weights=None) followed by
// Flatten and the head's Dense and Dropout layers, as one functional model.
//
// The package is the only one in fwbench besides the drivers that uses cgo:
// it links the HDF5 C library (libhdf5, found through pkg-config; Debian's
// libhdf5-dev, which scripts/setup.sh installs). Importing it registers the
// format with weights.RegisterFormat, so that weights.Load reads .h5 files.
// Built with the nohdf5 tag it links no HDF5 and needs no cgo: Read and
// WriteWeightsH5 then fail with ErrNoHDF5, and nothing is registered.
//
// Files are treated as hostile where HDF5 lets us: only hard links are
// followed, dynamically loaded filter plugins are off, datasets with external
// storage are refused, and a dataset's size is checked against its storage
// and the expected VGG shape before anything is allocated. HDF5 itself is a
// C library, and a damaged file can crash it, and the process with it: with
// Debian 12's HDF5 1.10.8, about 8% of files with a few random bytes changed
// in their first 8 KiB crash inside H5Aread (a string attribute whose type
// now says variable-length points into a bogus global heap), where h5py's
// HDF5 1.14.6 reports an error. Read only files you would give to Keras; the
// fwbench command reads Keras files in a child process of itself
// (cmd/fwbench/weights_child.go), so there a crash is an exit-2 error.
package keras

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// Signature is the HDF5 format signature that starts a Keras .h5 file.
const Signature = "\x89HDF\r\n\x1a\n"

// WeightsSuffix ends the name of every file WriteWeightsH5 writes: Keras 3
// reads a file as a .weights.h5 only when its name ends so.
const WeightsSuffix = ".weights.h5"

// FormatName is the name the package registers with weights.RegisterFormat.
const FormatName = "Keras HDF5 (.h5, .weights.h5)"

// Read reads a Keras weight file (see the package comment for the layouts)
// and returns its tensors in canonical torchvision names and layouts, in
// the order of the matching plain VGG's model.Net.Params: the base, then
// classifier.0, 3 and (with three Dense layers) 6. A file with only the convolutional base (include_top=False)
// gives only features.* tensors. The caller owns the returned tensors.
func Read(path string) ([]*weights.Tensor, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("keras: %w", err)
	}
	ts, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("keras: %s: %w", path, err)
	}
	return ts, nil
}

// ErrNoHDF5 is the error of Read and WriteWeightsH5 in a binary built with the
// nohdf5 tag, which leaves the HDF5 C library out (and does not register the
// format with package weights).
var ErrNoHDF5 = errors.New("built without HDF5 (the nohdf5 build tag)")

// datasetInfo describes a dataset before its data is read.
type datasetInfo struct {
	shape    []int // nil for a scalar
	isFloat  bool
	layout   int // H5D_layout_t
	external int // external raw-data files
	storage  int64
}

// wvar is one weight dataset, located but not yet read.
type wvar struct {
	path string
	info datasetInfo
}

// wlayer is one Conv2D or Dense layer of a file: a kernel and a bias.
type wlayer struct {
	name         string // the Keras layer name where the file has one, for messages
	kernel, bias wvar
}

func (l wlayer) conv() bool { return len(l.kernel.info.shape) == 4 }

// pairs splits a layer's weights into (kernel, bias) pairs: one for a Conv2D
// or Dense layer, one per inner layer for a nested model saved by Keras 2.
func pairs(name string, vars []wvar) ([]wlayer, error) {
	if len(vars) == 0 {
		return nil, nil
	}
	bad := func() error { return notVGGLayer(name, vars) }
	if len(vars)%2 != 0 {
		return nil, bad()
	}
	var out []wlayer
	for i := 0; i < len(vars); i += 2 {
		k, b := vars[i], vars[i+1]
		ks, bs := k.info.shape, b.info.shape
		if len(bs) != 1 || (len(ks) != 4 && len(ks) != 2) || ks[len(ks)-1] != bs[0] {
			return nil, bad()
		}
		l := wlayer{name: name, kernel: k, bias: b}
		if len(vars) > 2 {
			l.name = name + "/" + strings.TrimPrefix(k.path, "/")
		}
		out = append(out, l)
	}
	return out, nil
}

// notVGGLayer is the error for a layer whose weights are not a kernel and a bias.
func notVGGLayer(name string, vars []wvar) error {
	shapes := make([]string, len(vars))
	for i, v := range vars {
		shapes[i] = fmt.Sprint(v.info.shape)
	}
	return fmt.Errorf("layer %s holds %d weights with shapes %s: fwbench reads Conv2D and Dense layers "+
		"(a kernel, then a bias) only", name, len(vars), strings.Join(shapes, " "))
}

// splitCounter splits a Keras 3 object name into its class and counter:
// "conv2d_12" is ("conv2d", 12), "dense" is ("dense", 0).
func splitCounter(name string) (string, int) {
	i := strings.LastIndexByte(name, '_')
	if i < 0 {
		return name, 0
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n < 0 || name[i+1] == '+' || name[i+1] == '-' {
		return name, 0
	}
	return name[:i], n
}

// vggByConvs maps a number of convolutions to the plain VGG that has them.
var vggByConvs = map[int]string{8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}

// baseLayer is one 3×3 convolution or 2×2 max pool of a plain VGG's base.
type baseLayer struct {
	pool    bool
	module  string // torchvision's module path: "features.<i>"
	in, out int    // a convolution's channels
}

// vggBase lists the base layers of the plain VGG name in order, from its
// model.Net: the layers before the head that are convolutions or max pools.
func vggBase(name string) ([]baseLayer, error) {
	n, err := model.Build(model.Spec{Name: name, ImageSize: 32, Classes: 1})
	if err != nil {
		return nil, err
	}
	var out []baseLayer
	for _, l := range n.Layers {
		switch {
		case l.Head:
		case l.Op == model.Conv && l.Kernel == 3 && l.Groups == 1:
			out = append(out, baseLayer{module: l.Name, in: l.In.C, out: l.Out})
		case l.Op == model.Conv:
			return nil, fmt.Errorf("%s: convolution %s is not 3×3 (Keras' VGG16 layout)", name, l.Name)
		case l.Op == model.MaxPool:
			out = append(out, baseLayer{pool: true, module: l.Name})
		}
	}
	return out, nil
}

// denseDims is one Dense layer's shape.
type denseDims struct{ in, out int }

// readPlan is what a file's layers become.
type readPlan struct {
	convs []baseLayer // the VGG's convolutions, in order
	dense []denseDims
	side  int // H = W of the base's output: the first Dense layer has 512·side² inputs
}

// planRead matches the layers' shapes to a VGG and a head.
func planRead(convs, denses []wlayer) (*readPlan, error) {
	if len(convs) == 0 {
		return nil, fmt.Errorf("no Conv2D layers (%d Dense): not a VGG", len(denses))
	}
	name, ok := vggByConvs[len(convs)]
	if !ok {
		return nil, fmt.Errorf("%d Conv2D layers (%s ... %s) match no VGG (vgg11 has 8, vgg13 10, vgg16 13, vgg19 16)",
			len(convs), convs[0].name, convs[len(convs)-1].name)
	}
	layers, err := vggBase(name)
	if err != nil {
		return nil, err
	}
	p := &readPlan{}
	for _, l := range layers {
		if !l.pool {
			p.convs = append(p.convs, l)
		}
	}
	for i, c := range convs {
		fl := p.convs[i]
		want := []int{3, 3, fl.in, fl.out}
		if !slices.Equal(c.kernel.info.shape, want) {
			return nil, fmt.Errorf("Conv2D layer %s (convolution %d of %s): kernel shape %v, want %v",
				c.name, i+1, name, c.kernel.info.shape, want)
		}
	}
	switch len(denses) {
	case 0, 2, 3:
	default:
		return nil, fmt.Errorf("%d Dense layers: want none (the base only), 2 (the keras head) or 3 (fc1, fc2, predictions)", len(denses))
	}
	for i, d := range denses {
		in, out := d.kernel.info.shape[0], d.kernel.info.shape[1]
		if i == 0 {
			side := int(math.Round(math.Sqrt(float64(in / 512))))
			if side < 1 || in != 512*side*side {
				return nil, fmt.Errorf("Dense layer %s: %d inputs, want 512·s² (the flattened s×s×512 output of the base)", d.name, in)
			}
			p.side = side
		} else if in != p.dense[i-1].out {
			return nil, fmt.Errorf("Dense layer %s: %d inputs, want %d (the outputs of %s)", d.name, in, p.dense[i-1].out, denses[i-1].name)
		}
		if out < 1 {
			return nil, fmt.Errorf("Dense layer %s: no outputs", d.name)
		}
		p.dense = append(p.dense, denseDims{in: in, out: out})
	}
	return p, nil
}

// hwioToOIHW converts a Keras convolution kernel [3, 3, in, out] to torch's
// [out, in, 3, 3].
func hwioToOIHW(k []float32, in, out int) []float32 {
	t := make([]float32, len(k))
	for h := range 3 {
		for w := range 3 {
			for i := range in {
				src := ((h*3+w)*in + i) * out
				for o := range out {
					t[((o*in+i)*3+h)*3+w] = k[src+o]
				}
			}
		}
	}
	return t
}

// oihwToHWIO is the inverse of hwioToOIHW.
func oihwToHWIO(t []float32, in, out int) []float32 {
	k := make([]float32, len(t))
	for h := range 3 {
		for w := range 3 {
			for i := range in {
				dst := ((h*3+w)*in + i) * out
				for o := range out {
					k[dst+o] = t[((o*in+i)*3+h)*3+w]
				}
			}
		}
	}
	return k
}

// torchRow returns the torch input index (C×H×W flattening) of Keras input
// row r (H×W×C flattening) of the first Dense layer after a side×side×512
// base output; with side 0 (a later layer) rows are not permuted.
func torchRow(r, side int) int {
	if side == 0 {
		return r
	}
	const c = 512
	ch, pos := r%c, r/c // r = (y·side + x)·512 + ch
	return ch*side*side + pos
}

// denseToTorch converts a Keras Dense kernel [in, out] to torch's [out, in],
// permuting the rows of the first Dense layer (side > 0) from Keras'
// flattening order to torch's.
func denseToTorch(k []float32, in, out, side int) []float32 {
	t := make([]float32, len(k))
	for r := range in {
		tr := torchRow(r, side)
		for o := range out {
			t[o*in+tr] = k[r*out+o]
		}
	}
	return t
}

// denseToKeras is the inverse of denseToTorch.
func denseToKeras(t []float32, in, out, side int) []float32 {
	k := make([]float32, len(t))
	for r := range in {
		tr := torchRow(r, side)
		for o := range out {
			k[r*out+o] = t[o*in+tr]
		}
	}
	return k
}

// WriteOptions tunes WriteWeightsH5.
type WriteOptions struct {
	// BaseOnly writes only the convolutional base, as Keras saves
	// keras.applications.VGG16(include_top=False) on its own, even when the
	// tensors hold a head.
	BaseOnly bool
}

// WriteWeightsH5 writes ts (canonical names and layouts, any order) as a Keras
// 3 .weights.h5 file: the layout, names and nesting Keras 3's save_weights
// gives the functional model keras_model of
// scripts/reference/make_keras_fixtures.py (VGG16 notop, Flatten, then the
// head's Dense and Dropout layers), so that model.load_weights(path) reads it.
// ts must be a plain (no batch norm) VGG's base with no head, model.HeadKeras
// (classifier.0, 3) or model.HeadFlatten (classifier.0, 3, 6). Kernels are
// converted to Keras' HWIO and [in, out] layouts, the first Dense layer's rows
// to Keras' H×W×C flattening. The file is replaced atomically (see
// weights.WriteFileAtomic); the same tensors always give the same bytes.
//
// path must end in ".weights.h5": Keras' load_weights chooses the loader by
// the file name and reads any other .h5 as a Keras 2 file, which this is not.
func WriteWeightsH5(path string, ts []*weights.Tensor, opt WriteOptions) error {
	if !strings.HasSuffix(path, WeightsSuffix) {
		return fmt.Errorf("keras: write %s: the name must end in %s: Keras' load_weights reads any other .h5 as a Keras 2 file",
			path, WeightsSuffix)
	}
	m, err := planWrite(ts, opt)
	if err != nil {
		return fmt.Errorf("keras: write %s: %w", path, err)
	}
	img, err := encode(m)
	if err != nil {
		return fmt.Errorf("keras: write %s: %w", path, err)
	}
	if err := weights.WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(img)
		return err
	}); err != nil {
		return fmt.Errorf("keras: %w", err)
	}
	return nil
}

// klayer is one layer of a Keras 3 file: its store path under layers/, its
// Keras name and its variables in Keras layout.
type klayer struct {
	path, name string
	vars       []*weights.Tensor
}

// kmodel is a Keras 3 file's content.
type kmodel struct {
	name   string // the model's name (the root vars group's name attribute)
	layers []klayer
}

// planWrite checks ts and lays them out as Keras stores them.
func planWrite(ts []*weights.Tensor, opt WriteOptions) (*kmodel, error) {
	byName := make(map[string]*weights.Tensor, len(ts))
	convIdx := map[int]bool{}
	var headIdx []int
	for _, t := range ts {
		if t == nil {
			return nil, errors.New("a nil tensor")
		}
		if byName[t.Name] != nil {
			return nil, fmt.Errorf("%s: duplicate", t.Name)
		}
		if t.NumElements() != len(t.Data) || len(t.Shape) == 0 {
			return nil, fmt.Errorf("%s: shape %v does not match its %d values", t.Name, t.Shape, len(t.Data))
		}
		byName[t.Name] = t
		kind, idx, leaf, ok := splitName(t.Name)
		switch {
		case !ok:
			return nil, fmt.Errorf("%s: not a VGG parameter name (features.<i>.weight|bias, classifier.<k>.weight|bias)", t.Name)
		case kind == "features" && leaf != "weight" && leaf != "bias":
			return nil, fmt.Errorf("%s: batch normalisation has no counterpart in Keras' VGG16", t.Name)
		case kind == "features" && leaf == "weight" && len(t.Shape) == 1:
			return nil, fmt.Errorf("%s: batch normalisation has no counterpart in Keras' VGG16", t.Name)
		case kind == "features" && leaf == "weight":
			convIdx[idx] = true
		case kind == "classifier" && leaf == "weight":
			headIdx = append(headIdx, idx)
		case kind == "classifier" && leaf != "bias":
			return nil, fmt.Errorf("%s: not a linear layer's weight or bias", t.Name)
		}
	}
	name, ok := vggByConvs[len(convIdx)]
	if !ok {
		return nil, fmt.Errorf("%d convolutions match no VGG (vgg11 has 8, vgg13 10, vgg16 13, vgg19 16)", len(convIdx))
	}
	features, err := vggBase(name)
	if err != nil {
		return nil, err
	}
	used := 0
	m := &kmodel{name: name}
	m.layers = append(m.layers, klayer{path: "input_layer", name: "input_layer"})
	block, conv, nconv, npool := 1, 1, 0, 0
	for _, l := range features {
		if l.pool {
			m.layers = append(m.layers, klayer{path: counted("max_pooling2d", npool), name: fmt.Sprintf("block%d_pool", block)})
			npool++
			block, conv = block+1, 1
			continue
		}
		prefix := l.module + "."
		w, b := byName[prefix+"weight"], byName[prefix+"bias"]
		if err := want(w, prefix+"weight", []int{l.out, l.in, 3, 3}); err != nil {
			return nil, fmt.Errorf("%w (%s)", err, name)
		}
		if err := want(b, prefix+"bias", []int{l.out}); err != nil {
			return nil, err
		}
		used += 2
		m.layers = append(m.layers, klayer{
			path: counted("conv2d", nconv), name: fmt.Sprintf("block%d_conv%d", block, conv),
			vars: []*weights.Tensor{
				{Name: "0", Shape: []int{3, 3, l.in, l.out}, Data: oihwToHWIO(w.Data, l.in, l.out)},
				{Name: "1", Shape: []int{l.out}, Data: b.Data},
			},
		})
		nconv++
		conv++
	}
	slices.Sort(headIdx)
	switch {
	case len(headIdx) == 0:
	case slices.Equal(headIdx, []int{0, 3}), slices.Equal(headIdx, []int{0, 3, 6}):
	default:
		return nil, fmt.Errorf("classifier layers %v: want 0 and 3 (the keras head) or 0, 3 and 6", headIdx)
	}
	if opt.BaseOnly && len(headIdx) > 0 {
		for _, t := range ts {
			if strings.HasPrefix(t.Name, "classifier.") {
				used++
			}
		}
	}
	if opt.BaseOnly || len(headIdx) == 0 {
		if used != len(ts) {
			return nil, fmt.Errorf("%d tensor(s) are not part of %s (a bias without its weight?)", len(ts)-used, name)
		}
		return m, nil
	}
	m.name = "functional"
	m.layers = append(m.layers, klayer{path: "flatten", name: "flatten"})
	in := 0
	for i, idx := range headIdx {
		prefix := "classifier." + strconv.Itoa(idx) + "."
		w, b := byName[prefix+"weight"], byName[prefix+"bias"]
		if len(w.Shape) != 2 {
			return nil, fmt.Errorf("%s: shape %v, want [out, in]", w.Name, w.Shape)
		}
		out, side := w.Shape[0], 0
		if i == 0 {
			in = w.Shape[1]
			side = int(math.Round(math.Sqrt(float64(in / 512))))
			if side < 1 || in != 512*side*side {
				return nil, fmt.Errorf("%s: %d inputs, want 512·s² (the flattened base for an image of 32·s pixels)", w.Name, in)
			}
		}
		if err := want(w, w.Name, []int{out, in}); err != nil {
			return nil, err
		}
		if err := want(b, prefix+"bias", []int{out}); err != nil {
			return nil, err
		}
		used += 2
		m.layers = append(m.layers, klayer{
			path: counted("dense", i), name: counted("dense", i),
			vars: []*weights.Tensor{
				{Name: "0", Shape: []int{in, out}, Data: denseToKeras(w.Data, in, out, side)},
				{Name: "1", Shape: []int{out}, Data: b.Data},
			},
		})
		if i < len(headIdx)-1 {
			m.layers = append(m.layers, klayer{path: counted("dropout", i), name: counted("dropout", i)})
		}
		in = out
	}
	if used != len(ts) {
		return nil, fmt.Errorf("%d tensor(s) are not part of %s with its head (a bias without its weight?)", len(ts)-used, name)
	}
	return m, nil
}

// counted returns Keras' name for the n-th object of a class: dense, dense_1, ...
func counted(class string, n int) string {
	if n == 0 {
		return class
	}
	return class + "_" + strconv.Itoa(n)
}

// splitName splits "features.3.weight" into ("features", 3, "weight").
func splitName(name string) (kind string, idx int, leaf string, ok bool) {
	parts := strings.Split(name, ".")
	if len(parts) != 3 || (parts[0] != "features" && parts[0] != "classifier") {
		return "", 0, "", false
	}
	idx, err := strconv.Atoi(parts[1])
	if err != nil || idx < 0 || strconv.Itoa(idx) != parts[1] {
		return "", 0, "", false
	}
	return parts[0], idx, parts[2], true
}

// want checks that t exists and has shape shape.
func want(t *weights.Tensor, name string, shape []int) error {
	if t == nil {
		return fmt.Errorf("%s: missing (want shape %v)", name, shape)
	}
	if !slices.Equal(t.Shape, shape) {
		return fmt.Errorf("%s: shape %v, want %v", name, t.Shape, shape)
	}
	return nil
}
