package torchrun

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// freeStore returns a free port on the loopback as a store address.
func freeStore(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startRanks makes the world ranks of one data-parallel run in this process,
// each joining on its own goroutine (rank 0 serves the store on a free loopback
// port); the test closes them at its end.
func startRanks(t *testing.T, cfg recipe.Config, init []*weights.Tensor, world int, timeout time.Duration) []*Trainer {
	t.Helper()
	store := freeStore(t)
	trs := make([]*Trainer, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		wg.Go(func() {
			p := recipe.Parallel{Rank: r, WorldSize: world, Store: store, Timeout: timeout}
			trs[r], errs[r] = NewParallel(context.Background(), cfg, init, p)
		})
	}
	wg.Wait()
	for r, tr := range trs {
		if tr != nil {
			t.Cleanup(func() { tr.Close() })
		}
		if errs[r] != nil {
			t.Fatalf("rank %d: %v", r, errs[r])
		}
	}
	return trs
}

// shard is rank r's share of a global batch among world ranks, as
// dataset.LoaderConfig.Shard cuts it: images [r·N/world, (r+1)·N/world).
func shard(b *dataset.Batch, r, world int) *dataset.Batch {
	n := b.N / world
	img := b.H * b.W * b.C
	return &dataset.Batch{
		X: b.X[r*n*img : (r+1)*n*img], Labels: b.Labels[r*n : (r+1)*n],
		N: n, H: b.H, W: b.W, C: b.C, Offset: r * n, GlobalN: b.N,
	}
}

// stepAll runs one step on every rank at once (each rank on its own goroutine,
// as separate processes would) and returns their losses and correct counts.
func stepAll(trs []*Trainer, b *dataset.Batch) ([]float64, []int, []error) {
	losses, corrects, errs := make([]float64, len(trs)), make([]int, len(trs)), make([]error, len(trs))
	var wg sync.WaitGroup
	for r, tr := range trs {
		wg.Go(func() { losses[r], corrects[r], errs[r] = tr.TrainStep(context.Background(), shard(b, r, len(trs))) })
	}
	wg.Wait()
	return losses, corrects, errs
}

// ulp32 is the spacing of float32 values at |x|.
func ulp32(x float32) float64 {
	x = float32(math.Abs(float64(x)))
	return float64(math.Nextafter32(x, float32(math.Inf(1))) - x)
}

// updateDiff compares two runs' updates of one tensor from init: the largest
// |(got−init) − (want−init)| beyond the float32 rounding of the weights
// themselves (each of steps updates rounds w to half an ulp, in each run), as
// a fraction of the largest update max|want−init|.
func updateDiff(got, want, init []float32, steps int) float64 {
	var d, m float64
	for j := range want {
		du := math.Abs(float64(got[j]) - float64(want[j]))
		allow := float64(steps) * max(ulp32(got[j]), ulp32(want[j]), ulp32(init[j]))
		d = max(d, du-allow)
		m = max(m, math.Abs(float64(want[j])-float64(init[j])))
	}
	if m == 0 {
		return max(d, 0)
	}
	return max(d, 0) / m
}

// TestParallelMatchesSingle is #16's acceptance test: k steps of 2 ranks on
// shards of a global batch of 16 leave the weights that one process leaves
// after the same k steps on the whole batches. Gradient averaging (sum / world
// size) makes the two runs equal up to float32 rounding of the reductions
// (the per-image gradients are the same; only how their sum is grouped differs),
// so the weights must agree within 1e-4 of each tensor's largest magnitude (the
// issue's bound) and, stricter, their updates from the initial weights within
// 1e-3 of each tensor's largest update, beyond the weights' own float32
// rounding (updateDiff): an average taken over the wrong count (a sum, or one
// rank's gradient) is off by ~50-100% of the update. SGD runs at lr 0.1 so
// that its updates are many ulps of the weights (at 0.01 a deep conv's
// updates are ~4 ulps and the weights barely tell the runs apart). Both ranks
// apply the same all-reduced gradients, so their weights are equal bit for bit.
// Dropout takes its masks from the global batch's (rows Offset.. of the mask a
// single process draws), so a run with dropout matches too.
func TestParallelMatchesSingle(t *testing.T) {
	const world, global, steps = 2, 16, 3
	tests := []struct {
		name string
		edit func(*recipe.Config)
	}{
		{"sgd", func(c *recipe.Config) { c.LR = 0.1 }},
		{"dropout", func(c *recipe.Config) { c.LR, c.Dropout = 0.1, 0.5 }},
		{"adam", func(c *recipe.Config) { c.Optimizer, c.LR = recipe.Adam, 1e-3 }},
		// Features mode: only the head trains and is reduced; the base stays as loaded.
		{"features", func(c *recipe.Config) { c.LR, c.Mode = 0.1, model.ModeFeatures }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			cfg := tinyConfig()
			cfg.Dropout, cfg.Threads = 0, 1
			tt.edit(&cfg)
			net := mustNet(t, cfg)
			if cfg.Dropout > 0 && len(net.Dropouts()) == 0 {
				t.Fatalf("%s has no dropout layer: the case tests nothing", net.Name)
			}
			init, err := weights.InitParams(net.Params, cfg.Seed)
			if err != nil {
				t.Fatal(err)
			}
			single := mustNew(t, cfg, init)
			ranks := startRanks(t, cfg, init, world, time.Minute)
			for s := range steps {
				b := synthBatch(s*global, global, cfg.Classes, cfg.ImageSize, 7)
				wantLoss, wantCorrect, err := single.TrainStep(context.Background(), b)
				if err != nil {
					t.Fatal(err)
				}
				losses, corrects, errs := stepAll(ranks, b)
				if err := errors.Join(errs...); err != nil {
					t.Fatalf("step %d: %v", s, err)
				}
				// Each rank's loss is the mean over its shard; equal shards average to the global mean.
				if got := (losses[0] + losses[1]) / 2; math.Abs(got-wantLoss) > 1e-5*math.Abs(wantLoss) {
					t.Errorf("step %d: mean of the ranks' losses got %.7g, want %.7g (single process)", s, got, wantLoss)
				}
				if got := corrects[0] + corrects[1]; got != wantCorrect {
					t.Errorf("step %d: correct summed over ranks got %d, want %d (single process)", s, got, wantCorrect)
				}
			}
			want, err := single.Weights()
			if err != nil {
				t.Fatal(err)
			}
			got := make([][]*weights.Tensor, world)
			for r, tr := range ranks {
				if got[r], err = tr.Weights(); err != nil {
					t.Fatal(err)
				}
			}
			var worstW, worstU float64
			for i, w := range want {
				for j := range got[0][i].Data {
					if got[0][i].Data[j] != got[1][i].Data[j] {
						t.Errorf("%s[%d]: rank 0 got %v, rank 1 got %v, want equal bits", w.Name, j, got[0][i].Data[j], got[1][i].Data[j])
						break
					}
				}
				rw := reftest.RelErr(got[0][i].Data, w.Data)
				ru := updateDiff(got[0][i].Data, w.Data, init[i].Data, steps)
				worstW, worstU = max(worstW, rw), max(worstU, ru)
				if rw > 1e-4 {
					t.Errorf("%s: weights of 2 ranks got max|Δ| %.3g of max|w|, want ≤ 1e-4 (single process, batch 16)", w.Name, rw)
				}
				if ru > 1e-3 {
					t.Errorf("%s: updates of 2 ranks got max|Δ| %.3g of the largest update, want ≤ 1e-3 (single process, batch 16)", w.Name, ru)
				}
			}
			t.Logf("%s: %d steps, worst relative weight difference %.3g, worst relative update difference %.3g, %.1f s",
				tt.name, steps, worstW, worstU, time.Since(start).Seconds())
			if c := ranks[0].CommSeconds(); !(c > 0) {
				t.Errorf("rank 0: CommSeconds after %d steps got %v, want > 0", steps, c)
			}
			if c := single.CommSeconds(); c != 0 {
				t.Errorf("single process: CommSeconds got %v, want 0", c)
			}
		})
	}
}

