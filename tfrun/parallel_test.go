package tfrun

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	stepstats "github.com/galeone/tensorflow/tensorflow/go/core/framework/step_stats_go_proto"
	config "github.com/galeone/tensorflow/tensorflow/go/core/protobuf/for_core_protos_go_proto"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// freePorts returns n loopback addresses whose ports were free a moment ago.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var ls []net.Listener
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	return addrs
}

// shard returns rank's share of the global batch g split over ranks
// ranks, as dataset's sharded loader makes it: contiguous, the first
// g.N mod ranks shards one image larger.
func shard(g *dataset.Batch, rank, ranks int) *dataset.Batch {
	per, extra := g.N/ranks, g.N%ranks
	off := rank*per + min(rank, extra)
	n := per
	if rank < extra {
		n++
	}
	px := g.H * g.W * g.C
	return &dataset.Batch{X: g.X[off*px : (off+n)*px], Labels: g.Labels[off : off+n], N: n, H: g.H, W: g.W, C: g.C,
		Offset: off, GlobalN: g.N}
}

// parallelConfig is tinyConfig on one thread per rank (two ranks share the
// test machine's two cores) with the given dropout.
func parallelConfig(dropout float64) recipe.Config {
	cfg := tinyConfig()
	cfg.Threads, cfg.InterOpThreads = 1, 1
	cfg.Dropout = dropout
	return cfg
}

