package compare

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fwbench/fwbench/recipe"
)

// fairRuns is a comparison whose every fairness condition holds: two repeats of two
// frameworks in the order T P P T, each run in its own process, the recipe of cfg.Spec,
// the same first batch and weights, warm-up left out, every timer read synchronised.
func fairRuns() (Config, *Report) {
	cfg := withDefaults(Config{Spec: testSpec()})
	cfg.Spec.Threads = 2
	rep := newReport(cfg)
	rep.Config.InitialWeights = "initial_weights.safetensors"
	rep.Config.InitialWeightsSHA256 = "file-sha"
	rep.Config.InitialWeightsTensorsSHA256 = "tensors-sha"
	steps := 5 // warm-up 2 (DefaultSpec) + 3 timed
	for i, fw := range []string{TensorFlow, Torch, Torch, TensorFlow} {
		rep.Runs = append(rep.Runs, RunRecord{
			Framework: fw, PID: 1000 + i, Recipe: cfg.Spec.Recipe(2), FirstBatchSHA256: "batch-sha",
			InitialWeightsSHA256: "file-sha", LoadedWeightsSHA256: "tensors-sha", WarmupSteps: 2,
			StepLosses: make([]float64, steps), StepTimesSeconds: make([]float64, steps-2), TimedSteps: steps - 2,
			SyncedTimerReads: steps, Precision: "fp32", Settings: fairSettings(fw),
		})
	}
	return cfg, rep
}

// fairSettings are the settings a framework reports for testSpec on the CPU, as the drivers
// report them (torchrun has no XLA; tfrun builds NHWC).
func fairSettings(fw string) map[string]string {
	s := map[string]string{"precision": "fp32", "tf32": "false", "memory_format": "contiguous",
		"cudnn_benchmark": "false", "xla": "n/a", "deterministic": "false"}
	if fw == TensorFlow {
		s["memory_format"], s["xla"], s["cudnn_benchmark"] = "NHWC", "false", "n/a"
	}
	return s
}

func TestFairnessHoldsOnFairRuns(t *testing.T) {
	cfg, rep := fairRuns()
	cs := fairness(cfg, rep)
	if len(cs) != 8 {
		t.Fatalf("got %d conditions, want 8", len(cs))
	}
	for _, c := range cs {
		if !c.Held {
			t.Errorf("%s: not held on fair runs: %s", c.Name, c.Evidence)
		}
	}
	if err := unfair(cs); err != nil {
		t.Errorf("unfair: got %v, want nil", err)
	}
}

// TestFairnessRowsFail breaks one condition at a time in the records and checks that exactly
// that row fails and that the comparison's result is ErrUnfair.
func TestFairnessRowsFail(t *testing.T) {
	tests := []struct {
		row   string
		spoil func(cfg *Config, rep *Report)
	}{
		{"same data split, batch order and augmentation", func(_ *Config, r *Report) { r.Runs[1].FirstBatchSHA256 = "other" }},
		{"same data split, batch order and augmentation", func(_ *Config, r *Report) {
			for i := range r.Runs {
				r.Runs[i].FirstBatchSHA256 = ""
			}
		}},
		{"same initial weights", func(_ *Config, r *Report) { r.Runs[2].LoadedWeightsSHA256 = "random-init" }},
		{"same initial weights", func(_ *Config, r *Report) { r.Runs[0].InitialWeightsSHA256 = "another-file" }},
		{"same initial weights", func(_ *Config, r *Report) {
			for i := range r.Runs {
				r.Runs[i].LoadedWeightsSHA256 = "all-the-same-but-not-the-file"
			}
		}},
		{"same architecture, loss, optimizer, hyper-parameters and threads", func(_ *Config, r *Report) { r.Runs[1].Recipe["lr"] = "0.1" }},
		{"same architecture, loss, optimizer, hyper-parameters and threads", func(_ *Config, r *Report) { r.Runs[3].Recipe["threads"] = "1" }},
		{"same architecture, loss, optimizer, hyper-parameters and threads", func(_ *Config, r *Report) { delete(r.Runs[0].Recipe, "head") }},
		{"same architecture, loss, optimizer, hyper-parameters and threads", func(_ *Config, r *Report) { r.Runs[2].Recipe["loss"] = "mse" }},
		{"each run in its own process", func(_ *Config, r *Report) { r.Runs[3].PID = r.Runs[0].PID }},
		{"order alternates across repeats", func(_ *Config, r *Report) { r.Runs[2], r.Runs[3] = r.Runs[3], r.Runs[2] }},
		{"warm-up left out of throughput", func(_ *Config, r *Report) { r.Runs[1].WarmupSteps = 0 }},
		{"warm-up left out of throughput", func(_ *Config, r *Report) {
			r.Runs[0].StepTimesSeconds = append(r.Runs[0].StepTimesSeconds, 1) // a warm-up step timed
		}},
		{"GPU synchronised before every timer read", func(_ *Config, r *Report) { r.Runs[2].SyncedTimerReads-- }},
		{"same precision and speed settings", func(_ *Config, r *Report) { r.Runs[1].Precision = "bf16" }},
		{"same precision and speed settings", func(_ *Config, r *Report) { r.Runs[0].Settings["tf32"] = "true" }},
		{"same precision and speed settings", func(_ *Config, r *Report) { delete(r.Runs[2].Settings, "deterministic") }},
		{"same precision and speed settings", func(_ *Config, r *Report) { r.Runs[3].Settings["precision"] = "bf16" }},
		{"same precision and speed settings", func(_ *Config, r *Report) { r.Runs[1].Settings["deterministic"] = "true" }},
	}
	for _, tc := range tests {
		cfg, rep := fairRuns()
		tc.spoil(&cfg, rep)
		cs := fairness(cfg, rep)
		for _, c := range cs {
			if want := c.Name != tc.row; c.Held != want {
				t.Errorf("breaking %q: row %q held=%v, want %v (%s)", tc.row, c.Name, c.Held, want, c.Evidence)
			}
		}
		err := unfair(cs)
		if !errors.Is(err, ErrUnfair) || !strings.Contains(err.Error(), tc.row) {
			t.Errorf("breaking %q: unfair() = %v, want ErrUnfair naming the row", tc.row, err)
		}
	}
}

