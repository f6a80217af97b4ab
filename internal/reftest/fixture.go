package reftest

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// Fixture is one reference file written by a script under scripts/reference:
// PyTorch's tensors by key and the file's metadata, with its "sums" (float64
// sums of tensors stored only in part) decoded.
type Fixture struct {
	Meta    map[string]string
	tensors map[string]*weights.Tensor
	sums    map[string]Sums
}

// Sums are a fixture's float64 sums of one tensor after a run (Sum) and of
// its change from the initial weights (DeltaSum, DeltaAbsSum).
type Sums struct {
	Sum         float64 `json:"sum"`
	DeltaSum    float64 `json:"delta_sum"`
	DeltaAbsSum float64 `json:"delta_abs_sum"`
}

// LoadFixture reads the fixture at path (slash-separated, relative to the
// test's package folder); a missing or malformed file fails the test.
func LoadFixture(tb testing.TB, path string) *Fixture {
	tb.Helper()
	ts, meta, err := weights.ReadSafetensors(filepath.FromSlash(path))
	if err != nil {
		tb.Fatalf("reference fixture: %v", err)
	}
	f := &Fixture{Meta: meta, tensors: map[string]*weights.Tensor{}}
	for _, x := range ts {
		f.tensors[x.Name] = x
	}
	if s, ok := meta["sums"]; ok {
		if err := json.Unmarshal([]byte(s), &f.sums); err != nil {
			tb.Fatalf("reference fixture %s: sums: %v", path, err)
		}
	}
	return f
}

// Tensor returns the tensor stored under key, or nil.
func (f *Fixture) Tensor(key string) *weights.Tensor { return f.tensors[key] }

// Get returns the values stored under key; a missing key fails the test.
func (f *Fixture) Get(tb testing.TB, key string) []float32 {
	tb.Helper()
	t := f.tensors[key]
	if t == nil {
		tb.Fatalf("fixture has no %s", key)
	}
	return t.Data
}

// Sums returns the sums recorded for key. A missing key, or a change whose
// absolute sum is not positive (comparisons divide by it), is an error: the
// zero value would make every comparison NaN, and NaN > tol is false.
func (f *Fixture) Sums(key string) (Sums, error) {
	s, ok := f.sums[key]
	if !ok {
		return s, fmt.Errorf("fixture has no sums for %s", key)
	}
	if !(s.DeltaAbsSum > 0) {
		return s, fmt.Errorf("fixture sums for %s: sum|Δw| = %v, want > 0", key, s.DeltaAbsSum)
	}
	return s, nil
}

// ModelFixture is one per-model reference file of
// scripts/reference/make_model_fixtures.py: the models it holds, each run on
// Input(Batch, S) with 3 classes from WeightsForNet.
type ModelFixture struct {
	Path     string // relative to a package folder one level below the repository root
	Models   []string
	Batch, S int
}

// ModelFixtures lists the per-model reference files: every model at 32 px
// on 4 images, and resnet50 and mobilenet_v2 at 64 px on 8 (where float32
// BatchNorm over 1×1 maps no longer dominates their one-step updates).
func ModelFixtures() []ModelFixture {
	return []ModelFixture{
		{"../testdata/reference/models_s32.safetensors", []string{"resnet18", "resnet50", "mobilenet_v2", "vgg11_bn"}, 4, 32},
		{"../testdata/reference/models_s64.safetensors", []string{"resnet50", "mobilenet_v2"}, 8, 64},
	}
}

// MustNet builds cfg's model (recipe.Config.Net); an error fails the test.
func MustNet(tb testing.TB, cfg recipe.Config) *model.Net {
	tb.Helper()
	n, err := cfg.Net()
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
