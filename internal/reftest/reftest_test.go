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
	"github.com/fwbench/fwbench/vgg"
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
		cfg, err := vgg.Parse(tt.model)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := reftest.Weights(cfg, 32, 3, tt.hidden)
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
// (scripts/reference/make_head_fixture.py): WeightsFor gives, for every head and model,
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
		head   vgg.Head
		model  string
		params int // tensors: vgg11 has 8 convolutions (2 each, +4 with BatchNorm), plus 2 per Linear
	}{
		{vgg.HeadTorchvision, "vgg11", 16 + 6},
		{vgg.HeadTorchvision, "vgg11_bn", 48 + 6},
		{vgg.HeadKeras, "vgg11", 16 + 4},
		{vgg.HeadKeras, "vgg11_bn", 48 + 4},
	}
	for _, tt := range tests {
		key := string(tt.head) + "/" + tt.model
		cfg, err := vgg.Parse(tt.model)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := reftest.WeightsFor(cfg, tt.head, 32, 3, 16)
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
	ws, err := reftest.Weights(vgg.Config{Name: "vgg16"}, 64, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := vgg.ParamsHidden(vgg.Config{Name: "vgg16"}, 64, 10, 64)
	for i, w := range ws {
		p := ps[i]
		if len(w.Data) != p.NumElements() {
			t.Fatalf("%s: got %d values, want %d", w.Name, len(w.Data), p.NumElements())
		}
		if p.Kind != vgg.ConvWeight || len(w.Data) < 10000 {
			continue
		}
		var s2 float64
		for _, v := range w.Data {
			s2 += float64(v) * float64(v)
		}
		std := math.Sqrt(s2 / float64(len(w.Data)))
		want := math.Sqrt(2 / float64(p.Shape[1]*9)) // He: sqrt(2/fan_in)
		if math.Abs(std-want) > 0.02*want {
			t.Errorf("%s: got std %.5f, want %.5f ± 2%%", w.Name, std, want)
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
	ws, err := reftest.Weights(vgg.Config{Name: "vgg11"}, 32, 3, 16)
	if err != nil {
		panic(err)
	}
	b := ws[1] // features.0.bias: 0.01·u(1, j)
	fmt.Printf("%s %v %.6f %.6f\n", b.Name, b.Shape, b.Data[0], b.Data[1])
	// Output: features.0.bias [64] -0.005000 0.001180
}
