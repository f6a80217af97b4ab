package compare

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// memHub is an in-memory stand-in for dist's rendezvous: exchange returns every rank's value
// once all n ranks have called it (a cyclic barrier). It tests the training loop's side of
// data-parallel runs; dist tests the network side.
type memHub struct {
	n    int
	mu   sync.Mutex
	cond *sync.Cond
	vals []any
	out  []any
	gen  int
	left int // ranks whose run ended: an exchange they miss fails instead of waiting forever
}

var errRankLeft = errors.New("a rank's run ended while the others waited for it")

// leave marks a rank's run as ended.
func (h *memHub) leave() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.left++
	h.cond.Broadcast()
}

func newMemHub(n int) *memHub {
	h := &memHub{n: n}
	h.cond = sync.NewCond(&h.mu)
	return h
}

func (h *memHub) exchange(v any) ([]any, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	gen := h.gen
	h.vals = append(h.vals, v)
	if len(h.vals) == h.n {
		h.out, h.vals = h.vals, nil
		h.gen++
		h.cond.Broadcast()
		return h.out, nil
	}
	for gen == h.gen {
		if h.left > 0 {
			return nil, errRankLeft
		}
		h.cond.Wait()
	}
	return h.out, nil
}

type memGroup struct {
	h      *memHub
	rank   int
	onStep func() // called after each Step returns; may be nil
}

func (g memGroup) Rank() int                 { return g.rank }
func (g memGroup) WorldSize() int            { return g.h.n }
func (g memGroup) Parallel() recipe.Parallel { return recipe.Parallel{Rank: g.rank, WorldSize: g.h.n} }
func (g memGroup) Check(ctx context.Context, name, value string) error {
	vals, err := g.h.exchange(value)
	if err != nil {
		return err
	}
	for _, v := range vals {
		if v != value {
			return fmt.Errorf("%s differ across ranks: %v", name, v)
		}
	}
	return nil
}
func (g memGroup) Step(ctx context.Context, v StepValues) (StepValues, error) {
	if g.onStep != nil {
		defer g.onStep()
	}
	vals, err := g.h.exchange(v)
	if err != nil {
		return StepValues{}, err
	}
	var sum StepValues
	for _, x := range vals {
		x := x.(StepValues)
		sum.LossSum += x.LossSum
		sum.Correct += x.Correct
		sum.Images += x.Images
		sum.Stop = sum.Stop || x.Stop
	}
	return sum, nil
}

// rankTrainer is a fake whose loss depends on its rank, so that the record's loss shows the
// average over ranks.
type rankTrainer struct {
	*fakeTrainer
	rank  int
	evals int
}

func (f *rankTrainer) TrainStep(ctx context.Context, b *dataset.Batch) (float64, int, error) {
	f.steps++
	return float64(f.rank + 1), b.N / 2, nil
}
func (f *rankTrainer) Evaluate(ctx context.Context, b *dataset.Batch) (float64, int, error) {
	f.evals++
	return f.fakeTrainer.Evaluate(ctx, b)
}

// runRanks trains n ranks of s in goroutines over sharded loaders, and cancels rank
// cancelRank's context when its cancelAfter-th Group.Step call returns (the loop calls Step
// before each step, to agree on stopping, and after it: call 2k is step k's second).
func runRanks(t *testing.T, s Spec, n int, init func(rank int) []*weights.Tensor, cancelRank, cancelAfter int) ([]*RunRecord, []*rankTrainer, []error) {
	t.Helper()
	h := newMemHub(n)
	recs, trs, errs := make([]*RunRecord, n), make([]*rankTrainer, n), make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		data := shardLoaders(t, s.BatchSize, dataset.Shard{Rank: r, Count: n})
		trs[r] = &rankTrainer{fakeTrainer: &fakeTrainer{name: Torch, init: init(r)}, rank: r}
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		onStep := func() {
			if calls++; r == cancelRank && calls == cancelAfter {
				cancel()
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer cancel()
			recs[r], errs[r] = train(ctx, trs[r], s, data, nil, newLapClock(0), memGroup{h, r, onStep})
			h.leave()
		}()
	}
	wg.Wait()
	return recs, trs, errs
}

func sameInit(int) []*weights.Tensor {
	return []*weights.Tensor{{Name: "w", Shape: []int{1}, Data: []float32{1}}}
}

