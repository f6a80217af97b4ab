// Package keras reads and writes Keras weight files (HDF5) for fwbench's VGG
// models, mapping them onto the canonical torchvision names and layouts that
// package vgg defines and package weights exchanges: convolution weights OIHW
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
// OIHW. Dense layers become classifier.0, 3 (vgg.HeadKeras: two) and 6
// (vgg.HeadFlatten, Keras VGG16's fc1, fc2, predictions: three), kernels
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
//
// Files are treated as hostile where HDF5 lets us: only hard links are
// followed, dynamically loaded filter plugins are off, datasets with external
// storage are refused, and a dataset's size is checked against its storage
// and the expected VGG shape before anything is allocated. HDF5 itself is a
// C library, and a damaged file can crash it, and the process with it: with
// Debian 12's HDF5 1.10.8, about 8% of files with a few random bytes changed
// in their first 8 KiB crash inside H5Aread (a string attribute whose type
// now says variable-length points into a bogus global heap), where h5py's
// HDF5 1.14.6 reports an error. Read only files you would give to Keras.
package keras

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// Signature is the HDF5 format signature that starts a Keras .h5 file.
const Signature = "\x89HDF\r\n\x1a\n"

// WeightsSuffix ends the name of every file WriteWeightsH5 writes: Keras 3
// reads a file as a .weights.h5 only when its name ends so.
const WeightsSuffix = ".weights.h5"

// FormatName is the name the package registers with weights.RegisterFormat.
const FormatName = "Keras HDF5 (.h5, .weights.h5)"

func init() {
	weights.RegisterFormat(weights.Format{
		Name:  FormatName,
		Sniff: func(head []byte) bool { return bytes.HasPrefix(head, []byte(Signature)) },
		Read:  Read,
	})
}

// Read reads a Keras weight file (see the package comment for the layouts)
// and returns its tensors in canonical torchvision names and layouts, in
// vgg.ParamsFor order: the base, then classifier.0, 3 and (with three Dense
// layers) 6. A file with only the convolutional base (include_top=False)
// gives only features.* tensors. The caller owns the returned tensors.
func Read(path string) ([]*weights.Tensor, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("keras: %w", err)
	}
	end := begin()
	defer end()
	f, err := openFile(path)
	if err != nil {
		return nil, fmt.Errorf("keras: %s: %w", path, err)
	}
	defer f.close()
	ts, err := read(f)
	if err != nil {
		return nil, fmt.Errorf("keras: %s: %w", path, err)
	}
	return ts, nil
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

func read(f h5obj) ([]*weights.Tensor, error) {
	layers, err := scan(f)
	if err != nil {
		return nil, err
	}
	var convs, denses []wlayer
	for _, l := range layers {
		if l.conv() {
			if len(denses) > 0 {
				return nil, fmt.Errorf("Conv2D layer %s comes after a Dense layer: not a VGG", l.name)
			}
			convs = append(convs, l)
		} else {
			denses = append(denses, l)
		}
	}
	p, err := planRead(convs, denses)
	if err != nil {
		return nil, err
	}
	size, err := f.fileSize()
	if err != nil {
		return nil, err
	}
	ts := make([]*weights.Tensor, 0, 2*(len(convs)+len(denses)))
	for i, l := range convs {
		fl := p.convs[i]
		k, b, err := readPair(f, l, size)
		if err != nil {
			return nil, err
		}
		prefix := "features." + strconv.Itoa(fl.Index) + "."
		ts = append(ts,
			&weights.Tensor{Name: prefix + "weight", Shape: []int{fl.Out, fl.In, 3, 3}, Data: hwioToOIHW(k, fl.In, fl.Out)},
			&weights.Tensor{Name: prefix + "bias", Shape: []int{fl.Out}, Data: b})
	}
	for i, l := range denses {
		d := p.dense[i]
		k, b, err := readPair(f, l, size)
		if err != nil {
			return nil, err
		}
		side := 0
		if i == 0 {
			side = p.side
		}
		prefix := "classifier." + strconv.Itoa(3*i) + "."
		ts = append(ts,
			&weights.Tensor{Name: prefix + "weight", Shape: []int{d.out, d.in}, Data: denseToTorch(k, d.in, d.out, side)},
			&weights.Tensor{Name: prefix + "bias", Shape: []int{d.out}, Data: b})
	}
	return ts, nil
}

