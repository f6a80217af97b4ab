//go:build !nohdf5

package keras

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/weights"
)

func init() {
	weights.RegisterFormat(weights.Format{
		Name:  FormatName,
		Sniff: func(head []byte) bool { return bytes.HasPrefix(head, []byte(Signature)) },
		Read:  Read,
	})
}

// readFile reads path's weight layers through HDF5 (see Read).
func readFile(path string) ([]*weights.Tensor, error) {
	end := begin()
	defer end()
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	defer f.close()
	return read(f)
}

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
		prefix := fl.module + "."
		ts = append(ts,
			&weights.Tensor{Name: prefix + "weight", Shape: []int{fl.out, fl.in, 3, 3}, Data: hwioToOIHW(k, fl.in, fl.out)},
			&weights.Tensor{Name: prefix + "bias", Shape: []int{fl.out}, Data: b})
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