// TestOrderWithAFailedRun: a child that crashed without a record leaves a gap in the finished
// runs (T _ P T); with its failure on record the order row holds, without it the row fails.
func TestOrderWithAFailedRun(t *testing.T) {
	cfg, rep := fairRuns()
	rep.Runs = append(rep.Runs[:1], rep.Runs[2:]...)
	row := func() Condition {
		for _, c := range fairness(cfg, rep) {
			if c.Name == "order alternates across repeats" {
				return c
			}
		}
		t.Fatal("no order row")
		return Condition{}
	}
	if c := row(); c.Held {
		t.Errorf("a missing run without a failure: order held (%s), want not held", c.Evidence)
	}
	rep.Failures = []Failure{{Framework: Torch, Repeat: 1, ExitCode: 2}}
	if c := row(); !c.Held {
		t.Errorf("a missing run with its failure recorded: order not held (%s), want held", c.Evidence)
	}
}

func TestNoRunsIsNotFair(t *testing.T) {
	cfg, rep := fairRuns()
	rep.Runs = nil
	for _, c := range fairness(cfg, rep) {
		if c.Held {
			t.Errorf("%s: held with no runs, want not held", c.Name)
		}
	}
}

func TestTrajectoryAndLogits(t *testing.T) {
	runs := []RunRecord{
		{Framework: TensorFlow, StepLosses: []float64{1.0, 0.9, 0.8}},
		{Framework: Torch, StepLosses: []float64{1.0, 0.9005, 0.81}},
	}
	tp := trajectory(runs, []string{TensorFlow, Torch}, 1e-3)
	// step 2: |0.9-0.9005|/0.9005 = 5.55e-4 (within); step 3: 0.01/0.81 = 1.23e-2 (beyond).
	if tp == nil || tp.Steps != 3 || tp.Passed || tp.FirstStepBeyond != 3 || tp.MaxRelDiff < 0.0123 || tp.MaxRelDiff > 0.0124 {
		t.Errorf("trajectory: got %+v, want 3 steps, failed first at step 3, max 1.23e-2", tp)
	}
	lp := compareLogits([]string{TensorFlow, Torch}, map[string][]float32{TensorFlow: {2, -4}, Torch: {2.002, -4}}, 1e-3)
	// max abs 0.002 over the largest |logit| 4: 5e-4, within 1e-3.
	if lp == nil || !lp.Passed || lp.Count != 2 || lp.MaxRelDiff < 4.99e-4 || lp.MaxRelDiff > 5.01e-4 {
		t.Errorf("logits: got %+v, want passed with max_rel_diff 5e-4", lp)
	}
	lp = compareLogits([]string{TensorFlow, Torch}, map[string][]float32{TensorFlow: {2, -4}, Torch: {2, -4, 1}}, 1e-3)
	if lp.Passed {
		t.Errorf("logits of different lengths: got passed, want failed")
	}
}

