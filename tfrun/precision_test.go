package tfrun

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	tf "github.com/galeone/tensorflow/tensorflow/go"

	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// bf16U is bfloat16's unit roundoff, 2^-8: an 8-bit significand.
const bf16U = 1.0 / 256

// TestBF16Types: under bf16 every convolution and every Linear computes in
// bfloat16 (the graph's ops, and an activation fetched from a real run), the
// BatchNorms take bfloat16 maps with float32 parameters, the logits come
// out float32, and the variables stay float32 after a step.
func TestBF16Types(t *testing.T) {
	cfg := tinyConfig()
	cfg.Model, cfg.Precision = "vgg11_bn", recipe.BF16
	tr := mustNew(t, cfg, nil)
	net := mustNet(t, cfg)
	var convs, linears int
	for _, l := range net.Layers {
		switch l.Op {
		case model.Conv:
			convs++
		case model.Linear:
			linears++
		}
	}

	// The training pass's ops (the evaluation pass repeats them).
	count := map[string]int{}
	var conv, relu tf.Output
	for _, o := range tr.m.graph.Operations() {
		name := o.Name()
		if !strings.HasPrefix(name, "forward/") {
			continue
		}
		typ := o.Type()
		dt := tf.DataType(0)
		if o.NumOutputs() > 0 {
			dt = o.Output(0).DataType()
		}
		switch {
		case typ == "Conv2D" || typ == "FusedBatchNormV3" || typ == "Relu":
			count[typ+" "+dtName(dt)]++
		case typ == "MatMul" && !strings.Contains(name, "avgpool"): // the adaptive pool's matrix product accumulates in float32 by design
			count[typ+" "+dtName(dt)]++
		}
		if typ == "FusedBatchNormV3" {
			if u, err := o.Attr("U"); err != nil || u != tf.Float {
				t.Errorf("%s: U %v (%v), want float32 scale, offset and statistics", name, u, err)
			}
		}
		if typ == "Conv2D" && conv.Op == nil {
			conv = o.Output(0)
		}
		if typ == "Relu" && relu.Op == nil {
			relu = o.Output(0)
		}
	}
	for k, want := range map[string]int{
		"Conv2D bfloat16": convs, "FusedBatchNormV3 bfloat16": convs, "MatMul bfloat16": linears,
		"Conv2D float32": 0, "FusedBatchNormV3 float32": 0, "MatMul float32": 0, "Relu float32": 0,
	} {
		if count[k] != want {
			t.Errorf("training pass: %d ops %s, want %d (net: %d convolutions, %d linears); all: %v", count[k], k, want, convs, linears, count)
		}
	}

	b := synthBatch(0, 4, 3, 32, 1)
	x, _, err := tr.feedBatch(b, false)
	if err != nil {
		t.Fatal(err)
	}
	out, err := tr.sess.Run(map[tf.Output]*tf.Tensor{tr.m.x: x}, []tf.Output{conv, relu, tr.m.logits}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []tf.DataType{tf.Bfloat16, tf.Bfloat16, tf.Float} {
		if got := out[i].DataType(); got != want {
			t.Errorf("fetched %s: got %s, want %s", []string{"first convolution", "first ReLU", "logits"}[i], dtName(got), dtName(want))
		}
	}
	freeTensors(out)

	mustStep(t, tr, b)
	reads := make([]tf.Output, 0, len(tr.m.params)+len(tr.m.slots))
	for _, v := range tr.m.variables() {
		reads = append(reads, v.read)
	}
	out, err = tr.sess.Run(nil, reads, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer freeTensors(out)
	for i, v := range tr.m.variables() {
		if got := out[i].DataType(); got != tf.Float {
			t.Errorf("variable %s after a step: got %s, want float32", v.name, dtName(got))
		}
	}
}

func dtName(dt tf.DataType) string {
	switch dt {
	case tf.Float:
		return "float32"
	case tf.Bfloat16:
		return "bfloat16"
	case tf.Half:
		return "float16"
	}
	return "type " + strconv.Itoa(int(dt))
}

// TestBF16Numerics: bf16 logits and first training loss differ from fp32's
// (from the same weights, on the same batch) measurably, and by no more than
// bf16's rounding allows.
//
// Bound: every convolution and Linear on the longest path rounds its inputs
// to bfloat16 (relative error at most u = 2^-8 each); with no amplification
// the errors add, so the logits differ by at most L·u of the largest logit,
// L the number of such layers on the path (vgg11_bn: 8 convolutions + 3
// linears = 11, 4.3%; resnet18: 17 convolutions + 1 linear = 18, 7.0%),
// and the loss, the same chain of roundings, by L·u of itself. Measured
// (this test's log): vgg11_bn 1.04% (its evaluation logits are tiny at
// initialisation, 2e-5, so the relative error is the largest), resnet18
// 0.42%; losses 2.8e-6 and 3.6e-3 relative. "Measurably": the logits differ
// by more than 1e-4 of the largest, 100× float32's own spread between
// equivalent computations (about √n·2^-24 ≈ 4e-6 for the 4608-term sums of
// a 3×3×512 convolution).
func TestBF16Numerics(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		model string
		path  int // convolutions and linears on the longest path
	}{{"vgg11_bn", 11}, {"resnet18", 18}} {
		t.Run(c.model, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Model = c.model
			init, err := weights.InitParams(mustNet(t, cfg).Params, 1)
			if err != nil {
				t.Fatal(err)
			}
			b := synthBatch(0, 8, 3, 32, 1)
			var logits [2][]float32
			var loss [2]float64
			for i, p := range []string{recipe.FP32, recipe.BF16} {
				cfg.Precision = p
				tr := mustNew(t, cfg, init)
				if logits[i], err = tr.Logits(ctx, b); err != nil {
					t.Fatal(err)
				}
				loss[i] = mustStep(t, tr, b)
			}
			var maxRef, maxDiff float64
			for j := range logits[0] {
				maxRef = math.Max(maxRef, math.Abs(float64(logits[0][j])))
				maxDiff = math.Max(maxDiff, math.Abs(float64(logits[0][j]-logits[1][j])))
			}
			bound := float64(c.path) * bf16U
			rel, relLoss := maxDiff/maxRef, math.Abs(loss[1]-loss[0])/loss[0]
			t.Logf("logits: largest %.4g, bf16−fp32 up to %.4g (%.3g relative, bound %.3g); loss fp32 %v bf16 %v (%.3g relative)",
				maxRef, maxDiff, rel, bound, loss[0], loss[1], relLoss)
			if rel <= 1e-4 || rel > bound {
				t.Errorf("logits: got a bf16−fp32 difference of %.3g of the largest, want within (1e-4, %.3g]", rel, bound)
			}
			if relLoss == 0 || relLoss > bound {
				t.Errorf("first loss: got fp32 %v, bf16 %v (%.3g relative), want different and within %.3g", loss[0], loss[1], relLoss, bound)
			}
		})
	}
}