// readPair reads a layer's kernel and bias after checking that their storage
// can hold what their shapes promise.
func readPair(f h5obj, l wlayer, fileSize int64) (kernel, bias []float32, err error) {
	kernel, err = readVar(f, l.kernel, fileSize)
	if err != nil {
		return nil, nil, fmt.Errorf("layer %s: kernel: %w", l.name, err)
	}
	bias, err = readVar(f, l.bias, fileSize)
	if err != nil {
		return nil, nil, fmt.Errorf("layer %s: bias: %w", l.name, err)
	}
	return kernel, bias, nil
}

// maxDeflateRatio is DEFLATE's largest expansion (258 bytes from 2 bits, about
// 1032:1): a chunked dataset that claims more elements than its storage could
// inflate to is refused before its buffer is allocated.
const maxDeflateRatio = 1032

func readVar(f h5obj, v wvar, fileSize int64) ([]float32, error) {
	n := 1
	for _, d := range v.info.shape {
		n *= d
	}
	switch {
	case !v.info.isFloat:
		return nil, fmt.Errorf("%s: not a floating-point dataset", v.path)
	case v.info.external != 0:
		return nil, fmt.Errorf("%s: data in external files, which a weight file never uses", v.path)
	case v.info.layout != layoutCompact && v.info.layout != layoutContiguous && v.info.layout != layoutChunked:
		return nil, fmt.Errorf("%s: storage layout %d (want compact, contiguous or chunked)", v.path, v.info.layout)
	case v.info.storage <= 0 || v.info.storage > fileSize:
		return nil, fmt.Errorf("%s: %d bytes of storage in a %d-byte file", v.path, v.info.storage, fileSize)
	case int64(n) > v.info.storage*maxDeflateRatio/4:
		return nil, fmt.Errorf("%s: %d values in %d bytes of storage", v.path, n, v.info.storage)
	}
	d, kind, err := f.open(strings.TrimPrefix(v.path, "/"))
	if err != nil {
		return nil, err
	}
	defer d.close()
	if kind != kindDataset {
		return nil, fmt.Errorf("%s: not a dataset", v.path)
	}
	out := make([]float32, n)
	if err := d.readFloat32(out); err != nil {
		return nil, err
	}
	return out, nil
}

// scan finds the file's layout and returns its weight layers in model order.
func scan(f h5obj) ([]wlayer, error) {
	if ok, err := hasList(f, "layer_names"); err != nil || ok {
		if err != nil {
			return nil, err
		}
		return scanKeras2(f)
	}
	if ok, err := f.has("model_weights"); err != nil {
		return nil, err
	} else if ok {
		g, err := f.group("model_weights")
		if err != nil {
			return nil, err
		}
		defer g.close()
		if ok, err := hasList(g, "layer_names"); err != nil {
			return nil, err
		} else if ok {
			return scanKeras2(g)
		}
	}
	if ok, err := f.has("layers"); err != nil {
		return nil, err
	} else if ok {
		return scanKeras3(f)
	}
	return nil, errors.New("no Keras layout: neither a layer_names attribute (Keras 2 .h5), " +
		"a model_weights group (Keras 2 whole model) nor a layers group (Keras 3 .weights.h5)")
}

// hasList reports whether g has the string list attribute name, whole or split
// by Keras into name0, name1, ... (it splits lists over 64 KiB).
func hasList(g h5obj, name string) (bool, error) {
	if ok, err := g.hasAttr(name); err != nil || ok {
		return ok, err
	}
	return g.hasAttr(name + "0")
}

// list reads the string list attribute name of g (see hasList).
func list(g h5obj, name string) ([]string, error) {
	ok, err := g.hasAttr(name)
	if err != nil {
		return nil, err
	}
	if ok {
		return g.stringsAttr(name)
	}
	var all []string
	for i := 0; ; i++ {
		part := name + strconv.Itoa(i)
		ok, err := g.hasAttr(part)
		if err != nil {
			return nil, err
		}
		if !ok {
			if i == 0 {
				return nil, fmt.Errorf("%s: no %s attribute", g.path, name)
			}
			return all, nil
		}
		ss, err := g.stringsAttr(part)
		if err != nil {
			return nil, err
		}
		all = append(all, ss...)
	}
}

