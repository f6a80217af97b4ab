//go:build !nohdf5

package keras

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/internal/testfixture"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

var update = flag.Bool("update", false, "rewrite the export golden file "+golden+" from WriteWeightsH5")

// The fixtures' configuration (scripts/reference/make_keras_fixtures.py).
const (
	fixtureHidden  = 16
	fixtureClasses = 3
	fixturePeriod  = 1009
	golden         = "export_vgg16_flatten_s64.weights.h5.gz"
	goldenVersion  = "export_vgg16_flatten_s64.libhdf5" // the HDF5 version that wrote golden
)

// formula returns the fixtures' canonical tensors: tensor k of the Params of
// model.Spec{name, head, S, 3 classes, hidden 16} with the internal/reftest
// formula, element j taking the value of element j mod 1009
// (make_fixture.load_formula with period 1009); with baseOnly only the
// features.* tensors.
func formula(t *testing.T, name, head string, S int, baseOnly bool) []*weights.Tensor {
	t.Helper()
	n, err := model.Build(model.Spec{Name: name, Head: head, ImageSize: S, Classes: fixtureClasses, Hidden: fixtureHidden})
	if err != nil {
		t.Fatal(err)
	}
	ps := n.Params
	var out []*weights.Tensor
	for k, p := range ps {
		if baseOnly && p.Head {
			continue
		}
		period := make([]float32, min(p.NumElements(), fixturePeriod))
		std := 0.0
		if len(p.Shape) >= 2 {
			fanIn := 1
			for _, d := range p.Shape[1:] {
				fanIn *= d
			}
			std = math.Sqrt(2 / float64(fanIn))
		}
		for j := range period {
			u := reftest.U(k, j)
			if len(p.Shape) >= 2 {
				period[j] = float32(u * math.Sqrt(12) * std)
			} else {
				period[j] = float32(0.01 * u) // biases (no batch norm here)
			}
		}
		tt := &weights.Tensor{Name: p.Name, Shape: slices.Clone(p.Shape), Data: make([]float32, p.NumElements())}
		for j := range tt.Data {
			tt.Data[j] = period[j%fixturePeriod]
		}
		out = append(out, tt)
	}
	return out
}