// TestParallelSettings: a parallel Trainer reports its backend and world size
// in Info().Settings; a single-process Trainer (New, or NewParallel with world
// size 0) has neither key.
func TestParallelSettings(t *testing.T) {
	cfg := tinyConfig()
	cfg.Threads = 1
	ranks := startRanks(t, cfg, nil, 2, time.Minute)
	for r, tr := range ranks {
		s := tr.Info().Settings
		for _, kv := range [][2]string{{recipe.SettingBackend, recipe.BackendGloo}, {recipe.SettingWorldSize, "2"}, {"gloo_device", "127.0.0.1"}} {
			if got := s[kv[0]]; got != kv[1] {
				t.Errorf("rank %d: Settings[%q] got %q, want %q", r, kv[0], got, kv[1])
			}
		}
	}
	single, err := NewParallel(context.Background(), cfg, nil, recipe.Parallel{})
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	for _, k := range []string{recipe.SettingBackend, recipe.SettingWorldSize} {
		if v, ok := single.Info().Settings[k]; ok {
			t.Errorf("single process: Settings[%q] got %q, want no such key", k, v)
		}
	}
}

// TestParallelInvalid: a bad rank or store address is refused before any
// model is built, with an error wrapping recipe.ErrInvalid; where NCCL cannot
// be used (no CUDA libtorch or no plugin), a CUDA device with a process group
// is refused with errors.ErrUnsupported.
func TestParallelInvalid(t *testing.T) {
	cfg := tinyConfig()
	type invalid struct {
		name string
		p    recipe.Parallel
		dev  string
		want error
	}
	tests := []invalid{
		{"rank = world size", recipe.Parallel{Rank: 2, WorldSize: 2, Store: "127.0.0.1:29500"}, "", recipe.ErrInvalid},
		{"negative rank", recipe.Parallel{Rank: -1, WorldSize: 2, Store: "127.0.0.1:29500"}, "", recipe.ErrInvalid},
		{"rank without a group", recipe.Parallel{Rank: 1}, "", recipe.ErrInvalid},
		{"no port", recipe.Parallel{WorldSize: 2, Store: "127.0.0.1"}, "", recipe.ErrInvalid},
		{"port 0", recipe.Parallel{WorldSize: 2, Store: "127.0.0.1:0"}, "", recipe.ErrInvalid},
		{"port 65536", recipe.Parallel{WorldSize: 2, Store: "127.0.0.1:65536"}, "", recipe.ErrInvalid},
		{"port not a number", recipe.Parallel{WorldSize: 2, Store: "127.0.0.1:http"}, "", recipe.ErrInvalid},
		{"no host", recipe.Parallel{WorldSize: 2, Store: ":29500"}, "", recipe.ErrInvalid},
	}
	if _, err := NCCL(); err != nil { // else TestCUDAParallelNCCL trains on NCCL
		tests = append(tests, invalid{"cuda without NCCL", recipe.Parallel{WorldSize: 2, Store: "127.0.0.1:29500"}, "cuda:0", errors.ErrUnsupported})
	}
	for _, tt := range tests {
		c := cfg
		if tt.dev != "" {
			c.Device = tt.dev
		}
		tr, err := NewParallel(context.Background(), c, nil, tt.p)
		if tr != nil {
			tr.Close()
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: NewParallel got error %v, want one wrapping %v", tt.name, err, tt.want)
		}
	}
}