// scanKeras2 reads the Keras 2 layout under root (the file or model_weights).
func scanKeras2(root h5obj) ([]wlayer, error) {
	names, err := list(root, "layer_names")
	if err != nil {
		return nil, err
	}
	var out []wlayer
	for _, name := range names {
		ls, err := keras2Layer(root, name)
		if err != nil {
			return nil, err
		}
		out = append(out, ls...)
	}
	return out, nil
}

func keras2Layer(root h5obj, name string) ([]wlayer, error) {
	g, err := root.group(name)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", name, err)
	}
	defer g.close()
	wnames, err := list(g, "weight_names")
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", name, err)
	}
	vars := make([]wvar, len(wnames))
	for i, wn := range wnames {
		d, kind, err := g.open(wn)
		if err != nil {
			return nil, fmt.Errorf("layer %s: weight %s: %w", name, wn, err)
		}
		if kind != kindDataset {
			d.close()
			return nil, fmt.Errorf("layer %s: weight %s is not a dataset", name, wn)
		}
		info, err := d.info()
		d.close()
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", name, err)
		}
		vars[i] = wvar{path: g.join(wn), info: info}
	}
	return pairs(name, vars)
}

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

// maxDepth bounds the nesting of Keras 3 models (a model in a model in ...).
const maxDepth = 8

// k3layer is a weight layer of a Keras 3 file with where it sits.
type k3layer struct {
	container string // the layers group holding it
	class     string // the snake-case class name from the group name: conv2d, dense
	n         int    // the counter: conv2d_12 is 12, conv2d is 0
	wlayer
}

// scanKeras3 reads the Keras 3 layout: layers/<class>[_<n>]/vars/{0,1}.
func scanKeras3(f h5obj) ([]wlayer, error) {
	var found []k3layer
	if err := walkKeras3(f, "layers", 0, &found); err != nil {
		return nil, err
	}
	// Keras numbers the layers of one class in model order, but the file does
	// not say how the classes interleave: a VGG is every Conv2D, then every
	// Dense, each class in one (possibly nested) model.
	var convs, denses []k3layer
	for _, l := range found {
		switch {
		case l.class == "conv2d" && l.conv():
			convs = append(convs, l)
		case l.class == "dense" && !l.conv():
			denses = append(denses, l)
		default:
			return nil, fmt.Errorf("layer %s (a Keras %s with a kernel of shape %v): fwbench reads Conv2D and Dense layers only",
				l.name, l.class, l.kernel.info.shape)
		}
	}
	var out []wlayer
	for _, ls := range [][]k3layer{convs, denses} {
		for _, l := range ls[min(1, len(ls)):] {
			if l.container != ls[0].container {
				return nil, fmt.Errorf("%s layers in both %s and %s: their order is ambiguous", l.class, ls[0].container, l.container)
			}
		}
		slices.SortFunc(ls, func(a, b k3layer) int { return cmp.Compare(a.n, b.n) })
		for i, l := range ls {
			if i > 0 && l.n == ls[i-1].n {
				return nil, fmt.Errorf("%s/%s: duplicate layer number", l.container, l.class)
			}
			out = append(out, l.wlayer)
		}
	}
	return out, nil
}

func walkKeras3(parent h5obj, path string, depth int, found *[]k3layer) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: models nested more than %d deep", parent.join(path), maxDepth)
	}
	g, err := parent.group(path)
	if err != nil {
		return err
	}
	defer g.close()
	names, err := g.children()
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := keras3Layer(g, name, depth, found); err != nil {
			return err
		}
	}
	return nil
}

func keras3Layer(layers h5obj, name string, depth int, found *[]k3layer) error {
	g, err := layers.group(name)
	if err != nil {
		return err
	}
	defer g.close()
	nested, err := g.has("layers")
	if err != nil {
		return err
	}
	if nested {
		if err := walkKeras3(g, "layers", depth+1, found); err != nil {
			return err
		}
	}
	ok, err := g.has("vars")
	if err != nil || !ok {
		return err
	}
	vars, err := g.group("vars")
	if err != nil {
		return err
	}
	defer vars.close()
	members, err := vars.children()
	if err != nil || len(members) == 0 {
		return err
	}
	label := g.path
	if ok, err := vars.hasAttr("name"); err == nil && ok {
		if ss, err := vars.stringsAttr("name"); err == nil && len(ss) == 1 {
			label = ss[0] + " (" + g.path + ")"
		}
	}
	if nested {
		return fmt.Errorf("model %s holds variables of its own: not a VGG", label)
	}
	ws := make([]wvar, len(members))
	for i := range members {
		d, kind, err := vars.open(strconv.Itoa(i))
		if err != nil {
			return fmt.Errorf("layer %s: variables %v are not 0..%d: %w", label, members, len(members)-1, err)
		}
		if kind != kindDataset {
			d.close()
			return fmt.Errorf("layer %s: variable %d is not a dataset", label, i)
		}
		info, err := d.info()
		d.close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", label, err)
		}
		ws[i] = wvar{path: vars.join(strconv.Itoa(i)), info: info}
	}
	if len(ws) != 2 {
		return notVGGLayer(label, ws)
	}
	ls, err := pairs(label, ws)
	if err != nil {
		return err
	}
	class, n := splitCounter(name)
	*found = append(*found, k3layer{container: layers.path, class: class, n: n, wlayer: ls[0]})
	return nil
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