// sameTensors reports the first difference between got and want (names in
// order, shapes, values bit for bit), or "".
func sameTensors(got, want []*weights.Tensor) string {
	if len(got) != len(want) {
		return fmt.Sprintf("got %d tensors %v, want %d %v", len(got), names(got), len(want), names(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		switch {
		case g.Name != w.Name:
			return fmt.Sprintf("tensor %d: got %s, want %s", i, g.Name, w.Name)
		case !slices.Equal(g.Shape, w.Shape):
			return fmt.Sprintf("%s: got shape %v, want %v", g.Name, g.Shape, w.Shape)
		case len(g.Data) != len(w.Data):
			return fmt.Sprintf("%s: got %d values, want %d", g.Name, len(g.Data), len(w.Data))
		}
		for j := range g.Data {
			if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
				return fmt.Sprintf("%s[%d]: got %v, want %v", g.Name, j, g.Data[j], w.Data[j])
			}
		}
	}
	return ""
}

func names(ts []*weights.Tensor) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

func TestReadFixtures(t *testing.T) {
	tests := []struct {
		file     string
		head     string
		S        int
		baseOnly bool
	}{
		// The original keras.applications layout (block1_conv1_W_1:0), base only.
		{"keras2_vgg16_notop_s32.h5.gz", model.HeadKeras, 32, true},
		// The same with fc1, fc2, predictions: three Dense layers, the flatten head.
		{"keras2_vgg16_full_s32.h5.gz", model.HeadFlatten, 32, false},
		// Keras 3's save_weights of the functional model, and nested in keras.Sequential; at
		// 64 px the first Dense layer's 2048 rows are permuted from H×W×C to C×H×W.
		{"keras3_vgg16_keras_s64.weights.h5.gz", model.HeadKeras, 64, false},
		{"keras3_vgg16_keras_s64_sequential.weights.h5.gz", model.HeadKeras, 64, false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := testfixture.Path(t, filepath.Join("testdata", tt.file))
			got, err := Read(path)
			if err != nil {
				t.Fatal(err)
			}
			// Importing the package registered the format: weights.Load reads the file too.
			loaded, err := weights.Load(path)
			if err != nil {
				t.Fatalf("weights.Load: %v", err)
			}
			if d := sameTensors(loaded, got); d != "" {
				t.Errorf("weights.Load vs Read: %s", d)
			}
			// The values Python wrote, converted back by Read, are the formula in
			// canonical layout, bit for bit.
			want := formula(t, "vgg16", tt.head, tt.S, tt.baseOnly)
			if d := sameTensors(got, want); d != "" {
				t.Error(d)
			}
			// The sidecar's hash (computed by the script from PyTorch's state dict)
			// agrees: Python and Go mean the same tensors.
			stem := tt.file[:strings.Index(tt.file, ".")]
			side, meta, err := weights.ReadSafetensors(filepath.Join("testdata", stem+".expect.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := weights.CanonicalSHA256(got), meta["canonical_sha256"]; g != w {
				t.Errorf("CanonicalSHA256: got %s, want %s (the script's)", g, w)
			}
			var wantNames []string
			if err := json.Unmarshal([]byte(meta["names"]), &wantNames); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(names(got), wantNames) {
				t.Errorf("names: got %v, want %v (the script's)", names(got), wantNames)
			}
			if l := weights.Lookup(side, "logits"); l == nil || !slices.Equal(l.Shape, []int{4, fixtureClasses}) {
				t.Errorf("sidecar: no [4, 3] logits: %v", l)
			}
			if tt.baseOnly {
				// The head the script put on the base for its logits is the formula's
				// tensors 26..29 of vgg16's Params with the keras head at 32 px, 3 classes, hidden 16.
				full := formula(t, "vgg16", tt.head, tt.S, false)
				var head []*weights.Tensor
				for _, w := range full[len(want):] {
					head = append(head, weights.Lookup(side, w.Name))
				}
				if slices.Contains(head, nil) {
					t.Fatalf("sidecar: head tensors missing: %v", names(side))
				}
				if d := sameTensors(head, full[len(want):]); d != "" {
					t.Errorf("sidecar head: %s", d)
				}
			}
		})
	}
}

func TestPermutations(t *testing.T) {
	// A convolution kernel with in = 2, out = 3 whose Keras element [h][w][i][o]
	// holds 1000h + 100w + 10i + o: torch's [o][i][h][w] must hold the same code.
	const in, out = 2, 3
	k := make([]float32, 9*in*out)
	for h := range 3 {
		for w := range 3 {
			for i := range in {
				for o := range out {
					k[((h*3+w)*in+i)*out+o] = float32(1000*h + 100*w + 10*i + o)
				}
			}
		}
	}
	oihw := hwioToOIHW(k, in, out)
	convTests := []struct {
		o, i, h, w int
		want       float32 // 1000h + 100w + 10i + o
	}{
		{0, 0, 0, 0, 0}, {2, 0, 0, 0, 2}, {0, 1, 0, 0, 10}, {0, 0, 0, 1, 100}, {0, 0, 1, 0, 1000}, {2, 1, 2, 1, 2112},
	}
	for _, tt := range convTests {
		if got := oihw[((tt.o*in+tt.i)*3+tt.h)*3+tt.w]; got != tt.want {
			t.Errorf("OIHW[%d][%d][%d][%d]: got %v, want %v", tt.o, tt.i, tt.h, tt.w, got, tt.want)
		}
	}
	if d := slices.Compare(oihwToHWIO(oihw, in, out), k); d != 0 {
		t.Error("oihwToHWIO does not invert hwioToOIHW")
	}

	// The first Dense layer after a 2×2×512 base output: Keras row r = (y·2 + x)·512 + c
	// is torch column c·4 + y·2 + x. Keras [r][o] holds 10r + o.
	const side, rows, outs = 2, 2048, 2
	dk := make([]float32, rows*outs)
	for r := range rows {
		for o := range outs {
			dk[r*outs+o] = float32(10*r + o)
		}
	}
	dt := denseToTorch(dk, rows, outs, side)
	denseTests := []struct {
		o, c, y, x int
		want       float32 // 10·((y·2 + x)·512 + c) + o
	}{
		{0, 0, 0, 0, 0},
		{1, 0, 0, 0, 1},
		{0, 1, 0, 0, 10},           // channel 1 at (0, 0): Keras row 1
		{0, 0, 0, 1, 5120},         // channel 0 at (0, 1): Keras row 512
		{0, 0, 1, 0, 10240},        // channel 0 at (1, 0): Keras row 1024
		{1, 511, 1, 1, 20471},      // the last row: 10·2047 + 1
		{0, 3, 1, 0, 10 * 1027},    // Keras row 2·512 + 3
		{1, 100, 0, 1, 10*612 + 1}, // Keras row 512 + 100
	}
	for _, tt := range denseTests {
		col := tt.c*side*side + tt.y*side + tt.x
		if got := dt[tt.o*rows+col]; got != tt.want {
			t.Errorf("torch[%d][c=%d y=%d x=%d]: got %v, want %v", tt.o, tt.c, tt.y, tt.x, got, tt.want)
		}
	}
	if slices.Compare(denseToKeras(dt, rows, outs, side), dk) != 0 {
		t.Error("denseToKeras does not invert denseToTorch")
	}
	// A later Dense layer (side 0) is a plain transpose: torch [o][r] = Keras [r][o].
	if got, want := denseToTorch([]float32{1, 2, 3, 4, 5, 6}, 3, 2, 0), []float32{1, 3, 5, 2, 4, 6}; !slices.Equal(got, want) {
		t.Errorf("transpose: got %v, want %v", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name     string
		model    string
		head     string
		S        int
		baseOnly bool // the tensors hold only the base
		opt      WriteOptions
	}{
		{"vgg11 keras head 64px", "vgg11", model.HeadKeras, 64, false, WriteOptions{}},
		{"vgg13 flatten head 96px", "vgg13", model.HeadFlatten, 96, false, WriteOptions{}},
		{"vgg19 base", "vgg19", model.HeadFlatten, 32, true, WriteOptions{}},
		{"vgg11 BaseOnly drops the head", "vgg11", model.HeadKeras, 32, false, WriteOptions{BaseOnly: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			net, err := model.Build(model.Spec{Name: tt.model, Head: tt.head, ImageSize: tt.S, Classes: 5, Hidden: 8})
			if err != nil {
				t.Fatal(err)
			}
			ts := reftest.WeightsForNet(net)
			base := ts[:slices.IndexFunc(net.Params, func(p model.Param) bool { return p.Head })]
			if tt.baseOnly {
				ts = base
			}
			want := ts
			if tt.opt.BaseOnly {
				want = base
			}
			// WriteWeightsH5 takes the tensors in any order.
			shuffled := slices.Clone(ts)
			slices.Reverse(shuffled)
			dir := t.TempDir()
			a, b := filepath.Join(dir, "a.weights.h5"), filepath.Join(dir, "b.weights.h5")
			for _, p := range []string{a, b} {
				if err := WriteWeightsH5(p, shuffled, tt.opt); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Read(a)
			if err != nil {
				t.Fatal(err)
			}
			if d := sameTensors(got, want); d != "" {
				t.Error(d)
			}
			ab, bb := must(os.ReadFile(a)), must(os.ReadFile(b))
			if !bytes.Equal(ab, bb) {
				t.Errorf("two writes of the same tensors differ (%d and %d bytes)", len(ab), len(bb))
			}
			if entries := must(os.ReadDir(dir)); len(entries) != 2 {
				t.Errorf("got %d files in the directory, want 2 (no temporary files left)", len(entries))
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestGolden checks WriteWeightsH5 against the committed golden file, which
// scripts/reference/make_keras_fixtures.py loads with Keras' model.load_weights
// into its keras_model(64, "flatten") and checks against PyTorch's logits.
// -update rewrites it (then run the script with --check-export).
func TestGolden(t *testing.T) {
	known := formula(t, "vgg16", model.HeadFlatten, 64, false)
	fresh := filepath.Join(t.TempDir(), "export.weights.h5")
	if err := WriteWeightsH5(fresh, known, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if *update {
		raw := must(os.ReadFile(fresh))
		var buf bytes.Buffer
		zw := must(gzip.NewWriterLevel(&buf, gzip.BestCompression))
		zw.Write(raw)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", golden), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", goldenVersion), []byte(libraryVersion()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote testdata/%s (%d bytes, %d unpacked); now run make_keras_fixtures.py --check-export", golden, buf.Len(), len(raw))
	}
	gold := testfixture.Path(t, filepath.Join("testdata", golden))
	for _, p := range []string{gold, fresh} {
		got, err := Read(p)
		if err != nil {
			t.Fatal(err)
		}
		if d := sameTensors(got, known); d != "" {
			t.Errorf("%s: %s", filepath.Base(p), d)
		}
	}
	// Byte equality holds only with the HDF5 release that wrote the golden file.
	wrote := strings.TrimSpace(string(must(os.ReadFile(filepath.Join("testdata", goldenVersion)))))
	if wrote != libraryVersion() {
		t.Logf("golden file written by %q, this is %q: compared tensors, not bytes", wrote, libraryVersion())
		return
	}
	if !bytes.Equal(must(os.ReadFile(gold)), must(os.ReadFile(fresh))) {
		t.Errorf("WriteWeightsH5 output differs from testdata/%s (same %s)", golden, wrote)
	}
}

// writeLayers writes a Keras 3 file with the given layers (encode's input),
// for files WriteWeightsH5 would refuse to make.
func writeLayers(t *testing.T, ls []klayer) string {
	t.Helper()
	img, err := encode(&kmodel{name: "test", layers: ls})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "test.weights.h5")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func kvars(shapes ...[]int) []*weights.Tensor {
	var out []*weights.Tensor
	for i, s := range shapes {
		n := 1
		for _, d := range s {
			n *= d
		}
		out = append(out, &weights.Tensor{Name: fmt.Sprint(i), Shape: s, Data: make([]float32, n)})
	}
	return out
}

// convs returns the Keras 3 layers of n convolutions with VGG16's shapes.
func convs(n int) []klayer {
	var ls []klayer
	in := 3
	for i, out := range []int{64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512}[:n] {
		ls = append(ls, klayer{path: counted("conv2d", i), name: fmt.Sprint("conv", i), vars: kvars([]int{3, 3, in, out}, []int{out})})
		in = out
	}
	return ls
}

func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "text.h5")
	os.WriteFile(text, []byte("this is not HDF5\n"), 0o644)
	sig := filepath.Join(dir, "signature.h5")
	os.WriteFile(sig, []byte(Signature+strings.Repeat("\x00", 100)), 0o644)

	// A valid file cut short at several places.
	whole := filepath.Join(dir, "whole.weights.h5")
	base, err := reftest.Weights(model.Spec{Name: "vgg11", Head: model.HeadKeras, ImageSize: 32, Classes: 3, Hidden: 4})
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteWeightsH5(whole, base, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	data := must(os.ReadFile(whole))
	truncated := func(n int) string {
		p := filepath.Join(dir, fmt.Sprintf("truncated%d.h5", n))
		os.WriteFile(p, data[:n], 0o644)
		return p
	}

	bn := append(convs(13), klayer{path: "batch_normalization", name: "bn", vars: kvars([]int{64}, []int{64}, []int{64}, []int{64})})
	wrongKernel := convs(13)
	wrongKernel[0].vars = kvars([]int{5, 5, 3, 64}, []int{64})
	oneDense := append(convs(13), klayer{path: "dense", name: "dense", vars: kvars([]int{512, 3}, []int{3})})
	badFlatten := append(convs(13),
		klayer{path: "dense", name: "dense", vars: kvars([]int{1000, 4}, []int{4})},
		klayer{path: "dense_1", name: "dense_1", vars: kvars([]int{4, 3}, []int{3})})
	chain := append(convs(13),
		klayer{path: "dense", name: "dense", vars: kvars([]int{512, 4}, []int{4})},
		klayer{path: "dense_1", name: "dense_1", vars: kvars([]int{5, 3}, []int{3})})
	noBias := append(convs(12), klayer{path: "conv2d_12", name: "conv12", vars: kvars([]int{3, 3, 512, 512})})

	tests := []struct {
		name string
		path string
		want string // a part of the error message
	}{
		{"not HDF5", text, "not a readable HDF5 file"},
		{"only the signature", sig, "not a readable HDF5 file"},
		{"truncated after the signature", truncated(8), "not a readable HDF5 file"},
		{"truncated to a third", truncated(len(data) / 3), "truncated file"},
		{"one byte short", truncated(len(data) - 1), "truncated file"},
		{"HDF5 without a Keras layout", writeLayersRoot(t), "no Keras layout"},
		{"7 convolutions", writeLayers(t, convs(7)), "7 Conv2D layers (conv0 (/layers/conv2d) ... conv6 (/layers/conv2d_6)) match no VGG"},
		{"a batch-norm layer", writeLayers(t, bn), "layer bn (/layers/batch_normalization) holds 4 weights"},
		{"a 5×5 kernel", writeLayers(t, wrongKernel), "kernel shape [5 5 3 64], want [3 3 3 64]"},
		{"one Dense layer", writeLayers(t, oneDense), "1 Dense layers: want none"},
		{"Dense input not 512·s²", writeLayers(t, badFlatten), "1000 inputs, want 512·s²"},
		{"Dense layers that do not chain", writeLayers(t, chain), "5 inputs, want 4"},
		{"a convolution without bias", writeLayers(t, noBias), "holds 1 weights with shapes [3 3 512 512]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts, err := Read(tt.path)
			if err == nil {
				t.Fatalf("got %d tensors and no error, want an error containing %q", len(ts), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "keras: ") {
				t.Errorf("got error %q, want one starting %q and containing %q", err, "keras: ", tt.want)
			}
		})
	}
	if _, err := Read(filepath.Join(dir, "missing.h5")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want fs.ErrNotExist", err)
	}
}

// writeLayersRoot writes an HDF5 file that is not a Keras file: one group.
func writeLayersRoot(t *testing.T) string {
	t.Helper()
	end := begin()
	f, err := createMemFile()
	if err == nil {
		var g h5obj
		g, err = f.createGroup("experiments")
		if err == nil {
			g.close()
		}
	}
	var img []byte
	if err == nil {
		img, err = f.image()
	}
	f.close()
	end()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "other.h5")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWriteErrors(t *testing.T) {
	good, err := reftest.Weights(model.Spec{Name: "vgg11", Head: model.HeadKeras, ImageSize: 32, Classes: 3, Hidden: 4})
	if err != nil {
		t.Fatal(err)
	}
	bn, err := reftest.Weights(model.Spec{Name: "vgg11_bn", Head: model.HeadKeras, ImageSize: 32, Classes: 3, Hidden: 4})
	if err != nil {
		t.Fatal(err)
	}
	without := func(name string) []*weights.Tensor {
		var out []*weights.Tensor
		for _, t := range good {
			if t.Name != name {
				out = append(out, t)
			}
		}
		return out
	}
	reshaped := func(name string, shape []int) []*weights.Tensor {
		out := slices.Clone(good)
		for i, t := range out {
			if t.Name == name {
				n := 1
				for _, d := range shape {
					n *= d
				}
				out[i] = &weights.Tensor{Name: name, Shape: shape, Data: make([]float32, n)}
			}
		}
		return out
	}
	tests := []struct {
		name string
		ts   []*weights.Tensor
		want string
		path string // the file name; "" means x.weights.h5
	}{
		{"a name Keras reads as Keras 2", good, "the name must end in .weights.h5", "model.h5"},
		{"batch norm", bn, "batch normalisation has no counterpart", ""},
		{"a missing conv bias", without("features.0.bias"), "features.0.bias: missing", ""},
		{"7 convolutions", without("features.18.weight"), "7 convolutions match no VGG", ""},
		{"classifier.3 without classifier.0", without("classifier.0.weight"), "classifier layers [3]", ""},
		{"a bias without its weight", append(slices.Clone(good), &weights.Tensor{Name: "classifier.6.bias", Shape: []int{3}, Data: make([]float32, 3)}), "not part of vgg11", ""},
		{"a misshapen kernel", reshaped("features.3.weight", []int{128, 64, 5, 5}), "features.3.weight: shape [128 64 5 5], want [128 64 3 3]", ""},
		{"a head input not 512·s²", reshaped("classifier.0.weight", []int{4, 1000}), "1000 inputs, want 512·s²", ""},
		{"a foreign name", append(slices.Clone(good), &weights.Tensor{Name: "fc.weight", Shape: []int{1}, Data: []float32{0}}), "fc.weight: not a VGG parameter name", ""},
		{"a nil tensor", append(slices.Clone(good), nil), "a nil tensor", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.weights.h5")
			if tt.path != "" {
				p = filepath.Join(t.TempDir(), tt.path)
			}
			err := WriteWeightsH5(p, tt.ts, WriteOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one containing %q", err, tt.want)
			}
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a failed write left %s (stat: %v)", p, err)
			}
		})
	}
}

func TestSplitCounter(t *testing.T) {
	tests := []struct {
		in    string
		class string
		n     int
	}{
		{"conv2d", "conv2d", 0}, {"conv2d_12", "conv2d", 12}, {"max_pooling2d_3", "max_pooling2d", 3},
		{"max_pooling2d", "max_pooling2d", 0}, {"dense_-1", "dense_-1", 0}, {"input_layer", "input_layer", 0},
	}
	for _, tt := range tests {
		if c, n := splitCounter(tt.in); c != tt.class || n != tt.n {
			t.Errorf("splitCounter(%q): got (%q, %d), want (%q, %d)", tt.in, c, n, tt.class, tt.n)
		}
	}
}
