package compare

import (
	"errors"
	"strings"
	"testing"
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
			SyncedTimerReads: steps,
		})
	}
	return cfg, rep
}

func TestFairnessHoldsOnFairRuns(t *testing.T) {
	cfg, rep := fairRuns()
	cs := fairness(cfg, rep)
	if len(cs) != 7 {
		t.Fatalf("got %d conditions, want 7", len(cs))
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