// denseDims is one Dense layer's shape.
type denseDims struct{ in, out int }

// readPlan is what a file's layers become.
type readPlan struct {
	convs []vgg.Layer // the VGG's convolutions, in order
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
	cfg := vgg.Config{Name: name}
	layers, err := cfg.FeatureLayers(32)
	if err != nil {
		return nil, err
	}
	p := &readPlan{}
	for _, l := range layers {
		if !l.Pool {
			p.convs = append(p.convs, l)
		}
	}
	for i, c := range convs {
		fl := p.convs[i]
		want := []int{3, 3, fl.In, fl.Out}
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
// ts must be a plain (no batch norm) VGG's base with no head, vgg.HeadKeras
// (classifier.0, 3) or vgg.HeadFlatten (classifier.0, 3, 6). Kernels are
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
	cfg := vgg.Config{Name: name}
	features, err := cfg.FeatureLayers(32)
	if err != nil {
		return nil, err
	}
	used := 0
	m := &kmodel{name: name}
	m.layers = append(m.layers, klayer{path: "input_layer", name: "input_layer"})
	block, conv, nconv, npool := 1, 1, 0, 0
	for _, l := range features {
		if l.Pool {
			m.layers = append(m.layers, klayer{path: counted("max_pooling2d", npool), name: fmt.Sprintf("block%d_pool", block)})
			npool++
			block, conv = block+1, 1
			continue
		}
		prefix := "features." + strconv.Itoa(l.Index) + "."
		w, b := byName[prefix+"weight"], byName[prefix+"bias"]
		if err := want(w, prefix+"weight", []int{l.Out, l.In, 3, 3}); err != nil {
			return nil, fmt.Errorf("%w (%s)", err, name)
		}
		if err := want(b, prefix+"bias", []int{l.Out}); err != nil {
			return nil, err
		}
		used += 2
		m.layers = append(m.layers, klayer{
			path: counted("conv2d", nconv), name: fmt.Sprintf("block%d_conv%d", block, conv),
			vars: []*weights.Tensor{
				{Name: "0", Shape: []int{3, 3, l.In, l.Out}, Data: oihwToHWIO(w.Data, l.In, l.Out)},
				{Name: "1", Shape: []int{l.Out}, Data: b.Data},
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

// encode writes m as an HDF5 file in memory and returns its bytes.
func encode(m *kmodel) ([]byte, error) {
	end := begin()
	defer end()
	f, err := createMemFile()
	if err != nil {
		return nil, err
	}
	defer f.close()
	layers, err := f.createGroup("layers")
	if err != nil {
		return nil, err
	}
	defer layers.close()
	for _, l := range m.layers {
		if err := writeLayer(layers, l); err != nil {
			return nil, err
		}
	}
	root, err := f.createGroup("vars")
	if err != nil {
		return nil, err
	}
	defer root.close()
	if err := root.setStringAttr("name", m.name); err != nil {
		return nil, err
	}
	return f.image()
}

func writeLayer(layers h5obj, l klayer) error {
	g, err := layers.createGroup(l.path)
	if err != nil {
		return err
	}
	defer g.close()
	vars, err := g.createGroup("vars")
	if err != nil {
		return err
	}
	defer vars.close()
	if err := vars.setStringAttr("name", l.name); err != nil {
		return err
	}
	for _, v := range l.vars {
		if err := vars.writeFloat32(v.Name, v.Shape, v.Data); err != nil {
			return err
		}
	}
	return nil
}
