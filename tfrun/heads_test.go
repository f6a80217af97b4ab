package tfrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	"github.com/galeone/tensorflow/tensorflow/go/op"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// heWeights returns seeded tensors for ps (weights.InitParams) whose linear
// layers are redrawn with He scaling (std √(2/in), biases 0.01·N(0, 1)):
// torchvision's Linear init (std 0.01) makes logits so small that every
// class gets nearly the same probability, which would hide the differences
// these tests look for.
func heWeights(t *testing.T, ps []model.Param, seed int64) []*weights.Tensor {
	t.Helper()
	ts, err := weights.InitParams(ps, seed)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		switch p.Kind {
		case model.LinearWeight:
			std := float32(math.Sqrt(2 / float64(p.Shape[1])))
			for j, v := range randData(p.NumElements(), uint64(100+i)) {
				ts[i].Data[j] = v * std
			}
		case model.LinearBias:
			for j, v := range randData(p.NumElements(), uint64(100+i)) {
				ts[i].Data[j] = 0.01 * v
			}
		}
	}
	return ts
}

func mustParams(t *testing.T, cfg recipe.Config) []model.Param {
	t.Helper()
	return mustNet(t, cfg).Params
}

func floatTensor(t *testing.T, shape []int64, data []float32) *tf.Tensor {
	t.Helper()
	x, err := tf.ReadTensor(tf.Float, shape, bytes.NewReader(asBytes(data)))
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestAdaptivePool checks adaptivePool's graph against a pure-Go
// AdaptiveAvgPool2d((7, 7)) with torch's bins (model.AdaptivePoolBins: sum
// over the bin, divided by its size, in float64), forward and backward, for
// input sides below 7 (1 at 32 px: every cell copies the one input; 2 at
// 64 px and 3: bins overlap and repeat), equal to it (224 px: the
// identity), and above it (10 at 320 px, 14 at 448 px: overlapping bins of
// 2 and 3 rows), and for a non-square 3×10 map. The output must be torch's
// NCHW map.
//
// Tolerance 1e-6 of the largest value: each output is a float32 sum of at
// most 3·3 inputs of order 1 times a rounded 1/count (float32's relative
// precision is 6e-8 per operation); a wrong bin changes an output by order 1.
func TestAdaptivePool(t *testing.T) {
	const n, c, out = 2, 3, model.PoolSize
	cfg, err := sessionConfig(1, 1, recipe.Device{}, true, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, sz := range [][2]int{{1, 1}, {2, 2}, {3, 3}, {7, 7}, {10, 10}, {14, 14}, {3, 10}} {
		inH, inW := sz[0], sz[1]
		t.Run(fmt.Sprintf("%dx%d", inH, inW), func(t *testing.T) {
			s := op.NewScope()
			x := op.Placeholder(s.SubScope("x"), tf.Float, op.PlaceholderShape(tf.MakeShape(-1, int64(inH), int64(inW), c)))
			r := op.Placeholder(s.SubScope("r"), tf.Float, op.PlaceholderShape(tf.MakeShape(-1, c, out, out)))
			y := adaptivePool(s.SubScope("pool"), x, model.Shape{C: c, H: inH, W: inW}, out)
			obj := op.Sum(s, op.Mul(s, y, r), op.Const(s.SubScope("axes"), []int32{0, 1, 2, 3}))
			g, err := s.Finalize()
			if err != nil {
				t.Fatal(err)
			}
			defer freeGraph(g)
			// d obj / d x: the pool's backward pass (Transpose, Reshape and
			// MatMul gradients from the C++ registry) applied to r.
			grads, err := g.AddGradients("grad", []tf.Output{obj}, []tf.Output{x}, nil)
			if err != nil {
				t.Fatal(err)
			}
			sess, err := tf.NewSession(g, &tf.SessionOptions{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			xv, rv := randData(n*inH*inW*c, uint64(inH*100+inW)), randData(n*c*out*out, uint64(50+inH*100+inW))
			xt, rt := floatTensor(t, []int64{n, int64(inH), int64(inW), c}, xv), floatTensor(t, []int64{n, c, out, out}, rv)
			defer freeTensors([]*tf.Tensor{xt, rt})
			res, err := sess.Run(map[tf.Output]*tf.Tensor{x: xt, r: rt}, []tf.Output{y, grads[0]}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer freeTensors(res)
			gotY, gotG := make([]float32, n*c*out*out), make([]float32, len(xv))
			if err := errors.Join(readFloats(res[0], gotY), readFloats(res[1], gotG)); err != nil {
				t.Fatal(err)
			}

			rs, re := model.AdaptivePoolBins(inH, out)
			cs, ce := model.AdaptivePoolBins(inW, out)
			wantY := make([]float32, len(gotY))
			wantG64 := make([]float64, len(xv))
			for b := range n {
				for ch := range c {
					for i := range out {
						for j := range out {
							var sum float64
							count := float64((re[i] - rs[i]) * (ce[j] - cs[j]))
							o := (b*c+ch)*out*out + i*out + j // torch's [N, C, 7, 7]
							for h := rs[i]; h < re[i]; h++ {
								for w := cs[j]; w < ce[j]; w++ {
									k := ((b*inH+h)*inW+w)*c + ch // NHWC
									sum += float64(xv[k])
									wantG64[k] += float64(rv[o]) / count
								}
							}
							wantY[o] = float32(sum / count)
						}
					}
				}
			}
			wantG := make([]float32, len(wantG64))
			for k, v := range wantG64 {
				wantG[k] = float32(v)
			}
			if e := reftest.RelErr(gotY, wantY); e > 1e-6 {
				t.Errorf("pooled values differ from torch's bins by %.3g of the largest, want <= 1e-6", e)
			}
			if e := reftest.RelErr(gotG, wantG); e > 1e-6 {
				t.Errorf("gradient differs from the bins' by %.3g of the largest, want <= 1e-6", e)
			}
		})
	}
}

// TestHeadTorchvisionMatchesFlatten runs the torchvision head at 64 px,
// where the base's 2×2 map is pooled to 7×7 with overlapping bins, against
// the flatten head whose classifier.0 is the pooled layer folded into one
// matrix: the pool is linear, P per channel (7·7 × 2·2, from
// model.AdaptivePoolBins), so W_tv·pool(f) = (W_tv·P)·f. Both models must give
// the same logits, the same training loss (dropout 0.5: both draw the same
// masks) and the same first SGD step of the base, since ∂L/∂f = Pᵀ·W_tvᵀ·δ =
// W_flatᵀ·δ: this checks the pool's backward pass end to end as well.
//
// Tolerances: logits and loss 1e-5 relative (float32 sums of 25088 products
// against 2048, measured in the log); the base's change 1e-4 of its largest
// change, as the PyTorch parity tests (parity_test.go) allow for float32
// summation order.
func TestHeadTorchvisionMatchesFlatten(t *testing.T) {
	const S, side, c, out = 64, 2, 512, model.PoolSize
	ctx := context.Background()
	tv := tinyConfig()
	tv.ImageSize, tv.Head, tv.Dropout = S, model.HeadTorchvision, 0.5
	tvInit := heWeights(t, mustParams(t, tv), 3)
	fl := tv
	fl.Head = model.HeadFlatten
	var flat []*weights.Tensor
	start, end := model.AdaptivePoolBins(side, out)
	for _, w := range tvInit {
		if w.Name != "classifier.0.weight" {
			flat = append(flat, w)
			continue
		}
		rows := w.Shape[0]
		in := c * side * side
		f := &weights.Tensor{Name: w.Name, Shape: []int{rows, in}, Data: make([]float32, rows*in)}
		for o := range rows {
			for ch := range c {
				for i := range out {
					for j := range out {
						wt := float64(w.Data[o*c*out*out+ch*out*out+i*out+j]) / float64((end[i]-start[i])*(end[j]-start[j]))
						for h := start[i]; h < end[i]; h++ {
							for x := start[j]; x < end[j]; x++ {
								f.Data[o*in+ch*side*side+h*side+x] += float32(wt)
							}
						}
					}
				}
			}
		}
		flat = append(flat, f)
	}
	a, b := mustNew(t, tv, tvInit), mustNew(t, fl, flat)
	batch := synthBatch(0, 4, 3, S, 6)
	la, err1 := a.Logits(ctx, batch)
	lb, err2 := b.Logits(ctx, batch)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if e := reftest.RelErr(la, lb); e > 1e-5 {
		t.Errorf("logits: torchvision head %v, folded flatten head %v: differ by %.3g of the largest, want <= 1e-5", la, lb, e)
	} else {
		t.Logf("logits differ by %.3g of the largest", e)
	}
	ta, tb := mustStep(t, a, batch), mustStep(t, b, batch)
	if e := math.Abs(ta-tb) / tb; e > 1e-5 {
		t.Errorf("training loss: torchvision head %.9g, folded flatten head %.9g: relative %.3g, want <= 1e-5", ta, tb, e)
	} else {
		t.Logf("training losses %.9g and %.9g (relative %.3g)", ta, tb, e)
	}
	wa, wb := mustWeights(t, a), mustWeights(t, b)
	for _, name := range []string{"features.0.weight", "features.16.weight", "classifier.3.weight", "classifier.6.weight"} {
		w0 := weights.Lookup(tvInit, name).Data
		da, db := weights.Lookup(wa, name).Data, weights.Lookup(wb, name).Data
		ca, cb := make([]float32, len(w0)), make([]float32, len(w0))
		for i := range w0 {
			ca[i], cb[i] = da[i]-w0[i], db[i]-w0[i]
		}
		if e := reftest.RelErr(ca, cb); e > 1e-4 {
			t.Errorf("%s: first step's change differs by %.3g of its largest change, want <= 1e-4", name, e)
		} else {
			t.Logf("%s: changes differ by %.3g of the largest", name, e)
		}
	}
}

// maskedHeadLoss computes in float64 the mean cross-entropy of net's head
// for weights ws when its first Linear layer has zero weights (so its output
// is its bias, whatever the base computes), with each Dropout's input
// multiplied by masks[layer.Mask] when masks is not nil.
func maskedHeadLoss(net *model.Net, ws []*weights.Tensor, masks [][]float32, labels []int32) float64 {
	n := len(labels)
	var act [][]float64
	for _, l := range net.Layers {
		if !l.Head {
			continue
		}
		switch l.Op {
		case model.Linear:
			w := weights.Lookup(ws, l.Name+".weight").Data
			b := weights.Lookup(ws, l.Name+".bias").Data
			in := l.In.Elements()
			next := make([][]float64, n)
			for r := range n {
				next[r] = make([]float64, l.Out)
				for o := range l.Out {
					v := float64(b[o])
					if act != nil {
						for j := range in {
							v += float64(w[o*in+j]) * act[r][j]
						}
					}
					next[r][o] = v
				}
			}
			act = next
		case model.ReLU:
			for r := range act {
				for o := range act[r] {
					act[r][o] = max(act[r][o], 0)
				}
			}
		case model.Dropout:
			if masks == nil || act == nil {
				continue
			}
			for r := range act {
				for o := range act[r] {
					act[r][o] *= float64(masks[l.Mask][r*len(act[r])+o])
				}
			}
		}
	}
	var loss float64
	for r, logits := range act {
		m := math.Inf(-1)
		for _, v := range logits {
			m = max(m, v)
		}
		var sum float64
		for _, v := range logits {
			sum += math.Exp(v - m)
		}
		loss += m + math.Log(sum) - logits[labels[r]]
	}
	return loss / float64(n)
}

// reload assigns ws to tr's variables and clears the optimizer state,
// keeping the step counter (and so the next step's dropout masks).
func reload(t *testing.T, tr *Trainer, ws []*weights.Tensor) {
	t.Helper()
	if err := errors.Join(tr.assign(context.Background(), tr.m.params, ws), tr.clearOptimizer()); err != nil {
		t.Fatal(err)
	}
}

// TestDropoutMaskApplied: a training step multiplies each hidden activation
// by model.DropoutMask(Seed, global step, layer, p), and evaluation applies no
// mask. The head's first layer has zero weights and positive biases, so its
// activations are known whatever the base computes, and the training loss
// of each step can be computed by hand from the weights and the masks. The
// weights are reloaded before each step (the step counter stays), so steps
// 0..3 each use the same weights and their own masks.
//
// Tolerance 1e-5 relative: float32 sums of 16 products against float64.
// The test also checks that another step's masks give a loss at least 1e-3
// away, so that it would notice a wrong step, layer or seed.
func TestDropoutMaskApplied(t *testing.T) {
	ctx := context.Background()
	batch := synthBatch(0, 4, 3, 32, 8)
	heads, err := model.Heads("vgg11")
	if err != nil {
		t.Fatal(err)
	}
	for _, head := range heads {
		t.Run(head, func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Head, cfg.Dropout, cfg.Seed = head, 0.5, 11
			cfg.Momentum = 0
			net := mustNet(t, cfg)
			ws := heWeights(t, net.Params, 4)
			for i, v := range randData(16, 9) {
				weights.Lookup(ws, "classifier.0.bias").Data[i] = 1 + 0.5*v*v // positive: ReLU keeps it
			}
			clear(weights.Lookup(ws, "classifier.0.weight").Data)
			tr := mustNew(t, cfg, ws)
			masksAt := func(step int64) [][]float32 {
				var ms [][]float32
				for _, i := range net.Dropouts() {
					l := net.Layers[i]
					m := make([]float32, batch.N*l.In.Elements())
					model.DropoutMask(m, cfg.Seed, step, l.Mask, cfg.Dropout)
					ms = append(ms, m)
				}
				return ms
			}
			eval, _, err := tr.Evaluate(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if want := maskedHeadLoss(net, ws, nil, batch.Labels); math.Abs(eval-want)/want > 1e-5 {
				t.Errorf("evaluation loss %.9g, want %.9g (no dropout)", eval, want)
			}
			for step := range int64(4) {
				reload(t, tr, ws)
				got := mustStep(t, tr, batch)
				want := maskedHeadLoss(net, ws, masksAt(step), batch.Labels)
				if e := math.Abs(got-want) / want; e > 1e-5 {
					t.Errorf("step %d: training loss %.9g, want %.9g from model.DropoutMask(seed %d, step %d) (relative %.3g, want <= 1e-5)",
						step, got, want, cfg.Seed, step, e)
				}
				other := maskedHeadLoss(net, ws, masksAt(step+1), batch.Labels)
				if math.Abs(other-want)/want < 1e-3 {
					t.Fatalf("step %d: the next step's masks give loss %.9g, too close to %.9g for this test to tell masks apart", step, other, want)
				}
			}
		})
	}
}

// TestDropoutZeroHasNoMaskOps: with dropout 0 the graph has no mask inputs
// and no multiplication in the head; with dropout 0.5 one mask per Dropout
// layer (torchvision's VGG classifier: 2 for the flatten and torchvision
// heads, 1 for keras; MobileNetV2's classifier.0: 1), and the evaluation pass
// has its own head without them.
func TestDropoutZeroHasNoMaskOps(t *testing.T) {
	for _, tc := range []struct {
		model, head string
		dropout     float64
		want        int
	}{
		{"vgg11", model.HeadFlatten, 0, 0},
		{"vgg11", model.HeadTorchvision, 0, 0},
		{"vgg11", model.HeadKeras, 0, 0},
		{"vgg11", model.HeadFlatten, 0.5, 2},
		{"vgg11", model.HeadTorchvision, 0.5, 2},
		{"vgg11", model.HeadKeras, 0.5, 1},
		{"mobilenet_v2", model.HeadTorchvision, 0, 0},
		{"mobilenet_v2", model.HeadTorchvision, 0.5, 1},
	} {
		cfg := tinyConfig()
		cfg.Model, cfg.Head, cfg.Dropout = tc.model, tc.head, tc.dropout
		m, err := buildGraph(cfg, mustNet(t, cfg), "test/")
		if err != nil {
			t.Fatal(err)
		}
		masks, muls := 0, 0
		for _, o := range m.graph.Operations() {
			switch {
			case o.Type() == "Placeholder" && strings.HasPrefix(o.Name(), "input/mask"):
				masks++
			case o.Type() == "Mul" && strings.HasPrefix(o.Name(), "forward/classifier"):
				muls++
			}
		}
		if masks != tc.want || muls != tc.want || len(m.masks) != tc.want {
			t.Errorf("%s %s dropout %v: got %d mask placeholders, %d head Mul ops, %d mask inputs, want %d each",
				tc.model, tc.head, tc.dropout, masks, muls, len(m.masks), tc.want)
		}
		freeGraph(m.graph)
	}
}

// TestFreezeLoadedHead: features mode with the torchvision head, composed by
// weights.Initial, starts classifier.0 and classifier.3 (fc6, fc7) from the
// weights file and classifier.6 from the seed (Net.Reinitialised); with
// FreezeLoadedHead fc6 and fc7 stay bit for bit what the file holds after
// training steps, without it they train. The base never changes and
// classifier.6 always trains.
func TestFreezeLoadedHead(t *testing.T) {
	for _, freeze := range []bool{true, false} {
		t.Run(fmt.Sprintf("freeze=%t", freeze), func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Head, cfg.Mode, cfg.FreezeLoadedHead, cfg.Seed = model.HeadTorchvision, model.ModeFeatures, freeze, 5
			net := mustNet(t, cfg)
			file, err := weights.InitParams(net.Params, 99) // the "file": another seed
			if err != nil {
				t.Fatal(err)
			}
			seeded, err := weights.InitParams(net.Params, cfg.Seed)
			if err != nil {
				t.Fatal(err)
			}
			init, _, err := weights.Initial(file, net, cfg.Mode, cfg.Seed, false)
			if err != nil {
				t.Fatal(err)
			}
			tr := mustNew(t, cfg, init)
			before := mustWeights(t, tr)
			for _, w := range before {
				want, from := weights.Lookup(file, w.Name), "the file"
				if strings.HasPrefix(w.Name, "classifier.6.") {
					want, from = weights.Lookup(seeded, w.Name), "the seed"
				}
				if d := sameBits([]*weights.Tensor{w}, []*weights.Tensor{want}); d != "" {
					t.Errorf("initial %s: not the tensor from %s", w.Name, from)
				}
			}
			for i := range 2 {
				mustStep(t, tr, synthBatch(4*i, 4, 3, 32, 1))
			}
			after := mustWeights(t, tr)
			for i, w := range after {
				same := sameBits(before[i:i+1], []*weights.Tensor{w}) == ""
				var wantSame bool
				switch {
				case !strings.HasPrefix(w.Name, "classifier."):
					wantSame = true // the frozen base
				case strings.HasPrefix(w.Name, "classifier.6."):
					wantSame = false
				default:
					wantSame = freeze
				}
				if same != wantSame {
					t.Errorf("FreezeLoadedHead %t: %s unchanged after 2 steps: got %t, want %t", freeze, w.Name, same, wantSame)
				}
			}
		})
	}
}

// TestInitialWeightsMismatch: initial tensors that do not fit the model are
// refused with ErrWeights and a message naming the tensors
// (weights.Arrange), before any graph is built; composing a file with
// weights.Initial first (the caller's job) replaces an output layer of
// another class count in finetune mode.
func TestInitialWeightsMismatch(t *testing.T) {
	ctx := context.Background()
	other := tinyConfig()
	other.Classes = 1000
	flat, err := weights.InitParams(mustNet(t, other).Params, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		head  string
		ws    []*weights.Tensor
		wants []string // substrings of the error
	}{
		{"1000 classes into 3", model.HeadFlatten, flat, []string{"classifier.6.weight: got shape [1000 16], want [3 16]"}},
		{"flatten file into keras head", model.HeadKeras, flat, []string{"classifier.6.weight: unexpected", "classifier.3.weight: got shape [16 16], want [3 16]"}},
		{"flatten file into torchvision head", model.HeadTorchvision, flat, []string{"classifier.0.weight: got shape [16 512], want [16 25088]"}},
		{"base only", model.HeadFlatten, flat[:16], []string{"classifier.0.weight: missing", "classifier.3.bias: missing"}},
	} {
		cfg := tinyConfig()
		cfg.Head = tc.head
		tr, err := New(ctx, cfg, tc.ws)
		if err == nil {
			tr.Close()
			t.Errorf("%s: no error, want ErrWeights", tc.name)
			continue
		}
		if !errors.Is(err, ErrWeights) || !strings.HasPrefix(err.Error(), "tfrun: new: initial weights do not fit the model: weights: ") {
			t.Errorf("%s: got %v, want tfrun: new: wrapping ErrWeights and weights.Arrange's error", tc.name, err)
		}
		for _, w := range tc.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %q, want it to contain %q", tc.name, err, w)
			}
		}
	}
	// Composed by weights.Initial for finetune, the 1000-class file fits.
	cfg := tinyConfig()
	cfg.Mode = model.ModeFinetune
	init, _, err := weights.Initial(flat, mustNet(t, cfg), cfg.Mode, cfg.Seed, false)
	if err != nil {
		t.Fatal(err)
	}
	mustNew(t, cfg, init)
}

// headsFixturePath is the PyTorch reference for the heads
// (scripts/reference/make_head_fixture.py): vgg11 and vgg11_bn at S = 32,
// 3 classes, hidden 16, dropout 0, batch 4, formula weights
// (reftest.WeightsFor) and input, scratch; per "<head>/<model>" the
// evaluation-mode logits and loss, and one SGD step (lr 0.01, momentum 0.9,
// weight decay 5e-4): its training-mode loss and the weights after it.
const headsFixturePath = "../testdata/reference/heads_s32.safetensors"

// TestParityHeads checks the torchvision head (adaptive pool from a 1×1 map:
// every one of the 49 cells copies it, and the backward pass sums 49
// gradients) and the Keras head against PyTorch, with and without
// BatchNorm.
//
// Tolerances are the shared reference tests' (parity_test.go): logits 1e-4
// of the largest (float32 convolutions summed in another order); the
// evaluation loss and the first training loss 1e-5 relative without
// BatchNorm, 1e-4 with it (batch statistics summed in another order:
// TestParityBatchNorm); each stored element's change within 1e-4 of its
// tensor's largest change (reftest.UpdateDiff, 2 ulps forgiven), at most 1% of them
// beyond 1e-4, and for tensors stored in part (the base's first 64 values,
// torchvision's classifier.0.weight every 97th) the float64 sums of the
// whole change within 1e-4 of sum|Δw|. In the BatchNorm models the
// convolutions' biases are not compared: BatchNorm subtracts the batch mean
// right after them, so their gradient is 0 in exact arithmetic and what
// either framework computes is float32 cancellation noise, as large as
// their whole change (lr·wd·b, about 2.5e-8 here; measured: differences up
// to 0.75 of the largest change). TestParityBatchNorm skips them too.
func TestParityHeads(t *testing.T) {
	f := loadFixtureFile(t, headsFixturePath)
	var shas map[string]string
	if err := json.Unmarshal([]byte(f.Meta["weights_sha256"]), &shas); err != nil {
		t.Fatalf("fixture weights_sha256: %v", err)
	}
	stride := 97
	if got := f.Meta["stride"]; got != "97" {
		t.Fatalf("fixture stride %q, want 97 (make_head_fixture.py's STRIDE)", got)
	}
	ctx := context.Background()
	batch := reftest.Input(4, 32)
	for _, head := range []string{model.HeadTorchvision, model.HeadKeras} {
		for _, name := range []string{"vgg11", "vgg11_bn"} {
			prefix := head + "/" + name
			t.Run(prefix, func(t *testing.T) {
				cfg := tinyConfig()
				cfg.Model, cfg.Head, cfg.Hidden, cfg.Dropout = name, head, 16, 0
				cfg.Mode = model.ModeScratch
				cfg.LR, cfg.Momentum, cfg.WeightDecay = 0.01, 0.9, 5e-4
				init, err := reftest.Weights(refSpec(cfg))
				if err != nil {
					t.Fatal(err)
				}
				if got, want := sha(init), shas[prefix]; got != want {
					t.Fatalf("formula weights sha256 %s, fixture %s: Go and Python start from different weights", got, want)
				}
				tr := mustNew(t, cfg, init)
				bn := strings.HasSuffix(name, "_bn")
				lossTol := 1e-5
				if bn {
					lossTol = 1e-4
				}

				logits, err := tr.Logits(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				want := f.Get(t, prefix+"/logits")
				checkLogits(t, logits, want)
				loss, _, err := tr.Evaluate(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				if w := float64(f.Get(t, prefix+"/loss")[0]); math.Abs(loss-w)/w > lossTol {
					t.Errorf("evaluation loss %.9g, PyTorch %.9g: relative %.3g, want <= %g", loss, w, math.Abs(loss-w)/w, lossTol)
				}
				loss, _, err = tr.TrainStep(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				if w := float64(f.Get(t, prefix+"/sgd1/loss")[0]); math.Abs(loss-w)/w > lossTol {
					t.Errorf("training loss %.9g, PyTorch %.9g: relative %.3g, want <= %g", loss, w, math.Abs(loss-w)/w, lossTol)
				} else {
					t.Logf("training loss relative difference %.3g", math.Abs(loss-w)/w)
				}

				ws := mustWeights(t, tr)
				worst, worstSum, over, total := 0.0, 0.0, 0.0, 0
				for i, w := range ws {
					if bn && tr.net.Params[i].Kind == model.ConvBias {
						continue
					}
					w0 := init[i].Data
					key := prefix + "/sgd1/" + w.Name
					got, base, whole := w.Data, w0, true
					switch {
					case f.Tensor(key) != nil:
					case f.Tensor(key+"/stride97") != nil:
						key += "/stride97"
						got, base, whole = strided(w.Data, stride), strided(w0, stride), false
					default:
						key += "/first64"
						got, base, whole = w.Data[:64], w0[:64], false
					}
					want := f.Get(t, key)
					if len(want) != len(got) {
						t.Fatalf("%s: fixture has %d values, want %d", key, len(want), len(got))
					}
					e, frac := reftest.UpdateDiff(got, want, base)
					worst = max(worst, e)
					over += frac * float64(len(want))
					total += len(want)
					if e > 1e-4 {
						t.Errorf("%s: update differs from PyTorch by up to %.3g of its largest change, want <= 1e-4", w.Name, e)
					}
					if whole {
						continue
					}
					s, err := f.Sums(prefix + "/sgd1/" + w.Name)
					if err != nil {
						t.Fatal(err)
					}
					var dsum, dabs float64
					for j, v := range w.Data {
						d := float64(v) - float64(w0[j])
						dsum += d
						dabs += math.Abs(d)
					}
					e1 := math.Abs(dabs-s.DeltaAbsSum) / s.DeltaAbsSum
					e2 := math.Abs(dsum-s.DeltaSum) / s.DeltaAbsSum
					worstSum = max(worstSum, e1, e2)
					if !(e1 <= 1e-4 && e2 <= 1e-4) {
						t.Errorf("%s: sum|Δw| = %.9g, sum Δw = %.9g; PyTorch %.9g, %.9g (relative to sum|Δw|: %.3g, %.3g; want <= 1e-4)",
							w.Name, dabs, dsum, s.DeltaAbsSum, s.DeltaSum, e1, e2)
					}
				}
				if frac := over / float64(total); frac > 0.01 {
					t.Errorf("%.2g%% of the compared elements differ by more than 1e-4 of their tensor's largest change, want <= 1%%", 100*frac)
				}
				t.Logf("worst update difference %.3g of the largest change, worst sum difference %.3g, %.0f of %d elements beyond 1e-4",
					worst, worstSum, over, total)
			})
		}
	}
}

// strided returns every stride-th element of x, from the first
// (make_head_fixture.py's flat[::STRIDE]).
func strided(x []float32, stride int) []float32 {
	out := make([]float32, 0, (len(x)+stride-1)/stride)
	for i := 0; i < len(x); i += stride {
		out = append(out, x[i])
	}
	return out
}