// maxRelDiff returns the largest relative difference between two tensor
// sets, tensor by tensor max|a−b| / max|b|, and the tensor it occurs in.
func maxRelDiff(a, b []*weights.Tensor) (float64, string) {
	worst, at := 0.0, ""
	for i := range b {
		var diff, scale float64
		for j, v := range b[i].Data {
			diff = math.Max(diff, math.Abs(float64(a[i].Data[j])-float64(v)))
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		if r := diff / scale; r > worst || (scale == 0 && diff > 0) {
			worst, at = r, b[i].Name
		}
	}
	return worst, at
}

// TestParallelEqualsSingleProcess is the acceptance check of #16 for
// TensorFlow: two ranks (two servers in this process, on loopback) with
// global batch 16 against one Trainer on the whole batch, VGG11 at 32 px,
// 3 SGD steps, with and without dropout. The bound 1e-4 (relative to each
// tensor's largest value) is the issue's; both sides compute in float32
// and differ only in summation order (a sum of two halves against one sum
// over 16 images), about 1e-6 measured. The test has teeth because the
// biases start at zero, so they are all update: a rank that used only its
// own shard's gradient, or the wrong rows of the dropout masks, would be
// off by a relative O(1) there. Each step's loss must be the mean of the
// ranks' (their shards are equal) and the correct counts must add up.
func TestParallelEqualsSingleProcess(t *testing.T) {
	const ranks, steps = 2, 3
	for _, tc := range []struct {
		dropout   float64
		global    int
		precision string
		tol       float64 // 0: only the ranks are compared
	}{
		{0, 16, recipe.FP32, 1e-4},
		{0.5, 16, recipe.FP32, 1e-4},
		// Shards of 7 and 6: gradient weights 14/13 and 12/13. (Not 15: its
		// classes are balanced, 5 each, so the last bias's gradient cancels to
		// ~1e-8 and the relative measure meets only rounding noise.)
		{0, 13, recipe.FP32, 1e-4},
		{0, 16, recipe.FP16, 0}, // half-precision sums in another order: the ranks must agree, and skip together
	} {
		t.Run(fmt.Sprintf("dropout %g global %d %s", tc.dropout, tc.global, tc.precision), func(t *testing.T) {
			global := tc.global
			cfg := parallelConfig(tc.dropout)
			cfg.Precision = tc.precision
			init, err := weights.InitParams(mustNet(t, cfg).Params, cfg.Seed)
			if err != nil {
				t.Fatal(err)
			}
			single := mustNew(t, cfg, init)
			addrs := freePorts(t, ranks)
			trs := make([]*Trainer, ranks)
			errs := make([]error, ranks)
			var wg sync.WaitGroup
			for r := range ranks {
				wg.Go(func() {
					trs[r], errs[r] = NewParallel(context.Background(), cfg, init,
						recipe.Parallel{Rank: r, WorldSize: ranks, Workers: addrs, Timeout: time.Minute})
				})
			}
			wg.Wait()
			for r := range ranks {
				if errs[r] != nil {
					t.Fatalf("rank %d: %v", r, errs[r])
				}
				t.Cleanup(func() { trs[r].Close() })
			}
			var took time.Duration
			for s := range steps {
				g := synthBatch(s*global, global, cfg.Classes, cfg.ImageSize, 1)
				want, wantCorrect, err := single.TrainStep(context.Background(), g)
				if err != nil {
					t.Fatal(err)
				}
				losses := make([]float64, ranks)
				correct := make([]int, ranks)
				start := time.Now()
				for r := range ranks {
					wg.Go(func() {
						losses[r], correct[r], errs[r] = trs[r].TrainStep(context.Background(), shard(g, r, ranks))
					})
				}
				wg.Wait()
				took += time.Since(start)
				for r := range ranks {
					if errs[r] != nil {
						t.Fatalf("step %d rank %d: %v", s, r, errs[r])
					}
				}
				mean := 0.0
				for r := range ranks {
					b := shard(g, r, ranks)
					mean += losses[r] * float64(b.N) / float64(global)
				}
				if tc.tol > 0 && math.Abs(mean-want) > 1e-5*math.Abs(want) {
					t.Errorf("step %d: the ranks' losses %v weighted by their shares make %v, want the single process's %v within 1e-5", s, losses, mean, want)
				}
				if tc.tol > 0 && correct[0]+correct[1] != wantCorrect {
					t.Errorf("step %d: ranks' correct %v, want a sum of %d", s, correct, wantCorrect)
				}
			}
			t.Logf("%d two-rank steps in %v; CommSeconds rank 0 %.3f, rank 1 %.3f", steps, took.Round(time.Millisecond),
				trs[0].CommSeconds(), trs[1].CommSeconds())
			want := mustWeights(t, single)
			got0, got1 := mustWeights(t, trs[0]), mustWeights(t, trs[1])
			if d := sameBits(got0, got1); d != "" {
				t.Errorf("rank 0 and rank 1 weights differ first in %s, want identical", d)
			}
			if a, b := trs[0].LossScale(), trs[1].LossScale(); a != b {
				t.Errorf("loss scales %v and %v, want equal", a, b)
			}
			d, at := maxRelDiff(got0, want)
			t.Logf("max relative difference to the single process: %.3g (%s)", d, at)
			if tc.tol > 0 && d > tc.tol {
				t.Errorf("max relative difference %.3g in %s, want <= %g", d, at, tc.tol)
			}
		})
	}
}

// envPeer makes the test binary a peer rank for TestParallelPeerVanishes:
// "rank;worker0,worker1;timeout" (see peerMain).
const envPeer = "TFRUN_TEST_PARALLEL_PEER"

func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(envPeer); ok {
		os.Exit(peerMain(spec))
	}
	os.Exit(m.Run())
}

