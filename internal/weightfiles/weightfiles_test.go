package weightfiles

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/internal/testfixture"
	"github.com/fwbench/fwbench/keras"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/weights"
)

// relTol bounds max|got − want| / max|want| over a batch's logits: the
// acceptance criterion of the weight-file issue ("eval logits equal the
// Python model's within 1e-4 relative to the largest |logit|").
// make_keras_fixtures.py holds Keras to PyTorch with rtol 1e-4 too.
const relTol = 1e-4

const (
	weightsData = "../../weights/testdata"
	kerasData   = "../../keras/testdata"
	batchSize   = 4 // the fixtures' logits are of reftest.Input(4, S)
)

// net is one model and its initial tensors, as both drivers are given them:
// Mode scratch (every tensor from the file), dropout 0.
type net struct {
	model              string
	head               string // a model head: model.HeadTorchvision, ...
	S, classes, hidden int
	weights            []*weights.Tensor
}

// recipe is the one driver configuration of n, for both drivers.
func (n net) recipe() recipe.Config {
	c := recipe.Default()
	c.Model, c.Head, c.ImageSize, c.Classes, c.Hidden = n.model, n.head, n.S, n.classes, n.hidden
	c.Mode, c.Dropout = model.ModeScratch, 0
	return c
}

// trainer is what the tests use of torchrun.Trainer and tfrun.Trainer.
type trainer interface {
	Logits(context.Context, *dataset.Batch) ([]float32, error)
	Evaluate(context.Context, *dataset.Batch) (loss float64, correct int, err error)
	Weights() ([]*weights.Tensor, error)
	Close() error
}

// drivers are the two frameworks, each built from n's recipe and tensors.
var drivers = []struct {
	name string
	new  func(ctx context.Context, c recipe.Config, init []*weights.Tensor) (trainer, error)
}{
	{torchrun.Framework, func(ctx context.Context, c recipe.Config, init []*weights.Tensor) (trainer, error) {
		tr, err := torchrun.New(ctx, c, init)
		if err != nil {
			return nil, err
		}
		return tr, nil
	}},
	{tfrun.Framework, func(ctx context.Context, c recipe.Config, init []*weights.Tensor) (trainer, error) {
		tr, err := tfrun.New(ctx, c, init)
		if err != nil {
			return nil, err
		}
		return tr, nil
	}},
}

// run is what one driver did with one net.
type run struct {
	logits   []float32
	loss     float64 // Evaluate on the batch (labels i mod classes)
	readBack []*weights.Tensor
}

// runDriver builds the driver's trainer for n and records its eval logits
// and loss on b and the parameters it reads back.
func runDriver(t *testing.T, newTrainer func(context.Context, recipe.Config, []*weights.Tensor) (trainer, error), n net, b *dataset.Batch) run {
	t.Helper()
	ctx := context.Background()
	tr, err := newTrainer(ctx, n.recipe(), n.weights)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tr.Close(); err != nil {
			t.Error(err)
		}
	}()
	var r run
	if r.logits, err = tr.Logits(ctx, b); err != nil {
		t.Fatal(err)
	}
	if r.loss, _, err = tr.Evaluate(ctx, b); err != nil {
		t.Fatal(err)
	}
	if r.readBack, err = tr.Weights(); err != nil {
		t.Fatal(err)
	}
	return r
}

// relDiff returns max|got − want| / max|want| and the index of the largest
// difference.
func relDiff(got, want []float32) (float64, int) {
	var d, scale float64
	at := 0
	for i := range want {
		if e := math.Abs(float64(got[i]) - float64(want[i])); e > d || math.IsNaN(e) {
			d, at = e, i
		}
		scale = max(scale, math.Abs(float64(want[i])))
	}
	return d / scale, at
}

// checkLogits fails t unless got has want's length and is within relTol of
// it, and logs the measured difference.
func checkLogits(t *testing.T, got, want []float32, classes int, from string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("logits: got %d values, want %d (%s)", len(got), len(want), from)
	}
	d, at := relDiff(got, want)
	t.Logf("logits: max relative difference %.3g (at image %d class %d)", d, at/classes, at%classes)
	if !(d <= relTol) {
		t.Errorf("logits[%d][%d]: got %v, want %v (%s): relative difference %.3g > %g",
			at/classes, at%classes, got[at], want[at], from, d, relTol)
	}
}