// TestParallelPeerFailure: a peer that leaves mid-run (closes), or stops
// stepping, makes the other rank's next TrainStep return an error, within the
// collective timeout (plus slack for a loaded machine) rather than hanging;
// the failed rank then refuses further steps and closes without waiting for
// the lost peer. A rank that joins alone gives up after the timeout.
func TestParallelPeerFailure(t *testing.T) {
	const timeout = 3 * time.Second
	const slack = 15 * time.Second
	cfg := tinyConfig()
	cfg.Threads = 1
	b := synthBatch(0, 4, cfg.Classes, cfg.ImageSize, 7)
	for _, closes := range []bool{true, false} {
		name := map[bool]string{true: "peer closed", false: "peer silent"}[closes]
		t.Run(name, func(t *testing.T) {
			ranks := startRanks(t, cfg, nil, 2, timeout)
			if _, _, errs := stepAll(ranks, b); errors.Join(errs...) != nil {
				t.Fatal(errors.Join(errs...))
			}
			if closes {
				if err := ranks[1].Close(); err != nil {
					t.Fatalf("rank 1: Close: %v", err)
				}
			}
			start := time.Now()
			_, _, err := ranks[0].TrainStep(context.Background(), shard(b, 0, 2))
			took := time.Since(start)
			if err == nil {
				t.Fatalf("rank 0: TrainStep with its peer gone got no error, want one")
			}
			t.Logf("rank 0: error after %.2f s: %v", took.Seconds(), err)
			if took > timeout+slack {
				t.Errorf("rank 0: TrainStep returned its error after %v, want ≤ %v (the timeout %v plus slack)", took, timeout+slack, timeout)
			}
			if _, _, err := ranks[0].TrainStep(context.Background(), shard(b, 0, 2)); err == nil {
				t.Errorf("rank 0: a step after a failed one got no error, want one")
			}
			start = time.Now()
			ranks[0].Close()
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("rank 0: Close after a failed step took %v, want it not to wait for the lost peer", took)
			}
		})
	}
	t.Run("alone", func(t *testing.T) {
		start := time.Now()
		p := recipe.Parallel{Rank: 1, WorldSize: 2, Store: freeStore(t), Timeout: timeout}
		tr, err := NewParallel(context.Background(), cfg, nil, p)
		if err == nil {
			tr.Close()
			t.Fatalf("rank 1 without rank 0: NewParallel got no error, want one")
		}
		if took := time.Since(start); took > timeout+slack {
			t.Errorf("rank 1 without rank 0: NewParallel gave up after %v, want ≤ %v", took, timeout+slack)
		}
		t.Logf("alone: %v", err)
	})
}

