package compare

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
)

func TestQuantileAndStat(t *testing.T) {
	xs := []float64{4, 1, 3, 2, 100}
	tests := []struct {
		name      string
		got, want float64
	}{
		// numpy.Quantile([4,1,3,2,100], q) with linear interpolation: 3.0, 80.4 (= 4 + 0.8*96)
		{"p50", Quantile(xs, 0.5), 3},
		{"p95", Quantile(xs, 0.95), 80.8},
		{"median", stat(xs).Median, 3},
		// |x-3| = 1,2,0,1,97 -> median 1
		{"mad", stat(xs).MAD, 1},
		{"min", stat(xs).Min, 1},
		{"max", stat(xs).Max, 100},
	}
	for _, tt := range tests {
		if math.Abs(tt.got-tt.want) > 1e-9 {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestOrderAlternates(t *testing.T) {
	var got []string
	for r := 0; r < 4; r++ {
		got = append(got, order([]string{"A", "B"}, r)...)
	}
	if want := "A B B A A B B A"; strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

func TestSpecValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		change func(*Spec)
		ok     bool
	}{
		{"default", func(*Spec) {}, true},
		{"paper", func(s *Spec) { *s = PaperSpec(); s.Framework = Torch }, true},
		{"size not a multiple of 32", func(s *Spec) { s.ImageSize = 100 }, false},
		{"size too small", func(s *Spec) { s.ImageSize = 0 }, false},
		{"batch size 0", func(s *Spec) { s.BatchSize = 0 }, false},
		{"negative lr", func(s *Spec) { s.LR = -0.1 }, false},
		{"unknown framework", func(s *Spec) { s.Framework = "mxnet" }, false},
		{"unknown device", func(s *Spec) { s.Device = "tpu" }, false},
		{"bad cuda index", func(s *Spec) { s.Device = "cuda:x" }, false},
		{"cuda:1 is well-formed", func(s *Spec) { s.Device = "cuda:1" }, true},
		{"unknown mode", func(s *Spec) { s.Mode = "freeze" }, false},
		{"unknown model", func(s *Spec) { s.Model = "resnet34" }, false},
		{"resnet50", func(s *Spec) { s.Model = "resnet50" }, true},
		{"framework by an alias", func(s *Spec) { s.Framework = "PyTorch" }, true},
		{"finetune without weights", func(s *Spec) { s.Mode = "finetune" }, false},
		{"missing data folder", func(s *Spec) { s.Data = filepath.Join(dir, "nope") }, false},
		{"existing data folder", func(s *Spec) { s.Data = dir }, true},
		{"missing weights", func(s *Spec) { s.Weights = filepath.Join(dir, "w.safetensors") }, false},
	}
	for _, tt := range tests {
		s := testSpec()
		tt.change(&s)
		err := s.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: got error %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want an error wrapping ErrInvalid", tt.name, err)
		}
	}
}

func synthLoaders(t *testing.T, batch int) Loaders {
	t.Helper()
	return shardLoaders(t, batch, dataset.Shard{})
}

// shardLoaders is synthLoaders for one rank of a data-parallel run: its training batches are
// the rank's share of each global batch of batch images.
func shardLoaders(t *testing.T, batch int, shard dataset.Shard) Loaders {
	t.Helper()
	dir := t.TempDir()
	if err := dataset.Synthesize(dir, 3, 10, 32, 1, "png"); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Open(context.Background(), dir, dataset.OpenOptions{ValSplit: 0.2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	lc := dataset.LoaderConfig{ImageSize: 32, BatchSize: batch, Seed: 1, Shuffle: true, DropLast: true, Normalize: "rescale"}
	tc := lc
	tc.Shard = shard
	tr, err := dataset.NewLoader(ds.Train(), tc)
	if err != nil {
		t.Fatal(err)
	}
	lc.Shuffle, lc.DropLast = false, false
	val, err := dataset.NewLoader(ds.Val(), lc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close(); val.Close() })
	return Loaders{Train: tr, Val: val, Classes: 3, DataPath: dir, TrainLen: ds.Train().Len(), ValLen: ds.Val().Len()}
}

func TestTrainLoopBookkeeping(t *testing.T) {
	data := synthLoaders(t, 4) // 24 training images -> 6 batches of 4
	s := testSpec()
	s.Epochs, s.BatchSize, s.WarmupSteps, s.Checkpoint = 2, 4, 3, t.TempDir()
	ft := &fakeTrainer{name: Torch}
	var events int
	rec, err := Train(context.Background(), ft, s, data, func(Progress) { events++ })
	if err != nil {
		t.Fatal(err)
	}
	steps := data.Train.BatchesPerEpoch()
	tests := []struct {
		name      string
		got, want any
	}{
		{"steps trained", ft.steps, 2 * steps},
		{"epochs recorded", len(rec.Epochs), 2},
		{"timed steps (all minus warm-up)", len(rec.StepTimesSeconds), 2*steps - 3},
		{"initial loss (fake Evaluate returns 2)", rec.InitialLoss, 2.0},
		{"val accuracy (fake: half right, n/2 floored per batch)", rec.Epochs[0].ValAccuracy > 0.3 && rec.Epochs[0].ValAccuracy <= 0.5, true},
		// fake TrainStep: one hit per batch of 4.
		{"train accuracy from TrainStep's correct", rec.Epochs[0].TrainAccuracy, 0.25},
		{"framework from Info", rec.Framework, Torch},
		{"settings carry Info's threads and device", rec.Settings["threads"] + " " + rec.Settings["device"], "1 cpu"},
		{"settings carry Info's settings", rec.Settings["fake"], "yes"},
		{"model resolved", rec.Model + " " + rec.Head, "vgg16_bn flatten"},
		{"timer reads after Sync", rec.SyncedTimerReads, 2 * steps},
		{"last checkpoint position", *ft.saved, Position{2, 0}},
		{"schema", rec.Schema, RunSchema},
		{"first batch hash recorded", len(rec.FirstBatchSHA256), 64},
		{"progress events", events > 2*steps, true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestTrainInterruptAndResume(t *testing.T) {
	data := synthLoaders(t, 4)
	s := testSpec()
	s.Epochs, s.BatchSize, s.Checkpoint = 2, 4, t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ft := &fakeTrainer{name: Torch}
	n := 0
	rec, err := Train(ctx, ft, s, data, func(p Progress) {
		if p.Phase == "train" {
			if n++; n == 3 {
				cancel() // interrupt during epoch 1, after its third step
			}
		}
	})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("got %v, want ErrInterrupted", err)
	}
	if !rec.Partial || *ft.saved != (Position{0, 3}) || ft.steps != 3 {
		t.Fatalf("got partial=%v checkpoint=%v steps=%d, want partial at {0 3} after 3 steps", rec.Partial, *ft.saved, ft.steps)
	}
	// Resume: the remaining 3 steps of epoch 1 and all of epoch 2 run, nothing more.
	s.Resume = s.Checkpoint
	ft2 := &fakeTrainer{name: Torch, resumed: *ft.saved}
	rec, err = Train(context.Background(), ft2, s, data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2*data.Train.BatchesPerEpoch() - 3; ft2.steps != want {
		t.Errorf("steps after resume: got %d, want %d", ft2.steps, want)
	}
	if len(rec.Epochs) != 2 || rec.ResumedFrom == nil {
		t.Errorf("got %d epochs resumed=%v, want 2 epochs and a resume position", len(rec.Epochs), rec.ResumedFrom)
	}
}

// sampleReport builds a report from made-up run records, to test the report itself.
func sampleReport() *Report {
	cfg := withDefaults(Config{Spec: testSpec(), Repeat: 2})
	r := newReport(cfg)
	r.Config.InitialWeightsSHA256 = strings.Repeat("ab", 32)
	r.Config.InitialWeightsTensorsSHA256 = strings.Repeat("cd", 32)
	r.Parity = Parity{Losses: map[string]float64{Torch: 1.0986, TensorFlow: 1.0987}, RelativeDifference: 9.1e-5, Tolerance: 1e-3, Passed: true, Message: "ok",
		Differences: differences(cfg.Spec)}
	for i, fw := range []string{TensorFlow, Torch, Torch, TensorFlow} {
		total := map[string]float64{TensorFlow: 12, Torch: 10}[fw] + float64(i)
		r.Order = append(r.Order, fw)
		r.Runs = append(r.Runs, RunRecord{Schema: RunSchema, Framework: fw, FrameworkVersion: "x", Device: "cpu", Threads: 2,
			Model: "vgg16", Mode: "scratch", ImageSize: 32, BatchSize: 8, Optimizer: "sgd", LR: 0.01, Seed: 1,
			Dataset:     DatasetInfo{Path: "d", Classes: 3, TrainImages: 24, ValImages: 6},
			InitialLoss: 1.0986, TotalSeconds: total, ImagesPerSecond: 100 / total, DataWaitFraction: 0.01, PeakRSSBytes: 1 << 28,
			StepSeconds: Quantiles{0.1, 0.2}, StepTimesSeconds: []float64{0.1, 0.12, 0.2}, PID: 1000 + i,
			StepLosses: []float64{1.1, 1.0, 0.95, 0.9, 0.85}, TimedSteps: 3, SyncedTimerReads: 5, Precision: "fp32", Settings: fairSettings(fw), WorldSize: 1,
			TimeBreakdownSeconds: &TimeBreakdown{Startup: 0.5, Build: 1, WarmupSteps: 1, TimedSteps: total - 3, Evaluation: 0.5, Total: total},
			Epochs:               []EpochRecord{{1, 1.1, 0.3, 1.0, 0.4, total / 2, 50}, {2, 0.9, 0.5, 0.8, 0.6, total / 2, 55}}})
	}
	r.Fairness = fairness(cfg, r)
	r.summarise()
	return r
}

func TestReportMatchesSchemaAndRatios(t *testing.T) {
	r := sampleReport()
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	if err := ValidateReportFile(filepath.Join(dir, "report.json")); err != nil {
		t.Fatalf("report.json does not match its schema: %v", err)
	}
	// TF totals 12 and 15, torch 11 and 12: medians 13.5 and 11.5; per-repeat ratios 12/11 and 15/12.
	if got, want := r.Ratio.Median, 13.5/11.5; math.Abs(got-want) > 1e-12 {
		t.Errorf("ratio median: got %v, want %v", got, want)
	}
	if got, want := r.Ratio.TotalSeconds.Max, 15.0/12; math.Abs(got-want) > 1e-12 {
		t.Errorf("ratio max: got %v, want %v", got, want)
	}
	for _, name := range []string{"report.csv", "report.md", "loss.png", "loss.svg", "accuracy.png", "throughput.png", "steptime.png", "steptime.svg"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: got %v, want a non-empty file", name, err)
		}
	}
	f, err := os.Open(filepath.Join(dir, "loss.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if img, err := png.Decode(f); err != nil || img.Bounds().Dx() < 300 {
		t.Errorf("loss.png: got %v, want a decodable chart", err)
	}
	if tbl := r.Table(); !strings.Contains(tbl, "training time (study's Table 2)") || !strings.Contains(tbl, "parity: passed") {
		t.Errorf("table lacks the study's row or the parity line:\n%s", tbl)
	}
}

func TestSchemaRejectsBrokenReport(t *testing.T) {
	r := sampleReport()
	b, _ := json.Marshal(r)
	var doc map[string]any
	json.Unmarshal(b, &doc)
	delete(doc, "parity")
	b, _ = json.Marshal(doc)
	if err := ValidateReport(bytes.NewReader(b)); err == nil {
		t.Error("a report without parity: got nil, want a schema error")
	}
}

func TestSchemaCompiles(t *testing.T) {
	if _, err := reportSchema(); err != nil {
		t.Fatal(err)
	}
}

// TestSpecRecipe: the recipe a run record carries is the recipe's own map (recipe.Config.Map)
// with the driver's threads, plus what the Spec adds.
func TestSpecRecipe(t *testing.T) {
	s := testSpec()
	got := s.Recipe(3)
	want := s.Config.Map()
	want["threads"] = "3"
	for k, v := range map[string]string{"epochs": "6", "batch_size": "16", "normalize": "auto", "augment": "false",
		"val_split": "0.2", "warmup_steps": "2", "steps_per_epoch": "0"} {
		want[k] = v
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	c := recipe.Default()
	c.LR = 0
	if err := c.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a recipe's error: got %v, want it to wrap compare.ErrInvalid", err)
	}
}

// ctxEvaluator is a fake whose Evaluate fails once its context is cancelled, as tfrun's does.
type ctxEvaluator struct {
	*fakeTrainer
	onEval func()
}

func (f ctxEvaluator) Evaluate(ctx context.Context, b *dataset.Batch) (float64, int, error) {
	f.onEval()
	if err := ctx.Err(); err != nil {
		return 0, 0, err
	}
	return f.fakeTrainer.Evaluate(ctx, b)
}

// TestInterruptDuringValidation: Ctrl-C during epoch 1's validation pass (a driver that checks
// its context) is an interruption, not a failed run: the pass completes, epoch 1 is recorded
// and checkpointed, and the record stops at epoch 2's first step. (It was a failure with no
// position: cmd/fwbench's TestInterruptCheckpointsAndResumes saw it under load.)
func TestInterruptDuringValidation(t *testing.T) {
	data := synthLoaders(t, 4)
	s := testSpec()
	s.Epochs, s.BatchSize, s.Checkpoint = 2, 4, t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	evals := 0
	ft := ctxEvaluator{&fakeTrainer{name: Torch}, func() {
		if evals++; evals == 3 { // the first batch's parity value, then two validation batches
			cancel()
		}
	}}
	rec, err := Train(ctx, ft, s, data, nil)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("got %v, want ErrInterrupted", err)
	}
	if rec.InterruptedAt == nil || *rec.InterruptedAt != (Position{1, 0}) || len(rec.Epochs) != 1 || *ft.saved != (Position{1, 0}) {
		t.Errorf("got interrupted at %v, %d epochs, checkpoint %v; want {1 0}, 1 epoch, {1 0}", rec.InterruptedAt, len(rec.Epochs), ft.saved)
	}
}