// TestSettingsRow: the settings row follows the recipe, not a fixed table: with --xla and
// bf16 asked for, TensorFlow must report xla=true and every run bf16 with TF32 off, while
// torch's n/a for XLA (libtorch has none) holds.
func TestSettingsRow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(r *Report)
		held  bool
	}{
		{"as asked", func(*Report) {}, true},
		{"tensorflow without xla", func(r *Report) { r.Runs[0].Settings["xla"] = "false" }, false},
		{"torch in fp32", func(r *Report) { r.Runs[1].Settings["precision"] = "fp32" }, false},
		{"tf32 on in bf16", func(r *Report) { r.Runs[2].Settings["tf32"] = "true" }, false},
	} {
		cfg, rep := fairRuns()
		cfg.Spec.XLA, cfg.Spec.Precision = true, "bf16"
		for i := range rep.Runs {
			rep.Runs[i].Precision = "bf16"
			rep.Runs[i].Settings["precision"] = "bf16"
			if rep.Runs[i].Framework == TensorFlow {
				rep.Runs[i].Settings["xla"] = "true"
			}
		}
		tc.spoil(rep)
		if c := settingsCondition(cfg.Spec, rep.Runs); c.Held != tc.held {
			t.Errorf("%s: held=%v, want %v (%s)", tc.name, c.Held, tc.held, c.Evidence)
		}
	}
}

// TestDefaultTolerances: each precision has its own default, and the 16-bit ones are no
// tighter than fp32's (their rounding unit is larger: bf16 2^-9, fp16 2^-12 against 2^-24).
func TestDefaultTolerances(t *testing.T) {
	fp32, _ := DefaultTolerances("fp32")
	if p, _ := DefaultTolerances(""); p != fp32 {
		t.Errorf(`DefaultTolerances(""): got %g, want fp32's %g`, p, fp32)
	}
	for _, p := range []string{"tf32", "bf16", "fp16"} {
		if got, _ := DefaultTolerances(p); !(got > fp32) {
			t.Errorf("DefaultTolerances(%s): got %g, want more than fp32's %g", p, got, fp32)
		}
	}
	if cfg := withDefaults(Config{Spec: func() Spec { s := testSpec(); s.Precision = "bf16"; return s }()}); cfg.ParityTolerance != defaultTolerances["bf16"][0] {
		t.Errorf("withDefaults with bf16: parity tolerance %g, want bf16's %g", cfg.ParityTolerance, defaultTolerances["bf16"][0])
	}
}

// TestSettingsInReport: report.md shows each framework's settings, XLA marked as a
// one-framework option, and the terminal table shows the precision.
func TestSettingsInReport(t *testing.T) {
	r := sampleReport()
	md := r.Markdown()
	for _, want := range []string{"## Settings that decide speed", "| setting | tensorflow | torch | note |",
		"| xla | false | n/a | TensorFlow only", "| tf32 | false | false |", "same precision and speed settings",
		// TF's totals 12 and 15 (median 13.5) with build 1 s: 7.4%; torch's 11 and 12.
		"## Where the time went", "| build | 1.00 (7.4%) | 1.00 (8.7%) |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if tab := r.Table(); !strings.Contains(tab, "fp32 / NHWC") || !strings.Contains(tab, "fp32 / contiguous") {
		t.Errorf("terminal table lacks the precision / memory format row:\n%s", tab)
	}
	if tab := r.Table(); !strings.Contains(tab, "start-up / library / build (s)") || !strings.Contains(tab, "0.50 / 0.00 / 1.00") {
		t.Errorf("terminal table lacks the time breakdown:\n%s", tab)
	}
}

// TestSettingsRowOnCUDA: on a GPU the autotuner is compared (on the CPU it is not: no cuDNN).
func TestSettingsRowOnCUDA(t *testing.T) {
	cfg, rep := fairRuns()
	for i := range rep.Runs {
		rep.Runs[i].Settings["cudnn_benchmark"] = "false"
	}
	if c := settingsCondition(cfg.Spec, rep.Runs); !c.Held {
		t.Fatalf("fair CPU runs: %s", c.Evidence)
	}
	rep.Runs[1].Settings["cudnn_benchmark"] = "true"
	if c := settingsCondition(cfg.Spec, rep.Runs); !c.Held {
		t.Errorf("cpu: cudnn_benchmark differs, want the row held (not compared on the CPU): %s", c.Evidence)
	}
	cfg.Spec.Device = "cuda:0"
	if c := settingsCondition(cfg.Spec, rep.Runs); c.Held {
		t.Errorf("cuda: torch autotuned while the recipe did not ask: got held, want failed")
	}
}

// lossScaleTrainer is a fake with fp16 loss scaling.
type lossScaleTrainer struct{ *fakeTrainer }

func (lossScaleTrainer) LossScale() float64 { return 32768 }

// TestLossScaleRecorded: an fp16 run records the driver's final loss scale in its settings;
// other precisions do not.
func TestLossScaleRecorded(t *testing.T) {
	for _, p := range []string{"fp16", "bf16"} {
		s := testSpec()
		s.Precision = p
		r := newRecord(recipe.Info{Framework: Torch, Device: "cpu"}, s, Loaders{})
		r.finish(time.Now(), nil, 0, 0, lossScaleTrainer{&fakeTrainer{}})
		got, ok := r.Settings["loss_scale"]
		if want := p == "fp16"; ok != want || (want && got != "32768") {
			t.Errorf("%s: loss_scale %q (present %t), want 32768 only for fp16", p, got, ok)
		}
	}
}
