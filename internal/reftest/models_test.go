package reftest_test

import (
	"encoding/json"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// The per-model fixtures, written by scripts/reference/make_model_fixtures.py from
// torchvision 0.26's own modules: every model at 32 px on Input(4, 32), and
// resnet50 and mobilenet_v2 again at 64 px on Input(8, 64).
const (
	modelsFixture   = "../../testdata/reference/models_s32.safetensors"
	modelsFixture64 = "../../testdata/reference/models_s64.safetensors"
)

// modelFixtureFiles are the fixture files with the input each was made from.
var modelFixtureFiles = []struct {
	path     string
	batch, S int
}{
	{modelsFixture, 4, 32},
	{modelsFixture64, 8, 64},
}

// modelFixtures are the models of the fixture files, each as model.Build describes it.
var modelFixtures = []struct {
	file   string // the fixture file
	key    string // the fixture's prefix
	spec   model.Spec
	params int    // state-dict tensors without num_batches_tracked
	output string // the output Linear, stored in full after the step
}{
	// conv1 + bn1 (5), 8 blocks of 2 conv + 2 bn (80), 3 downsamples conv + bn (15), fc (2)
	{modelsFixture, "resnet18", model.Spec{Name: "resnet18", ImageSize: 32, Classes: 3}, 5 + 80 + 15 + 2, "fc"},
	// conv1 + bn1 (5), 16 bottlenecks of 3 conv + 3 bn (240), 4 downsamples (20), fc (2)
	{modelsFixture, "resnet50", model.Spec{Name: "resnet50", ImageSize: 32, Classes: 3}, 5 + 240 + 20 + 2, "fc"},
	// features.0 (5), block 1 dw + project (10), 16 blocks expand + dw + project (240), features.18 (5), classifier.1 (2)
	{modelsFixture, "mobilenet_v2", model.Spec{Name: "mobilenet_v2", ImageSize: 32, Classes: 3}, 5 + 10 + 240 + 5 + 2, "classifier.1"},
	// 8 convolutions with BatchNorm (48), 3 Linear (6)
	{modelsFixture, "vgg11_bn", model.Spec{Name: "vgg11_bn", Head: model.HeadFlatten, ImageSize: 32, Classes: 3, Hidden: 16}, 48 + 6, "classifier.6"},
	{modelsFixture64, "resnet50", model.Spec{Name: "resnet50", ImageSize: 64, Classes: 3}, 5 + 240 + 20 + 2, "fc"},
	{modelsFixture64, "mobilenet_v2", model.Spec{Name: "mobilenet_v2", ImageSize: 64, Classes: 3}, 5 + 10 + 240 + 5 + 2, "classifier.1"},
}

// fixtureSpec is one entry of the fixture's config "specs", model.Spec in Python's spelling.
type fixtureSpec struct {
	Name      string `json:"name"`
	Head      string `json:"head"`
	ImageSize int    `json:"image_size"`
	Classes   int    `json:"classes"`
	Hidden    int    `json:"hidden"`
}

// TestModelsFixtureMatchesPython proves that, for every model of the torchvision
// fixture, model.Build lists torchvision's state-dict names in its order and
// WeightsForNet gives the bytes whose SHA-256 numpy recorded, so that a driver
// given WeightsForNet(net) and Input(4, 32) starts where PyTorch started.
func TestModelsFixtureMatchesPython(t *testing.T) {
	for _, file := range modelFixtureFiles {
		t.Run(filepath.Base(file.path), func(t *testing.T) {
			matchesPython(t, file.path, file.batch, file.S)
		})
	}
}

// matchesPython is TestModelsFixtureMatchesPython for one fixture file made
// from Input(batch, S).
func matchesPython(t *testing.T, path string, batch, S int) {
	_, meta, err := weights.ReadSafetensors(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	var names map[string][]string
	var hashes map[string]string
	var config struct {
		Specs     map[string]fixtureSpec `json:"specs"`
		Output    map[string]string      `json:"output"`
		Batch     int                    `json:"batch"`
		ImageSize int                    `json:"image_size"`
	}
	for key, v := range map[string]any{"names": &names, "weights_sha256": &hashes, "config": &config} {
		if err := json.Unmarshal([]byte(meta[key]), v); err != nil {
			t.Fatalf("metadata %s: %v", key, err)
		}
	}
	if config.Batch != batch || config.ImageSize != S {
		t.Errorf("fixture input: got batch %d of %d px, want %d of %d px", config.Batch, config.ImageSize, batch, S)
	}
	models := 0
	for _, tt := range modelFixtures {
		if tt.file != path {
			continue
		}
		models++
		s, err := model.Resolve(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		want := fixtureSpec{s.Name, s.Head, s.ImageSize, s.Classes, s.Hidden}
		if got := config.Specs[tt.key]; got != want {
			t.Errorf("%s: fixture spec: got %+v, want %+v (the Go table)", tt.key, got, want)
		}
		if got := config.Output[tt.key]; got != tt.output {
			t.Errorf("%s: fixture output layer: got %q, want %q", tt.key, got, tt.output)
		}
		net, err := model.Build(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		ws := reftest.WeightsForNet(net)
		if len(ws) != tt.params || len(names[tt.key]) != tt.params {
			t.Fatalf("%s: got %d tensors and %d fixture names, want %d", tt.key, len(ws), len(names[tt.key]), tt.params)
		}
		data := make([][]float32, len(ws))
		for i, w := range ws {
			if w.Name != names[tt.key][i] {
				t.Errorf("%s: tensor %d: got %s, want %s (torchvision's state-dict order)", tt.key, i, w.Name, names[tt.key][i])
			}
			data[i] = w.Data
		}
		if got, want := sha(data...), hashes[tt.key]; got != want {
			t.Errorf("%s: weights sha256: got %s, want %s (numpy)", tt.key, got, want)
		}
	}
	if len(names) != models {
		t.Errorf("fixture models: got %d, want %d", len(names), models)
	}
	if got, want := sha(reftest.Input(batch, S).X), meta["input_sha256"]; got != want {
		t.Errorf("input sha256: got %s, want %s (numpy)", got, want)
	}
}

// crossEntropy is the mean of −log softmax(row)[label] over the rows of logits
// ([n, classes], row-major), in float64: torch's cross_entropy.
func crossEntropy(logits []float32, labels []int32, classes int) float64 {
	var sum float64
	for i, y := range labels {
		row := logits[i*classes : (i+1)*classes]
		m := float64(slices.Max(row))
		var z float64
		for _, v := range row {
			z += math.Exp(float64(v) - m)
		}
		sum += m + math.Log(z) - float64(row[y])
	}
	return sum / float64(len(labels))
}

// TestModelsFixtureKeys checks that the fixtures hold what the drivers' parity
// tests read, for every tensor of every model: the output layer in full with
// its model.Build shape, every other tensor's first 64 values and its sums, and
// losses that are the cross-entropy of the recorded logits on the input's
// labels (i mod 3).
func TestModelsFixtureKeys(t *testing.T) {
	for _, file := range modelFixtureFiles {
		t.Run(filepath.Base(file.path), func(t *testing.T) {
			fixtureKeys(t, file.path, file.batch, file.S)
		})
	}
}

// fixtureKeys is TestModelsFixtureKeys for one fixture file made from
// Input(batch, S).
func fixtureKeys(t *testing.T, path string, batch, S int) {
	ts, meta, err := weights.ReadSafetensors(filepath.FromSlash(path))
	if err != nil {
		t.Fatal(err)
	}
	byName := make(map[string]*weights.Tensor, len(ts))
	for _, x := range ts {
		byName[x.Name] = x
	}
	var sums map[string]struct {
		Sum         *float64 `json:"sum"`
		DeltaSum    *float64 `json:"delta_sum"`
		DeltaAbsSum *float64 `json:"delta_abs_sum"`
	}
	if err := json.Unmarshal([]byte(meta["sums"]), &sums); err != nil {
		t.Fatalf("metadata sums: %v", err)
	}
	in := reftest.Input(batch, S)
	const first = 64
	used := 0
	for _, tt := range modelFixtures {
		if tt.file != path {
			continue
		}
		net, err := model.Build(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		get := func(key string, shape ...int) *weights.Tensor {
			x := byName[key]
			switch {
			case x == nil:
				t.Errorf("%s: missing", key)
			case !slices.Equal(x.Shape, shape):
				t.Errorf("%s: got shape %v, want %v", key, x.Shape, shape)
			default:
				used++
				return x
			}
			return nil
		}
		for _, pair := range [][2]string{{"logits", "loss"}, {"train_logits", "sgd1/loss"}} {
			logits, loss := get(tt.key+"/"+pair[0], batch, 3), get(tt.key+"/"+pair[1], 1)
			if logits == nil || loss == nil {
				continue
			}
			// torch computed the loss in float32; 1e-5 relative covers its rounding.
			want := crossEntropy(logits.Data, in.Labels, 3)
			if got := float64(loss.Data[0]); math.Abs(got-want) > 1e-5*want {
				t.Errorf("%s/%s: got %v, want %v (cross-entropy of %s, labels i mod 3)", tt.key, pair[1], got, want, pair[0])
			}
		}
		for _, p := range net.Params {
			key := tt.key + "/sgd1/" + p.Name
			if net.Layers[p.Layer].Name == tt.output {
				get(key, p.Shape...)
				continue
			}
			get(key+"/first64", min(first, p.NumElements()))
			if s, ok := sums[key]; !ok || s.Sum == nil || s.DeltaSum == nil || s.DeltaAbsSum == nil {
				t.Errorf("%s: sums: got %+v, want sum, delta_sum and delta_abs_sum", key, s)
			}
		}
	}
	if used != len(ts) {
		t.Errorf("fixture tensors: the models use %d, want all %d", used, len(ts))
	}
}