// peerMain is a rank of a two-rank run of parallelConfig(0): it trains
// step 0 on its shard of synthBatch(0, 16) and prints "stepped"; then, for
// each line on its standard input, it trains the next step the same way,
// until the input closes: without a line it is a rank that hangs or is
// about to vanish, with one a rank that comes late.
func peerMain(spec string) int {
	f := strings.Split(spec, ";")
	if len(f) != 3 {
		fmt.Fprintf(os.Stderr, "peer: bad spec %q\n", spec)
		return 2
	}
	rank, err1 := strconv.Atoi(f[0])
	timeout, err2 := time.ParseDuration(f[2])
	if err := errors.Join(err1, err2); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 2
	}
	cfg := parallelConfig(0)
	tr, err := NewParallel(context.Background(), cfg, nil,
		recipe.Parallel{Rank: rank, WorldSize: 2, Workers: strings.Split(f[1], ","), Timeout: timeout})
	if err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 1
	}
	if _, _, err := tr.TrainStep(context.Background(), shard(synthBatch(0, 16, cfg.Classes, cfg.ImageSize, 1), rank, 2)); err != nil {
		fmt.Fprintln(os.Stderr, "peer:", err)
		return 1
	}
	fmt.Println("stepped")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if _, _, err := tr.TrainStep(context.Background(), shard(synthBatch(0, 16, cfg.Classes, cfg.ImageSize, 1), rank, 2)); err != nil {
			fmt.Fprintln(os.Stderr, "peer:", err)
			return 1
		}
		fmt.Println("stepped")
	}
	return 0
}

// TestParallelPeerVanishes runs one rank in the test and the other in a
// child process (peerMain), which trains the first step with it and then
// is killed while the test's rank waits in the second step's all-reduces,
// stays alive without joining them, or joins them 2 s late. A killed peer
// fails the test's TrainStep through TensorFlow within seconds; a stalled
// one after the collective timeout (plus the longest step, see
// runParallelStep), and later calls return ErrStalled; a late one within
// the timeout does not fail it. Close must return. (TensorFlow's own
// collective timeout sometimes crashed the stalled case's process; see
// runParallelStep.)
func TestParallelPeerVanishes(t *testing.T) {
	const timeout = 5 * time.Second
	for _, tc := range []struct {
		name       string
		peer, self int
		kill       bool
		late       time.Duration // > 0: the peer joins step 1 after it
	}{
		{"follower killed", 1, 0, true, 0},
		{"leader killed", 0, 1, true, 0},
		{"follower stalls", 1, 0, false, 0},
		{"follower late", 1, 0, false, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addrs := freePorts(t, 2)
			exe, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d;%s;%v", envPeer, tc.peer, strings.Join(addrs, ","), timeout))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				stdin.Close()
				cmd.Process.Kill()
				cmd.Wait()
			})
			cfg := parallelConfig(0)
			tr, err := NewParallel(context.Background(), cfg, nil,
				recipe.Parallel{Rank: tc.self, WorldSize: 2, Workers: addrs, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tr.Close() }) // idempotent: the cases that end early
			g := synthBatch(0, 16, cfg.Classes, cfg.ImageSize, 1)
			if _, _, err := tr.TrainStep(context.Background(), shard(g, tc.self, 2)); err != nil {
				t.Fatalf("step 0 with the peer: %v (peer: %s)", err, stderr.String())
			}
			if line, err := bufio.NewReader(stdout).ReadString('\n'); line != "stepped\n" {
				t.Fatalf("peer said %q (%v), want \"stepped\" (peer: %s)", line, err, stderr.String())
			}
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				_, _, err := tr.TrainStep(context.Background(), shard(g, tc.self, 2))
				done <- err
			}()
			if tc.kill {
				time.Sleep(500 * time.Millisecond)
				cmd.Process.Kill()
			}
			if tc.late > 0 {
				time.Sleep(tc.late)
				if _, err := io.WriteString(stdin, "step\n"); err != nil {
					t.Fatal(err)
				}
				select {
				case err := <-done:
					took := time.Since(start)
					if err != nil {
						t.Fatalf("step 1 with a peer %v late: %v (peer: %s)", tc.late, err, stderr.String())
					}
					if took < tc.late {
						t.Errorf("step 1 took %v, less than the peer's delay %v", took, tc.late)
					}
					t.Logf("step 1 with a peer %v late took %v", tc.late, took.Round(time.Millisecond))
				case <-time.After(timeout + 30*time.Second):
					t.Fatalf("step 1 with a peer %v late still runs", tc.late)
				}
				return
			}
			// The bound: the collective timeout, plus slack for the
			// step's own computation on a busy two-core machine.
			const bound = timeout + 30*time.Second
			select {
			case err := <-done:
				took := time.Since(start)
				t.Logf("step 1 failed after %v: %v", took.Round(time.Millisecond), err)
				if err == nil {
					t.Fatalf("step 1 without the peer: got no error, want one")
				}
				if !strings.HasPrefix(err.Error(), "tfrun: train step: ") {
					t.Errorf("got error %q, want the prefix \"tfrun: train step: \"", err)
				}
				if !tc.kill {
					if took < timeout {
						t.Errorf("step 1 failed after %v, before the collective timeout %v", took, timeout)
					}
					if _, _, err := tr.TrainStep(context.Background(), shard(g, tc.self, 2)); !errors.Is(err, ErrStalled) {
						t.Errorf("a step after the abandoned one: got %v, want ErrStalled", err)
					}
				}
			case <-time.After(bound):
				t.Fatalf("step 1 without the peer still runs after %v, want an error within it", bound)
			}
			closed := make(chan error, 1)
			start = time.Now()
			go func() { closed <- tr.Close() }()
			select {
			case err := <-closed:
				t.Logf("Close took %v: %v", time.Since(start).Round(time.Millisecond), err)
			case <-time.After(bound):
				t.Fatalf("Close still runs after %v", bound)
			}
		})
	}
}

