package compare

import (
	"context"
	"math"
	"testing"
	"time"
)

// TestTimeBreakdown runs TrainOne with a fake whose New takes 60 ms and whose steps take 20 ms
// each: the parts are never negative, sum to the total within 1% (the bound; by
// construction they sum exactly, start-up aside), and the time lands in the right parts.
func TestTimeBreakdown(t *testing.T) {
	t.Setenv("FWBENCH_CACHE", t.TempDir())
	fakeBuildDelay, fakeStepDelay = 60*time.Millisecond, 20*time.Millisecond
	defer func() { fakeBuildDelay, fakeStepDelay = 0, 0 }()
	s := testSpec()
	s.Framework = Torch
	s.Model, s.Hidden, s.Epochs, s.StepsPerEpoch, s.BatchSize, s.WarmupSteps = "vgg11", 16, 2, 3, 4, 2
	rec, err := TrainOne(context.Background(), s, TrainOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b := rec.TimeBreakdownSeconds
	if b == nil {
		t.Fatal("no time_breakdown_seconds")
	}
	var sum float64
	for _, p := range b.Parts() {
		if p.Seconds < 0 {
			t.Errorf("%s: %g s, want ≥ 0", p.Name, p.Seconds)
		}
		sum += p.Seconds
	}
	if math.Abs(sum-b.Total) > 0.01*b.Total {
		t.Errorf("parts sum to %g s, total %g s: want within 1%%", sum, b.Total)
	}
	// 2 epochs × 3 steps, 2 of them warm-up: 2 × 20 ms warm-up, 4 × 20 ms timed.
	for _, c := range []struct {
		name     string
		got, min float64
	}{
		{"startup (this test binary has run)", b.Startup, 1e-3},
		{"build (New sleeps 60 ms)", b.Build, 0.060},
		{"warm-up steps (2 × 20 ms)", b.WarmupSteps, 0.040},
		{"timed steps (4 × 20 ms)", b.TimedSteps, 0.080},
		{"total ≥ the study's training time", b.Total, rec.TotalSeconds},
	} {
		if c.got < c.min {
			t.Errorf("%s: got %g s, want at least %g", c.name, c.got, c.min)
		}
	}
	if b.Build > 0.060+0.5 || b.WarmupSteps > 0.040+0.5 {
		t.Errorf("build %g s, warm-up %g s: time landed in the wrong part", b.Build, b.WarmupSteps)
	}
}

// TestProcessAge: the process's age from /proc grows with the wall clock.
func TestProcessAge(t *testing.T) {
	a := ProcessAge()
	time.Sleep(50 * time.Millisecond)
	if b := ProcessAge(); !(a > 0) || b-a < 0.02 {
		t.Errorf("ProcessAge: %g then %g s 50 ms later; want positive and growing by ~0.05 (10 ms ticks)", a, b)
	}
}