// TestFP16LossScale: GradScaler's rule with its defaults. A step whose
// scaled gradients overflow float16 changes no trained parameter, optimizer
// slot nor Adam's step count, halves the scale and zeroes the tracker
// (BatchNorm's running statistics still move, as in torch, whose forward
// pass updates them, and the dropout step counts); a finite step updates
// and counts; the 2000th finite step in a row doubles the scale; a
// checkpoint keeps scale and tracker.
func TestFP16LossScale(t *testing.T) {
	ctx := context.Background()
	cfg := tinyConfig()
	cfg.Model, cfg.Precision, cfg.Optimizer, cfg.LR = "vgg11_bn", recipe.FP16, recipe.Adam, 1e-3
	tr := mustNew(t, cfg, nil)
	b := synthBatch(0, 4, 3, 32, 1)
	state := func() (scale, tracker float64) {
		t.Helper()
		s, k, err := tr.lossScale()
		if err != nil {
			t.Fatal(err)
		}
		return s, k
	}
	all := func() []*weights.Tensor {
		t.Helper()
		ws, err := tr.read(append(append([]*variable(nil), tr.m.params...), tr.m.slots...))
		if err != nil {
			t.Fatal(err)
		}
		return ws
	}
	if got := tr.LossScale(); got != recipe.LossScaleInit {
		t.Fatalf("initial LossScale: got %v, want %v (GradScaler's init_scale)", got, recipe.LossScaleInit)
	}

	// 1. A finite step from the initial scale.
	before := all()
	loss := mustStep(t, tr, b)
	s, k := state()
	if s != recipe.LossScaleInit || k != 1 || tr.adamStep != 1 || tr.Step() != 1 {
		t.Errorf("finite step: got scale %v, tracker %v, Adam step %d, step %d; want %v, 1, 1, 1", s, k, tr.adamStep, tr.Step(), recipe.LossScaleInit)
	}
	if name := sameBits(before, all()); name == "" {
		t.Errorf("finite step (loss %v): no tensor changed, want an update", loss)
	}

	// 2. A step that overflows: 2^127·loss is a finite float32, but its
	// gradients at the logits, cast to float16 (largest 65504), are not.
	if err := tr.setLossScale(math.Ldexp(1, 127), 5); err != nil {
		t.Fatal(err)
	}
	before = all()
	loss, _, err := tr.TrainStep(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	after := all()
	for i, v := range append(append([]*variable(nil), tr.m.params...), tr.m.slots...) {
		changed := sameBits(before[i:i+1], after[i:i+1]) != ""
		if want := !v.param.Kind.Trainable() && v.name == v.param.Name; changed != want {
			t.Errorf("overflowing step: %s changed %t, want %t", v.name, changed, want)
		}
	}
	s, k = state()
	if want := math.Ldexp(1, 126); s != want || k != 0 || tr.adamStep != 1 || tr.Step() != 2 {
		t.Errorf("overflowing step: got scale %v, tracker %v, Adam step %d, step %d; want %v (×%v), 0, 1, 2", s, k, tr.adamStep, tr.Step(), want, recipe.LossScaleBackoff)
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		t.Errorf("overflowing step: got loss %v, want the finite unscaled loss", loss)
	}

	// 3. The growth: tracker 1999 and a finite step double the scale.
	if err := tr.setLossScale(1024, recipe.LossScaleGrowthInterval-1); err != nil {
		t.Fatal(err)
	}
	before = all()
	mustStep(t, tr, b)
	s, k = state()
	if s != 1024*recipe.LossScaleGrowth || k != 0 || tr.adamStep != 2 {
		t.Errorf("2000th finite step: got scale %v, tracker %v, Adam step %d; want %v, 0, 2", s, k, tr.adamStep, 1024*recipe.LossScaleGrowth)
	}
	if sameBits(before, all()) == "" {
		t.Error("2000th finite step: no tensor changed, want an update")
	}

	// 4. A checkpoint keeps scale and tracker.
	if err := tr.setLossScale(512, 7); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ck")
	if err := tr.SaveCheckpoint(dir, 0, 3); err != nil {
		t.Fatal(err)
	}
	_, _, meta, err := weights.LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if meta.Extra[recipe.MetaLossScale] != "512" || meta.Extra[recipe.MetaLossScaleTracker] != "7" {
		t.Errorf("checkpoint meta: got scale %q, tracker %q; want \"512\", \"7\"", meta.Extra[recipe.MetaLossScale], meta.Extra[recipe.MetaLossScaleTracker])
	}
	fresh := mustNew(t, cfg, nil)
	if _, _, err := fresh.LoadCheckpoint(dir); err != nil {
		t.Fatal(err)
	}
	fresh.mu.Lock()
	s, k, err = fresh.lossScale()
	fresh.mu.Unlock()
	if err != nil || s != 512 || k != 7 || fresh.adamStep != 2 {
		t.Errorf("restored: got scale %v, tracker %v, Adam step %d (%v); want 512, 7, 2", s, k, fresh.adamStep, err)
	}
	if got := mustNew(t, tinyConfig(), nil).LossScale(); got != 0 {
		t.Errorf("fp32 LossScale: got %v, want 0", got)
	}
}

// TestXLA: with --xla the training step really runs XLA clusters (its
// partition graph holds _XlaCompile and _XlaRun nodes and its step stats
// show them executed; the graph without --xla holds none), and its first
// loss equals the graph's without XLA within float32 rounding.
//
// Bound: XLA fuses and reorders the float32 arithmetic; the first-order
// bound of a sum of n terms is n·2^-24 relative, and the longest sums here
// are vgg11_bn's 3×3×512 convolutions, n = 4608: 2.7e-4. Measured: 1.1e-7.
func TestXLA(t *testing.T) {
	cfg := tinyConfig()
	cfg.Model = "vgg11_bn"
	init, err := weights.InitParams(mustNet(t, cfg).Params, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := synthBatch(0, 4, 3, 32, 1)
	var loss [2]float64
	var xlaNodes, xlaRuns [2]int
	for i, xla := range []bool{false, true} {
		cfg.XLA = xla
		tr := mustNew(t, cfg, init)
		if got, want := tr.Info().Settings[recipe.SettingXLA], strconv.FormatBool(xla); got != want {
			t.Errorf("Settings[xla]: got %q, want %q", got, want)
		}
		feeds, err := tr.stepFeeds(b)
		if err != nil {
			t.Fatal(err)
		}
		got, md, err := runTraced(tr.sess, feeds, []tf.Output{tr.m.trainLoss}, tr.m.train)
		if err != nil {
			t.Fatal(err)
		}
		loss[i] = float64(got[0])
		for _, g := range md.PartitionGraphs {
			for _, n := range g.Node {
				if n.Op == "_XlaCompile" || n.Op == "_XlaRun" {
					xlaNodes[i]++
				}
			}
		}
		for _, d := range md.GetStepStats().GetDevStats() {
			for _, n := range d.NodeStats {
				if strings.Contains(n.TimelineLabel, "= _XlaRun(") {
					xlaRuns[i]++
				}
			}
		}
	}
	t.Logf("without XLA: loss %v, %d XLA nodes, %d runs; with XLA: loss %v, %d XLA nodes, %d runs", loss[0], xlaNodes[0], xlaRuns[0], loss[1], xlaNodes[1], xlaRuns[1])
	if xlaNodes[0] != 0 || xlaRuns[0] != 0 {
		t.Errorf("without --xla: got %d _XlaCompile/_XlaRun nodes and %d runs, want none", xlaNodes[0], xlaRuns[0])
	}
	if xlaNodes[1] == 0 || xlaRuns[1] == 0 {
		t.Errorf("with --xla: got %d _XlaCompile/_XlaRun nodes and %d _XlaRun executed, want some of each", xlaNodes[1], xlaRuns[1])
	}
	if d := math.Abs(loss[1]-loss[0]) / loss[0]; d > 4608*math.Ldexp(1, -24) {
		t.Errorf("first loss: got %v with XLA, %v without (%.3g relative), want within 2.7e-4", loss[1], loss[0], d)
	}
}

// TestDeterministic: two runs of the same deterministic recipe from the same
// weights are bit-identical after two steps (weights, optimizer state and
// losses), and the library reads op determinism back as on.
func TestDeterministic(t *testing.T) {
	cfg := tinyConfig()
	cfg.Model, cfg.Deterministic = "resnet18", true
	init, err := weights.InitParams(mustNet(t, cfg).Params, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := synthBatch(0, 8, 3, 32, 1)
	var ws [2][]*weights.Tensor
	var losses [2][2]float64
	for i := range 2 {
		tr, err := New(context.Background(), cfg, init)
		if err != nil {
			t.Fatal(err)
		}
		if !opDeterminism() {
			t.Error("tsl::OpDeterminismRequired: got false, want true while a deterministic Trainer lives")
		}
		for s := range 2 {
			losses[i][s] = mustStep(t, tr, b)
		}
		ws[i], err = tr.read(append(append([]*variable(nil), tr.m.params...), tr.m.slots...))
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if losses[0] != losses[1] {
		t.Errorf("losses: got %v and %v, want bit-identical", losses[0], losses[1])
	}
	if name := sameBits(ws[0], ws[1]); name != "" {
		t.Errorf("after two steps: %s differs between the runs, want every tensor bit-identical", name)
	}
}

// TestSettings: every recipe.SettingKeys key on the CPU, with the values the
// library reads back, and a Trainer that asks for other process-wide
// switches than a live one holds is refused.
func TestSettings(t *testing.T) {
	for _, c := range []struct {
		name string
		set  func(*recipe.Config)
		want map[string]string
	}{
		{"default", func(*recipe.Config) {}, map[string]string{
			"precision": "fp32", "tf32": "false", "memory_format": "NHWC", "cudnn_benchmark": "false", "xla": "false", "deterministic": "false"}},
		{"bf16", func(c *recipe.Config) { c.Precision = recipe.BF16 }, map[string]string{
			"precision": "bf16", "tf32": "false", "memory_format": "NHWC", "cudnn_benchmark": "false", "xla": "false", "deterministic": "false"}},
		// TensorFlow autotunes no CPU convolution: false whatever the recipe asks.
		{"fp16 deterministic benchmark", func(c *recipe.Config) {
			c.Precision, c.Deterministic, c.CUDNNBenchmark = recipe.FP16, true, true
		}, map[string]string{
			"precision": "fp16", "tf32": "false", "memory_format": "NHWC", "cudnn_benchmark": "false", "xla": "false", "deterministic": "true"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := tinyConfig()
			c.set(&cfg)
			tr, err := New(context.Background(), cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			got := tr.Info().Settings
			for _, k := range recipe.SettingKeys() {
				if got[k] != c.want[k] {
					t.Errorf("Settings[%q]: got %q, want %q", k, got[k], c.want[k])
				}
			}
			for _, k := range []string{"inter_op_threads", "onednn"} {
				if got[k] == "" {
					t.Errorf("Settings[%q]: missing", k)
				}
			}
			if tf32Enabled() {
				t.Error("tsl::tensor_float_32_execution_enabled: got true, want false (precision is not tf32)")
			}
		})
	}

	cfg := tinyConfig()
	cfg.Deterministic = true
	mustNew(t, cfg, nil)
	cfg.Deterministic = false
	if tr, err := New(context.Background(), cfg, nil); !errors.Is(err, ErrSwitches) {
		if tr != nil {
			tr.Close()
		}
		t.Errorf("a non-deterministic Trainer beside a deterministic one: got %v, want ErrSwitches", err)
	}
}