// checkReadBack fails t unless the parameters the driver read back hash to
// want; it then names the tensors that differ from those it was given.
func checkReadBack(t *testing.T, readBack, given []*weights.Tensor, want, from string) {
	t.Helper()
	got := weights.CanonicalSHA256(readBack)
	if got == want {
		return
	}
	t.Errorf("read-back CanonicalSHA256: got %s, want %s (%s); the loaded tensors hash to %s; %s",
		got, want, from, weights.CanonicalSHA256(given), differences(readBack, given))
}

// differences names the tensors of got that are missing from want or differ
// in shape or values (the first differing element of each), or "".
func differences(got, want []*weights.Tensor) string {
	var out []string
	for _, g := range got {
		w := weights.Lookup(want, g.Name)
		switch {
		case w == nil:
			out = append(out, g.Name+": not loaded")
		case !slices.Equal(g.Shape, w.Shape):
			out = append(out, fmt.Sprintf("%s: shape %v, loaded %v", g.Name, g.Shape, w.Shape))
		default:
			for j := range g.Data {
				if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
					out = append(out, fmt.Sprintf("%s[%d]: read back %v, loaded %v", g.Name, j, g.Data[j], w.Data[j]))
					break
				}
			}
		}
	}
	if len(got) != len(want) {
		out = append(out, fmt.Sprintf("%d tensors read back, %d loaded", len(got), len(want)))
	}
	if len(out) == 0 {
		return "no tensor differs"
	}
	return "differences: " + strings.Join(out, "; ")
}

// weightsMeta is the part of weights/testdata/vgg16_fixtures.json (written
// by make_weights_fixtures.py with torch 2.11) that these tests read.
type weightsMeta struct {
	Classes int `json:"classes"`
	Hidden  int `json:"hidden"`
	Models  map[string]struct {
		CanonicalSHA256 string `json:"canonical_sha256"`
		Logits          string `json:"logits"`
	} `json:"models"`
	Fixtures map[string]struct {
		Model           string `json:"model"`
		CanonicalSHA256 string `json:"canonical_sha256"`
	} `json:"fixtures"`
}

