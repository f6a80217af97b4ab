package compare

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// The frameworks the tests register: compare itself names none, and a program registers the
// drivers it links (cmd/fwbench registers torchrun and tfrun under these names).
const (
	TensorFlow = "tensorflow"
	Torch      = "torch"
)

// fakeNews records, per framework, the recipe and initial weights the last New got.
var fakeNews = map[string]*fakeTrainer{}

// fakeBuildDelay and fakeStepDelay make the fakes' New and TrainStep take time (zero unless a
// test of the time breakdown sets them).
var fakeBuildDelay, fakeStepDelay time.Duration

func init() {
	for _, f := range []Framework{
		{Name: TensorFlow, Aliases: []string{"tf"}},
		{Name: Torch, Aliases: []string{"pytorch", "libtorch"}},
	} {
		name := f.Name
		f.New = func(ctx context.Context, cfg recipe.Config, init []*weights.Tensor) (Trainer, error) {
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
			time.Sleep(fakeBuildDelay)
			ft := &fakeTrainer{name: name, cfg: cfg, init: init}
			fakeNews[name] = ft
			return ft, nil
		}
		f.Version = func() string { return "fake" }
		f.CUDADevices = func() ([]string, error) { return nil, errors.New("a fake has no CUDA") }
		if err := Register(f); err != nil {
			panic(err) // a test binary's setup
		}
	}
}

// fakeTrainer is a deterministic stand-in used only to test the loop's bookkeeping; real
// training is tested against the real frameworks in torchrun, tfrun and cmd/fwbench.
type fakeTrainer struct {
	name    string
	cfg     recipe.Config
	init    []*weights.Tensor
	steps   int
	saved   *Position
	resumed Position
	closed  bool
}

// TrainStep returns 1/step as the loss and one hit per batch.
func (f *fakeTrainer) TrainStep(ctx context.Context, b *dataset.Batch) (float64, int, error) {
	f.steps++
	time.Sleep(fakeStepDelay)
	return 1 / float64(f.steps), 1, nil
}
func (f *fakeTrainer) Evaluate(ctx context.Context, b *dataset.Batch) (float64, int, error) {
	return 2, b.N / 2, nil
}
func (f *fakeTrainer) Info() recipe.Info {
	return recipe.Info{Framework: f.name, Version: "fake", Device: "cpu", Threads: 1, Settings: map[string]string{"fake": "yes"}}
}
func (f *fakeTrainer) Close() error { f.closed = true; return nil }
func (f *fakeTrainer) SaveCheckpoint(dir string, epoch, step int) error {
	f.saved = &Position{epoch, step}
	return nil
}
func (f *fakeTrainer) LoadCheckpoint(dir string) (int, int, error) {
	return f.resumed.Epoch, f.resumed.Step, nil
}
func (f *fakeTrainer) Sync() error { return nil }

// Weights returns the initial weights: the fake never updates them.
func (f *fakeTrainer) Weights() ([]*weights.Tensor, error) { return f.init, nil }

func TestRegistry(t *testing.T) {
	if got, want := Frameworks(), []string{TensorFlow, Torch}; !slices.Equal(got, want) {
		t.Errorf("Frameworks: got %v, want %v (sorted)", got, want)
	}
	for _, tt := range []struct{ name, want string }{
		{"torch", Torch}, {"PyTorch", Torch}, {" libtorch ", Torch}, {"TF", TensorFlow}, {"tensorflow", TensorFlow}, {"mxnet", ""},
	} {
		f, ok := LookupFramework(tt.name)
		if ok != (tt.want != "") || f.Name != tt.want {
			t.Errorf("LookupFramework(%q): got %q, %v, want %q", tt.name, f.Name, ok, tt.want)
		}
	}
	newOK := func(context.Context, recipe.Config, []*weights.Tensor) (Trainer, error) { return nil, nil }
	for _, tt := range []struct {
		name string
		f    Framework
		want string
	}{
		{"no name", Framework{New: newOK}, "needs a name"},
		{"no New", Framework{Name: "jax"}, "needs a name and a New"},
		{"name taken", Framework{Name: "Torch", New: newOK}, `"Torch" is taken by torch`},
		{"alias taken", Framework{Name: "jax", Aliases: []string{"tf"}, New: newOK}, `"tf" is taken by tensorflow`},
		{"empty alias", Framework{Name: "jax", Aliases: []string{""}, New: newOK}, "an empty alias"},
	} {
		if err := Register(tt.f); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if got := Frameworks(); len(got) != 2 {
		t.Errorf("after refused registrations: got %v, want the two test frameworks only", got)
	}
}

func TestSpecValidateFramework(t *testing.T) {
	s := testSpec()
	s.Framework = "mxnet"
	err := s.Validate()
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `framework "mxnet" is not built into this fwbench (want tensorflow or torch`) {
		t.Errorf("got %v, want ErrInvalid naming the registered frameworks", err)
	}
}

func TestCheckGPU(t *testing.T) {
	for _, tt := range []struct{ fw, device, want string }{
		{Torch, "cpu", ""},
		{Torch, "", ""},
		{Torch, "cuda", "--device cuda asked for a GPU, but torch cannot use one: a fake has no CUDA"},
		{"tf", "cuda:1", "but tensorflow cannot use one"},
		{"mxnet", "cuda", `framework "mxnet" is not built into this fwbench`},
	} {
		err := CheckGPU(tt.fw, tt.device)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("CheckGPU(%s, %s): got %v, want nil", tt.fw, tt.device, err)
		case tt.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("CheckGPU(%s, %s): got %v, want ErrInvalid containing %q", tt.fw, tt.device, err, tt.want)
		}
	}
}