func TestParallelTrainLoop(t *testing.T) {
	s := testSpec()
	s.Epochs, s.BatchSize, s.WarmupSteps, s.Checkpoint = 2, 4, 1, t.TempDir()
	recs, trs, errs := runRanks(t, s, 2, sameInit, -1, 0)
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	steps := 2 * 6 // 24 training images / global batch 4 = 6 steps per epoch, 2 epochs
	r0, r1 := recs[0], recs[1]
	tests := []struct {
		name      string
		got, want any
	}{
		{"rank 0 steps", trs[0].steps, steps},
		{"rank 1 steps", trs[1].steps, steps},
		// rankTrainer: loss rank+1 on 2 images each, so the global mean is (1·2 + 2·2)/4.
		{"step loss is the mean over ranks", r0.StepLosses[0], 1.5},
		{"rank 1 records the same global loss", r1.StepLosses[steps-1], 1.5},
		// b.N/2 = 1 hit per rank per step, 2 of the global 4.
		{"train accuracy over the global batch", r0.Epochs[0].TrainAccuracy, 0.5},
		{"world size", r0.WorldSize, 2},
		{"rank", r1.Rank, 1},
		// The first batch's evaluation (one per rank) plus rank 0's validation: 6 val images
		// (ValSplit 0.2 of 30) in batches of 4 = 2 batches per epoch, 2 epochs.
		{"rank 0 evaluations", trs[0].evals, 1 + 2*2},
		{"rank 1 evaluations (first batch only)", trs[1].evals, 1},
		{"rank 0 writes the checkpoint", trs[0].saved != nil && *trs[0].saved == Position{2, 0}, true},
		{"rank 1 writes none", trs[1].saved == nil, true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	// Throughput counts the global batch: timed steps × 4 images over the timed seconds (the
	// steps' own plus the data waits).
	if got := r0.ImagesPerSecond * sumSeconds(r0.StepTimesSeconds) / (1 - r0.DataWaitFraction); math.Abs(got-float64(4*(steps-1))) > 1e-6*got {
		t.Errorf("images/s × timed seconds: got %v, want %d (global batch 4 × %d timed steps)", got, 4*(steps-1), steps-1)
	}
}

func sumSeconds(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// TestParallelInterruptAgreed: Ctrl-C reaching one rank only (rank 1) stops every rank
// before the same step, and rank 0 writes the checkpoint there: after step 3 (call 6), or
// just after the ranks agreed to go on with step 3 (call 5), when the rank must still train
// step 3, batch included, and stop before step 4.
func TestParallelInterruptAgreed(t *testing.T) {
	for _, after := range []int{5, 6} {
		s := testSpec()
		s.Epochs, s.BatchSize, s.Checkpoint = 2, 4, t.TempDir()
		_, trs, errs := runRanks(t, s, 2, sameInit, 1, after)
		for r, err := range errs {
			if !errors.Is(err, ErrInterrupted) {
				t.Errorf("cancelled after call %d: rank %d: got %v, want ErrInterrupted", after, r, err)
			}
		}
		if trs[0].steps != 3 || trs[1].steps != 3 {
			t.Errorf("cancelled after call %d: steps: got %d and %d, want 3 on both ranks", after, trs[0].steps, trs[1].steps)
		}
		if trs[0].saved == nil || *trs[0].saved != (Position{0, 3}) || trs[1].saved != nil {
			t.Errorf("cancelled after call %d: checkpoints: rank 0 %v, rank 1 %v, want {0 3} from rank 0 only", after, trs[0].saved, trs[1].saved)
		}
	}
}

// TestParallelWeightsMismatch: ranks that loaded different weights stop before training.
func TestParallelWeightsMismatch(t *testing.T) {
	s := testSpec()
	s.Epochs, s.BatchSize = 1, 4
	init := func(r int) []*weights.Tensor {
		return []*weights.Tensor{{Name: "w", Shape: []int{1}, Data: []float32{float32(r)}}}
	}
	_, trs, errs := runRanks(t, s, 2, init, -1, 0)
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "loaded weights") {
			t.Errorf("rank %d: got %v, want the loaded weights' mismatch", r, err)
		}
		if trs[r].steps != 0 {
			t.Errorf("rank %d trained %d steps, want none", r, trs[r].steps)
		}
	}
}

func TestCheckParallel(t *testing.T) {
	s := testSpec()
	s.BatchSize = 6
	tests := []struct {
		n    int
		want string // "" means accepted
	}{
		{1, ""}, {2, ""}, {3, ""}, {6, ""},
		{4, "--batch-size 6 is the global batch and must split evenly over 4 processes"},
		{0, "at least 1 process"},
	}
	for _, tt := range tests {
		err := CheckParallel(s, tt.n)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid)) {
			t.Errorf("n=%d: got %v, want %q", tt.n, err, tt.want)
		}
	}
}

