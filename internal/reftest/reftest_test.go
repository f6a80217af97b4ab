package reftest_test

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

const (
	fixture     = "../../testdata/reference/vgg16_s32.safetensors"
	headFixture = "../../testdata/reference/heads_s32.safetensors"
)

func sha(ts ...[]float32) string {
	h := sha256.New()
	var b [4]byte
	for _, t := range ts {
		for _, v := range t {
			binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
			h.Write(b[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestU(t *testing.T) {
	tests := []struct {
		k, j int
		want float64 // from the formula by hand: h / 2^32 - 0.5
	}{
		{0, 0, 12345.0/4294967296 - 0.5},
		{0, 1, float64(2654435761+12345)/4294967296 - 0.5},
		{1, 0, float64(40503+12345)/4294967296 - 0.5},
		// 2·2654435761 + 12345 = 5308883867 ≡ 1013916571 (mod 2^32)
		{0, 2, 1013916571.0/4294967296 - 0.5},
	}
	for _, tt := range tests {
		if got := reftest.U(tt.k, tt.j); got != tt.want {
			t.Errorf("U(%d, %d): got %v, want %v", tt.k, tt.j, got, tt.want)
		}
	}
}

// TestMatchesPythonFixture proves that Go and the Python script start from the same
// bytes: the fixture records the SHA-256 of the formula weights and input that numpy made.
func TestMatchesPythonFixture(t *testing.T) {
	_, meta, err := weights.ReadSafetensors(filepath.FromSlash(fixture))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model   string
		hidden  int
		names   string // metadata key: parameter names in order
		hashKey string // metadata key: SHA-256 of the initial weights
	}{
		{"vgg16", 32, "names", "weights_sha256"},
		{"vgg11_bn", 16, "bn_names", "bn_weights_sha256"},
	}
	for _, tt := range tests {
		// make_fixture.py's models: the flatten head, 3 classes, 32 px.
		ws, err := reftest.Weights(model.Spec{Name: tt.model, ImageSize: 32, Classes: 3, Hidden: tt.hidden})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		if err := json.Unmarshal([]byte(meta[tt.names]), &names); err != nil {
			t.Fatalf("%s: metadata %s: %v", tt.model, tt.names, err)
		}
		if len(names) != len(ws) {
			t.Fatalf("%s: got %d tensors, want %d (fixture)", tt.model, len(ws), len(names))
		}
		data := make([][]float32, len(ws))
		for i, w := range ws {
			if w.Name != names[i] {
				t.Errorf("%s: tensor %d: got %s, want %s (fixture order)", tt.model, i, w.Name, names[i])
			}
			data[i] = w.Data
		}
		if got, want := sha(data...), meta[tt.hashKey]; got != want {
			t.Errorf("%s: weights sha256: got %s, want %s (numpy)", tt.model, got, want)
		}
	}
	in := reftest.Input(4, 32)
	if got, want := sha(in.X), meta["input_sha256"]; got != want {
		t.Errorf("input sha256: got %s, want %s (numpy)", got, want)
	}
}

// TestHeadFixtureMatchesPython proves the same for the head fixture
// (scripts/reference/make_head_fixture.py): Weights gives, for every head and model,
// the tensor names in the fixture's order and the bytes whose SHA-256 numpy recorded.
func TestHeadFixtureMatchesPython(t *testing.T) {
	_, meta, err := weights.ReadSafetensors(filepath.FromSlash(headFixture))
	if err != nil {
		t.Fatal(err)
	}
	var names map[string][]string
	var hashes map[string]string
	if err := json.Unmarshal([]byte(meta["names"]), &names); err != nil {
		t.Fatalf("metadata names: %v", err)
	}
	if err := json.Unmarshal([]byte(meta["weights_sha256"]), &hashes); err != nil {
		t.Fatalf("metadata weights_sha256: %v", err)
	}
	tests := []struct {
		head   string
		model  string
		params int // tensors: vgg11 has 8 convolutions (2 each, +4 with BatchNorm), plus 2 per Linear
	}{
		{model.HeadTorchvision, "vgg11", 16 + 6},
		{model.HeadTorchvision, "vgg11_bn", 48 + 6},
		{model.HeadKeras, "vgg11", 16 + 4},
		{model.HeadKeras, "vgg11_bn", 48 + 4},
	}
	for _, tt := range tests {
		key := tt.head + "/" + tt.model
		ws, err := reftest.Weights(model.Spec{Name: tt.model, Head: tt.head, ImageSize: 32, Classes: 3, Hidden: 16})
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != tt.params || len(names[key]) != tt.params {
			t.Fatalf("%s: got %d tensors and %d fixture names, want %d", key, len(ws), len(names[key]), tt.params)
		}
		data := make([][]float32, len(ws))
		for i, w := range ws {
			if w.Name != names[key][i] {
				t.Errorf("%s: tensor %d: got %s, want %s (fixture order)", key, i, w.Name, names[key][i])
			}
			data[i] = w.Data
		}
		if got, want := sha(data...), hashes[key]; got != want {
			t.Errorf("%s: weights sha256: got %s, want %s (numpy)", key, got, want)
		}
	}
	if got, want := sha(reftest.Input(4, 32).X), meta["input_sha256"]; got != want {
		t.Errorf("input sha256: got %s, want %s (numpy)", got, want)
	}
}

func TestWeightStatistics(t *testing.T) {
	// The package formula: weights u·√12·std with std = sqrt(2/fan_in), fan_in
	// the product of the dimensions after the first (in/groups·k·k for a
	// convolution, 1·3·3 for a depthwise one); BatchNorm weight and
	// running_var 1 + 0.1·u in [0.95, 1.05); biases, BatchNorm bias and
	// running_mean 0.01·u in [−0.005, 0.005).
	specs := []model.Spec{
		{Name: "vgg16", ImageSize: 64, Classes: 10, Hidden: 64},
		{Name: "resnet18", ImageSize: 32, Classes: 10},
		{Name: "mobilenet_v2", ImageSize: 32, Classes: 10},
	}
	for _, s := range specs {
		n, err := model.Build(s)
		if err != nil {
			t.Fatal(err)
		}
		ws := reftest.WeightsForNet(n)
		if len(ws) != len(n.Params) {
			t.Fatalf("%s: got %d tensors, want %d (Params)", s.Name, len(ws), len(n.Params))
		}
		checked := 0
		for i, w := range ws {
			p := n.Params[i]
			if w.Name != p.Name || len(w.Data) != p.NumElements() {
				t.Fatalf("%s tensor %d: got %s with %d values, want %s with %d", s.Name, i, w.Name, len(w.Data), p.Name, p.NumElements())
			}
			lo, hi := float32(-0.005), float32(0.005)
			switch p.Kind {
			case model.BNWeight, model.BNVar:
				lo, hi = 0.95, 1.05
			case model.ConvWeight, model.LinearWeight:
				fanIn := 1
				for _, d := range p.Shape[1:] {
					fanIn *= d
				}
				want := math.Sqrt(2 / float64(fanIn)) // He: sqrt(2/fan_in)
				lim := float32(math.Sqrt(12) / 2 * want * (1 + 1e-6))
				lo, hi = -lim, lim
				// The sample std of n values of a uniform has a relative
				// standard error of sqrt(0.2/n): 2% is over 4 of them from
				// 10,000 values on.
				if len(w.Data) >= 10000 {
					var s2 float64
					for _, v := range w.Data {
						s2 += float64(v) * float64(v)
					}
					if std := math.Sqrt(s2 / float64(len(w.Data))); math.Abs(std-want) > 0.02*want {
						t.Errorf("%s %s: got std %.5f, want %.5f ± 2%%", s.Name, w.Name, std, want)
					}
					checked++
				}
			}
			// u·√12·std lies in [−√12/2·std, √12/2·std); the weights' bound has
			// 1e-6 of slack for float32 rounding.
			for j, v := range w.Data {
				if v < lo || v > hi {
					t.Errorf("%s %s[%d]: got %v, want in [%v, %v]", s.Name, w.Name, j, v, lo, hi)
					break
				}
			}
		}
		if checked == 0 {
			t.Errorf("%s: no weight of 10,000 values or more checked", s.Name)
		}
	}
}

func TestInput(t *testing.T) {
	b := reftest.Input(5, 32)
	if got, want := len(b.X), 5*32*32*3; got != want {
		t.Fatalf("len(X): got %d, want %d", got, want)
	}
	for i, l := range b.Labels {
		if want := int32(i % 3); l != want {
			t.Errorf("label %d: got %d, want %d", i, l, want)
		}
	}
	for j, v := range b.X {
		if v < -0.5 || v >= 0.5 {
			t.Fatalf("X[%d] = %v outside [-0.5, 0.5)", j, v)
		}
	}
}

func ExampleWeights() {
	ws, err := reftest.Weights(model.Spec{Name: "vgg11", ImageSize: 32, Classes: 3, Hidden: 16})
	if err != nil {
		panic(err)
	}
	b := ws[1] // features.0.bias: 0.01·u(1, j)
	fmt.Printf("%s %v %.6f %.6f\n", b.Name, b.Shape, b.Data[0], b.Data[1])
	// Output: features.0.bias [64] -0.005000 0.001180
}