// TestTrainOne runs the whole single run with a registered fake framework on the built-in
// data: the recipe the driver gets (the data's 3 classes), the initial weights composed once
// (seeded: weights.InitParams of the model's parameters), the exports through Export, and the
// record.
func TestTrainOne(t *testing.T) {
	t.Setenv("FWBENCH_CACHE", t.TempDir())
	dir := t.TempDir()
	s := testSpec()
	s.Framework = "PyTorch" // an alias: the record has the registered name
	s.Model, s.Hidden, s.Epochs, s.StepsPerEpoch, s.BatchSize = "vgg11", 16, 1, 2, 4
	s.Checkpoint = filepath.Join(dir, "ck")
	var exported []string
	opts := TrainOptions{
		SaveWeights: filepath.Join(dir, "final.safetensors"),
		Export: func(ts []*weights.Tensor, path string) error {
			exported = append(exported, filepath.Base(path))
			return WriteWeights(ts, path)
		},
		CheckpointExports: []string{"final.pth"},
	}
	rec, err := TrainOne(context.Background(), s, opts)
	if err != nil {
		t.Fatal(err)
	}
	ft := fakeNews[Torch]
	if ft == nil {
		t.Fatal("the torch fake's New was not called")
	}
	c := s.Config
	c.Classes = 3
	net, err := c.Net()
	if err != nil {
		t.Fatal(err)
	}
	seeded, err := weights.InitParams(net.Params, s.Seed)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := weights.Load(opts.SaveWeights)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"classes the driver got (the built-in set's 3)", ft.cfg.Classes, 3},
		{"initial weights: InitParams of the model", weights.CanonicalSHA256(ft.init), weights.CanonicalSHA256(seeded)},
		{"saved weights: the fake's (initial) ones", weights.CanonicalSHA256(saved), weights.CanonicalSHA256(seeded)},
		{"exports, in order", strings.Join(exported, " "), "final.pth final.safetensors"},
		{"trainer closed", ft.closed, true},
		{"record framework", rec.Framework, Torch},
		{"steps", ft.steps, 2},
		{"seeded tensors listed", len(rec.WeightsProvenance.Seeded), len(net.Params)},
		{"weights sha256 recorded", len(rec.WeightsSHA256), 64},
		{"data classes", rec.Dataset.Classes, 3},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(s.Checkpoint, "final.pth")); err != nil {
		t.Errorf("checkpoint export: %v", err)
	}
}

// TestTrainOneRefusals: TrainOne refuses an invalid recipe with recipe.Config.Validate's own
// error, and a recipe whose class count disagrees with the data, before its driver is built.
func TestTrainOneRefusals(t *testing.T) {
	t.Setenv("FWBENCH_CACHE", t.TempDir())
	for _, c := range recipe.BadRecipes() {
		s := testSpec()
		s.Framework, s.Config = Torch, c.Config
		_, err := TrainOne(context.Background(), s, TrainOptions{})
		if want := c.Config.Validate(); err == nil || err.Error() != want.Error() || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want %v", c.Name, err, want)
		}
	}
	s := testSpec()
	s.Framework, s.Classes, s.Epochs = Torch, 5, 1
	delete(fakeNews, Torch)
	_, err := TrainOne(context.Background(), s, TrainOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "the recipe has 5 classes, the data 3") {
		t.Errorf("classes: got %v, want ErrInvalid naming 5 and 3", err)
	}
	if fakeNews[Torch] != nil {
		t.Error("classes: the driver was built, want the refusal before")
	}
}

// TestTrainNeedsOptionalInterfaces: checkpoints need a Checkpointer, exports a WeightsReader.
func TestTrainNeedsOptionalInterfaces(t *testing.T) {
	data := synthLoaders(t, 4)
	s := testSpec()
	s.Epochs, s.BatchSize, s.Checkpoint = 1, 4, t.TempDir()
	var tr Trainer = struct{ Trainer }{&fakeTrainer{name: Torch}} // only the four methods of Trainer
	_, err := Train(context.Background(), tr, s, data, nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "torch cannot write or read checkpoints") {
		t.Errorf("checkpoint without a Checkpointer: got %v, want ErrInvalid", err)
	}
	if err := exportWeights(tr, WriteWeights, filepath.Join(t.TempDir(), "w.pth")); err == nil || !strings.Contains(err.Error(), "cannot read its weights back") {
		t.Errorf("export without a WeightsReader: got %v, want an error", err)
	}
	// Without Sync, a CPU run's timer reads still count: the driver is synchronous.
	s.Checkpoint = ""
	rec, err := Train(context.Background(), tr, s, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rec.SyncedTimerReads, len(rec.StepLosses); got != want || want == 0 {
		t.Errorf("synced timer reads without Sync on the CPU: got %d, want %d", got, want)
	}
}

// testSpec is DefaultSpec with a framework, torch (DefaultSpec names none).
func testSpec() Spec {
	s := DefaultSpec()
	s.Framework = Torch
	return s
}