// TestTorchvisionFiles: the torchvision VGG16 and VGG16_BN state dicts that
// torch 2.11 saved in every format users have give, in both drivers
// (model.HeadTorchvision, scratch, hidden 16, 1000 classes, 32 px), PyTorch's
// eval logits on reftest.Input(4, 32) and read back to the state dict's hash.
func TestTorchvisionFiles(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(weightsData, "vgg16_fixtures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta weightsMeta
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	// Eval-mode logits [4, 1000] of the Python model on make_input(4, 32, 3),
	// which is reftest.Input(4, 32) permuted from NHWC to NCHW.
	logits, _, err := weights.ReadSafetensors(filepath.Join(weightsData, "vgg16_tv_logits.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	const S = 32
	batch := reftest.Input(batchSize, S)
	tests := []struct {
		file  string // in weights/testdata, stored as file.gz.gz
		model string
	}{
		{"vgg16.pth", "vgg16"},
		{"vgg16_legacy.pth", "vgg16"},
		{"vgg16_module.pth", "vgg16"},
		{"vgg16_checkpoint.pth", "vgg16"},
		{"vgg16_bn.pth", "vgg16_bn"},
		{"vgg16_bn_legacy.pth", "vgg16_bn"},
		{"vgg16_bn.safetensors", "vgg16_bn"},
		// weights.WritePth's golden file, which torch checked (vgg16_fixtures.json's "golden").
		{"vgg16_bn_go.pth", "vgg16_bn"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			want := meta.Models[tt.model]
			if want.CanonicalSHA256 == "" {
				t.Fatalf("vgg16_fixtures.json: no hash for model %s", tt.model)
			}
			if fx, ok := meta.Fixtures[tt.file+".gz.gz"]; ok && (fx.Model != tt.model || fx.CanonicalSHA256 != want.CanonicalSHA256) {
				t.Fatalf("vgg16_fixtures.json: %s holds %s with hash %s, want %s with its model's hash %s",
					tt.file, fx.Model, fx.CanonicalSHA256, tt.model, want.CanonicalSHA256)
			}
			wantLogits := weights.Lookup(logits, tt.model)
			if wantLogits == nil || want.Logits != "vgg16_tv_logits.safetensors:"+tt.model {
				t.Fatalf("vgg16_tv_logits.safetensors: no logits %q for %s", want.Logits, tt.model)
			}
			loaded, err := weights.Load(testfixture.Path(t, filepath.Join(weightsData, tt.file+".gz.gz")))
			if err != nil {
				t.Fatal(err)
			}
			n := net{tt.model, model.HeadTorchvision, S, meta.Classes, meta.Hidden, loaded}
			for _, d := range drivers {
				t.Run(d.name, func(t *testing.T) {
					r := runDriver(t, d.new, n, batch)
					checkLogits(t, r.logits, wantLogits.Data, n.classes, "PyTorch, vgg16_tv_logits.safetensors")
					checkReadBack(t, r.readBack, loaded, want.CanonicalSHA256, "Python, vgg16_fixtures.json")
				})
			}
		})
	}
}

// kerasFixture is one of keras/testdata's files and its sidecar
// (make_keras_fixtures.py: VGG16, hidden 16, 3 classes, reftest formula
// tensors with period 1009).
type kerasFixture struct {
	file string // in keras/testdata
	head string // a VGG head: model.HeadKeras or model.HeadFlatten
	S    int
	// notop: the file holds the base only; the sidecar holds the keras head
	// that the script put on it for its logits.
	notop bool
}

var kerasFixtures = []kerasFixture{
	{"keras2_vgg16_notop_s32.h5.gz", model.HeadKeras, 32, true},
	{"keras2_vgg16_full_s32.h5.gz", model.HeadFlatten, 32, false},
	{"keras3_vgg16_keras_s64.weights.h5.gz", model.HeadKeras, 64, false},
	{"keras3_vgg16_keras_s64_sequential.weights.h5.gz", model.HeadKeras, 64, false},
}

// sidecar reads the fixture's <stem>.expect.safetensors.
func (k kerasFixture) sidecar(t *testing.T) ([]*weights.Tensor, map[string]string) {
	t.Helper()
	stem := k.file[:strings.Index(k.file, ".")]
	ts, md, err := weights.ReadSafetensors(filepath.Join(kerasData, stem+".expect.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return ts, md
}

// load returns the net the fixture describes (the notop file's base with its
// sidecar's head), its Keras logits, and the canonical hash of the net's
// tensors: the script's (Python's) hash of the file's tensors, which the
// loaded ones must match; for the notop file, that of the base it checked
// plus the sidecar's head.
func (k kerasFixture) load(t *testing.T) (net, []float32, string) {
	t.Helper()
	side, md := k.sidecar(t)
	var cfg struct {
		Model      string `json:"model"`
		ImageSize  int    `json:"image_size"`
		Hidden     int    `json:"hidden"`
		Classes    int    `json:"classes"`
		Batch      int    `json:"batch"`
		LogitsHead string `json:"logits_head"`
	}
	if err := json.Unmarshal([]byte(md["config"]), &cfg); err != nil {
		t.Fatalf("sidecar config: %v", err)
	}
	if cfg.ImageSize != k.S || cfg.LogitsHead != k.head || cfg.Batch != batchSize {
		t.Fatalf("sidecar config: got %d px, head %q, batch %d, want %d px, head %q, batch %d",
			cfg.ImageSize, cfg.LogitsHead, cfg.Batch, k.S, k.head, batchSize)
	}
	ts, err := weights.Load(testfixture.Path(t, filepath.Join(kerasData, k.file)))
	if err != nil {
		t.Fatal(err)
	}
	hash := md["canonical_sha256"]
	if got := weights.CanonicalSHA256(ts); hash == "" || got != hash {
		t.Fatalf("weights.Load: CanonicalSHA256 got %s, want %s (Python, sidecar)", got, hash)
	}
	if k.notop {
		m, err := model.Build(model.Spec{Name: cfg.Model, Head: k.head, ImageSize: k.S, Classes: cfg.Classes, Hidden: cfg.Hidden})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m.Params {
			if p.Head {
				h := weights.Lookup(side, p.Name)
				if h == nil {
					t.Fatalf("sidecar: no head tensor %s", p.Name)
				}
				ts = append(ts, h)
			}
		}
		hash = weights.CanonicalSHA256(ts)
	}
	// Keras' eval-mode logits [4, 3] on keras_input(S): make_input(4, S)'s NHWC
	// batch, element j = float32(u(1000, j)), which is reftest.Input(4, S)'s X
	// as the drivers take it, so no layout conversion.
	l := weights.Lookup(side, "logits")
	if l == nil || !slices.Equal(l.Shape, []int{batchSize, cfg.Classes}) {
		t.Fatalf("sidecar: got logits %v, want shape [%d %d]", l, batchSize, cfg.Classes)
	}
	return net{cfg.Model, k.head, k.S, cfg.Classes, cfg.Hidden, ts}, l.Data, hash
}

// TestKerasFiles: Keras 2 and Keras 3 weight files give, in both drivers with
// the head the fixture defines, Keras' eval logits on the reftest input.
func TestKerasFiles(t *testing.T) {
	for _, k := range kerasFixtures {
		t.Run(strings.TrimSuffix(k.file, ".gz"), func(t *testing.T) {
			n, wantLogits, wantHash := k.load(t)
			batch := reftest.Input(batchSize, n.S)
			for _, d := range drivers {
				t.Run(d.name, func(t *testing.T) {
					r := runDriver(t, d.new, n, batch)
					checkLogits(t, r.logits, wantLogits, n.classes, "Keras, sidecar")
					checkReadBack(t, r.readBack, n.weights, wantHash, "Python, sidecar")
				})
			}
		})
	}
}

// TestOneStateDictEveryFormat: one set of tensors (the Keras 3 fixture's:
// VGG16, keras head, 64 px, so the first Dense layer's rows are really
// permuted between layouts) written by fwbench in every format it writes, and
// the Keras-written original, load to the same tensors and give, in each
// driver, the same read-back hash and bit-identical loss and logits.
func TestOneStateDictEveryFormat(t *testing.T) {
	src := kerasFixtures[2]
	n, wantLogits, wantHash := src.load(t)
	dir := t.TempDir()
	files := []struct {
		name  string
		write func(path string) error
	}{
		{"keras3_original.weights.h5", func(path string) error {
			return os.Rename(testfixture.Path(t, filepath.Join(kerasData, src.file)), path)
		}},
		{"written.safetensors", func(path string) error { return weights.WriteSafetensors(path, n.weights, nil) }},
		{"written.pth", func(path string) error { return weights.WritePth(path, n.weights) }},
		{"written.weights.h5", func(path string) error { return keras.WriteWeightsH5(path, n.weights, keras.WriteOptions{}) }},
	}
	loaded := make([][]*weights.Tensor, len(files))
	for i, f := range files {
		path := filepath.Join(dir, f.name)
		if err := f.write(path); err != nil {
			t.Fatal(err)
		}
		ts, err := weights.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := weights.CanonicalSHA256(ts); got != wantHash {
			t.Errorf("%s: CanonicalSHA256 got %s, want %s (Python, %s's sidecar)", f.name, got, wantHash, src.file)
		}
		loaded[i] = ts
	}
	batch := reftest.Input(batchSize, n.S)
	for i := range batch.Labels {
		batch.Labels[i] = int32(i % n.classes)
	}
	for _, d := range drivers {
		t.Run(d.name, func(t *testing.T) {
			var first run
			for i, f := range files {
				m := n
				m.weights = loaded[i]
				r := runDriver(t, d.new, m, batch)
				checkReadBack(t, r.readBack, loaded[i], wantHash, "Python, "+src.file+"'s sidecar")
				if i == 0 {
					first = r
					checkLogits(t, r.logits, wantLogits, n.classes, "Keras, sidecar")
					t.Logf("loss %.9g", r.loss)
					continue
				}
				if math.Float64bits(r.loss) != math.Float64bits(first.loss) {
					t.Errorf("%s: loss got %.9g, want %.9g (from %s, bit for bit)", f.name, r.loss, first.loss, files[0].name)
				}
				for j := range r.logits {
					if math.Float32bits(r.logits[j]) != math.Float32bits(first.logits[j]) {
						t.Errorf("%s: logits[%d][%d] got %v, want %v (from %s, bit for bit)",
							f.name, j/n.classes, j%n.classes, r.logits[j], first.logits[j], files[0].name)
						break
					}
				}
			}
		})
	}
}