// TestParallelCloseOrder: ranks that close in either order after the same
// steps all close cleanly (rank 0 serves the store until the others are done).
func TestParallelCloseOrder(t *testing.T) {
	cfg := tinyConfig()
	cfg.Threads = 1
	b := synthBatch(0, 4, cfg.Classes, cfg.ImageSize, 7)
	for _, first := range []int{0, 1} {
		t.Run("rank "+strconv.Itoa(first)+" first", func(t *testing.T) {
			ranks := startRanks(t, cfg, nil, 2, 20*time.Second)
			if _, _, errs := stepAll(ranks, b); errors.Join(errs...) != nil {
				t.Fatal(errors.Join(errs...))
			}
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for _, r := range []int{first, 1 - first} {
				wg.Go(func() { errs[r] = ranks[r].Close() })
				time.Sleep(200 * time.Millisecond)
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Errorf("rank %d: Close got %v, want nil", r, err)
				}
			}
			if _, _, err := ranks[0].TrainStep(context.Background(), shard(b, 0, 2)); !errors.Is(err, ErrClosed) {
				t.Errorf("rank 0: TrainStep after Close got %v, want %v", err, ErrClosed)
			}
		})
	}
}

// ExampleNewParallel is compile-only: it needs the other ranks running.
func ExampleNewParallel() {
	cfg := recipe.Default()
	p := recipe.Parallel{Rank: 0, WorldSize: 2, Store: "127.0.0.1:29501"}
	tr, err := NewParallel(context.Background(), cfg, nil, p)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer tr.Close()
	// Each rank trains on its shard of every global batch (dataset.LoaderConfig.Shard).
}

// TestNCCLPlugin loads the NCCL plugin where a CUDA libtorch is (GPU or not):
// it must say it was built for the loaded torch, and a world of one rank made
// through it (tr_group_new: a TCPStore, then the plugin's ProcessGroupNCCL)
// must be made on a GPU, and refused by ProcessGroupNCCL itself without one.
// torchrun loads libtorch_cuda.so only where it is found; a CPU-only libtorch
// (CI) has none, so there is no GPU to run NCCL on: the test skips.
func TestNCCLPlugin(t *testing.T) {
	why := CUDAUnavailable()
	if strings.Contains(why, "cannot load libtorch_cuda.so") {
		t.Skip("no GPU support here (a CPU-only libtorch): " + why)
	}
	built, err := NCCL()
	if err != nil {
		t.Fatalf("libtorch_cuda.so loads but the NCCL plugin does not: %v", err)
	}
	loaded, _, _ := strings.Cut(Version(), "+")
	if !strings.HasPrefix(built, "torch "+loaded+" nccl ") {
		t.Errorf("NCCL() got %q, want \"torch %s nccl A.B.C\"", built, loaded)
	}
	host, port, err := storeAddress(freeStore(t))
	if err != nil {
		t.Fatal(err)
	}
	g, err := nativeGroupNew("nccl", host, port, 0, 1, 20*time.Second, true, "", "")
	switch {
	case why == "" && err != nil:
		t.Errorf("a GPU is here: the NCCL group of one rank got %v", err)
	case why != "" && (err == nil || !strings.Contains(err.Error(), "GPU")):
		t.Errorf("no GPU (%s): the NCCL group of one rank got error %v, want ProcessGroupNCCL's refusal naming the GPU", why, err)
	}
	t.Logf("plugin %s; CUDA: %q; group: %v", built, why, err)
	if g != nil {
		if err := nativeGroupFree(g, true, 10*time.Second); err != nil {
			t.Error(err)
		}
	}
}