func TestParallelValidation(t *testing.T) {
	cfg := parallelConfig(0)
	two := []string{"127.0.0.1:1", "127.0.0.1:2"}
	for _, tc := range []struct {
		name string
		p    recipe.Parallel
		want string
	}{
		{"negative world size", recipe.Parallel{WorldSize: -1}, "world size -1"},
		{"rank outside", recipe.Parallel{Rank: 2, WorldSize: 2, Workers: two}, "rank 2 is outside [0, 2)"},
		{"negative timeout", recipe.Parallel{WorldSize: 2, Workers: two, Timeout: -time.Second}, "collective timeout -1s is negative"},
		{"too few workers", recipe.Parallel{WorldSize: 2, Workers: two[:1]}, "1 worker addresses for world size 2"},
		{"no port", recipe.Parallel{WorldSize: 1, Workers: []string{"localhost"}}, `worker 0 address "localhost"`},
		{"port 0", recipe.Parallel{WorldSize: 1, Workers: []string{"127.0.0.1:0"}}, "want host:port with a port in [1, 65535]"},
		{"no host", recipe.Parallel{WorldSize: 1, Workers: []string{":2222"}}, "want host:port with a port in [1, 65535]"},
		{"same address", recipe.Parallel{WorldSize: 2, Workers: []string{two[0], two[0]}}, `workers 0 and 1 have the same address "127.0.0.1:1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := NewParallel(context.Background(), cfg, nil, tc.p)
			if err == nil {
				tr.Close()
				t.Fatalf("got no error, want one wrapping recipe.ErrInvalid")
			}
			if !errors.Is(err, recipe.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error wrapping recipe.ErrInvalid that says %q", err, tc.want)
			}
		})
	}
	// An invalid recipe fails with Validate's error, before any server starts.
	for _, bad := range recipe.BadRecipes()[:3] {
		_, err := NewParallel(context.Background(), bad.Config, nil, recipe.Parallel{WorldSize: 2, Workers: two})
		if want := bad.Config.Validate(); err == nil || err.Error() != want.Error() {
			t.Errorf("%s: got %v, want Validate's %v", bad.Name, err, want)
		}
	}
}

// TestParallelSettings checks Info's backend and world size, that one rank
// of world size 1 trains bit for bit as New does (its all-reduce of one is
// the identity and its gradient weight 1), that its address stays taken
// (the gRPC server cannot stop), and the shard checks of TrainStep.
func TestParallelSettings(t *testing.T) {
	cfg := parallelConfig(0)
	addr := freePorts(t, 1)
	tr, err := NewParallel(context.Background(), cfg, nil, recipe.Parallel{WorldSize: 1, Workers: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	single := mustNew(t, cfg, nil)
	for _, tc := range []struct {
		name             string
		tr               *Trainer
		backend, workers string
	}{
		{"NewParallel", tr, recipe.BackendGRPC, "1"},
		{"New", single, "", ""},
	} {
		s := tc.tr.Info().Settings
		if got := s[recipe.SettingBackend]; got != tc.backend {
			t.Errorf("%s: backend %q, want %q", tc.name, got, tc.backend)
		}
		if got := s[recipe.SettingWorldSize]; got != tc.workers {
			t.Errorf("%s: world size %q, want %q", tc.name, got, tc.workers)
		}
	}
	for s := range 2 {
		g := synthBatch(s*8, 8, cfg.Classes, cfg.ImageSize, 1)
		want := mustStep(t, single, g)
		if got := mustStep(t, tr, shard(g, 0, 1)); got != want {
			t.Errorf("step %d: loss %v, want New's %v", s, got, want)
		}
	}
	if d := sameBits(mustWeights(t, tr), mustWeights(t, single)); d != "" {
		t.Errorf("weights differ from New's first in %s, want the same bits", d)
	}
	if comm := tr.CommSeconds(); !(comm > 0) {
		t.Errorf("CommSeconds %v after two steps, want > 0", comm)
	}
	if comm := single.CommSeconds(); comm != 0 {
		t.Errorf("New's CommSeconds %v, want 0", comm)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	again, err := NewParallel(context.Background(), cfg, nil, recipe.Parallel{WorldSize: 1, Workers: addr})
	if err == nil {
		again.Close()
		t.Errorf("a second server at %s: got no error, want TensorFlow's", addr[0])
	} else {
		t.Logf("a second server at the address: %v", err)
	}

	// A shard outside its global batch, with dropout masks to cut.
	drop := mustNew(t, parallelConfig(0.5), nil)
	b := synthBatch(0, 8, cfg.Classes, cfg.ImageSize, 1)
	b.Offset, b.GlobalN = 4, 8
	if _, _, err := drop.TrainStep(context.Background(), b); err == nil || !strings.Contains(err.Error(), "outside the global batch") {
		t.Errorf("shard [4, 12) of 8: got %v, want an error about the global batch", err)
	}
}

func TestCollectiveNanos(t *testing.T) {
	node := func(name string, start, end int64) *stepstats.NodeExecStats {
		return &stepstats.NodeExecStats{NodeName: name, AllStartNanos: start, AllEndRelNanos: end - start}
	}
	for _, tc := range []struct {
		name  string
		nodes []*stepstats.NodeExecStats
		want  int64 // from the spans, by hand
	}{
		{"alone", []*stepstats.NodeExecStats{node("c1", 10, 20)}, 10},
		{"overlapping collectives count once", []*stepstats.NodeExecStats{node("c1", 10, 20), node("c2", 15, 30)}, 20},
		{"hidden behind compute", []*stepstats.NodeExecStats{node("c1", 10, 20), node("conv", 5, 25)}, 0},
		{"partly hidden", []*stepstats.NodeExecStats{node("c1", 10, 30), node("conv", 5, 15), node("relu", 20, 22), node("mm", 21, 25)}, 10},
		{"compute elsewhere", []*stepstats.NodeExecStats{node("c1", 10, 20), node("conv", 0, 5), node("mm", 40, 50)}, 10},
	} {
		md := &config.RunMetadata{StepStats: &stepstats.StepStats{DevStats: []*stepstats.DeviceStepStats{{Device: "cpu", NodeStats: tc.nodes}}}}
		if got := collectiveNanos(md, []string{"c1", "c2"}); got != tc.want {
			t.Errorf("%s: got %d ns, want %d", tc.name, got, tc.want)
		}
	}
}