func TestRecipeHash(t *testing.T) {
	a := testSpec()
	b := a
	b.Data, b.Checkpoint = "/elsewhere", "/ck" // paths do not count
	c := a
	c.LR *= 2
	d := a
	d.Framework = TensorFlow
	if RecipeHash(a) != RecipeHash(b) {
		t.Errorf("paths changed the recipe hash")
	}
	if RecipeHash(a) == RecipeHash(c) || RecipeHash(a) == RecipeHash(d) {
		t.Errorf("another lr or framework kept the recipe hash")
	}
}

func TestScaling(t *testing.T) {
	run := func(ips float64, partial bool) *RunRecord {
		c := 0.01
		return &RunRecord{Framework: Torch, ImagesPerSecond: ips, Partial: partial, Backend: recipe.BackendGloo, CommSecondsPerStep: &c}
	}
	runs := map[string]map[int][2]*RunRecord{Torch: {
		0: {run(100, false), run(160, false)}, // efficiency 160 / (2·100) = 0.8
		1: {run(100, false), run(180, false)}, // 0.9
		2: {run(100, false), run(10, true)},   // partial: left out
		3: {run(100, false), nil},             // failed: left out
	}}
	got := scaling([]string{TensorFlow, Torch}, runs, 2)
	if len(got) != 1 {
		t.Fatalf("got %d rows, want 1 (tensorflow has no runs)", len(got))
	}
	x := got[0]
	if x.Pairs != 2 || math.Abs(x.Efficiency.Median-0.85) > 1e-12 || x.Efficiency.Min != 0.8 || math.Abs(x.Efficiency.Max-0.9) > 1e-12 ||
		x.Backend != recipe.BackendGloo || x.CommSecondsPerStep == nil || *x.CommSecondsPerStep != 0.01 {
		t.Errorf("got %+v, want 2 pairs, efficiency median 0.85 (of 0.8 and 0.9), gloo, 10 ms", x)
	}
}

// TestScalingReport: a report with compare --nproc's figures matches the schema and shows
// them in the table and in report.md.
func TestScalingReport(t *testing.T) {
	r := sampleReport()
	n2 := r.Runs[1]
	n2.WorldSize, n2.Backend, n2.ImagesPerSecond = 2, recipe.BackendGloo, 2*0.8*r.Runs[1].ImagesPerSecond
	r.ScalingRuns = []RunRecord{n2}
	r.Scaling = scaling(r.Config.Frameworks, map[string]map[int][2]*RunRecord{Torch: {0: {&r.Runs[1], &n2}}}, 2)
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	if err := ValidateReportFile(filepath.Join(dir, "report.json")); err != nil {
		t.Fatalf("report.json does not match its schema: %v", err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Data-parallel scaling", "| torch | gloo | 1 |", "| 80.0% [80.0–80.0] |", "scaling efficiency at 2 processes"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
}

// TestPerRank: an N-process run of a comparison gets the single-process run's threads shared
// out (intra and inter-op, at least 1 each), so that both use the same cores.
func TestPerRank(t *testing.T) {
	tests := []struct{ threads, inter, nproc, wantIntra, wantInter int }{
		{2, 2, 2, 1, 1}, {8, 4, 2, 4, 2}, {2, 2, 4, 1, 1}, {6, 3, 3, 2, 1},
	}
	for _, tt := range tests {
		s := testSpec()
		s.Threads, s.InterOpThreads = tt.threads, tt.inter
		if a, b := perRank(s, tt.nproc); a != tt.wantIntra || b != tt.wantInter {
			t.Errorf("%d/%d threads over %d processes: got %d/%d, want %d/%d", tt.threads, tt.inter, tt.nproc, a, b, tt.wantIntra, tt.wantInter)
		}
	}
}
