package torchrun

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// The head fixture is PyTorch 2.11's own result (scripts/reference/make_head_fixture.py)
// from the internal/reftest formula weights (WeightsFor) and input.
const headFixturePath = "../testdata/reference/heads_s32.safetensors"

// headStride is the fixture's sampling of tensors too large to store in full
// (its metadata "stride"; torchvision's classifier.0.weight).
const headStride = 97

// TestHeadArchitecture checks every head on vgg11 and vgg11_bn against vgg.ParamsFor
// (names and shapes read back from libtorch, in order) at 32 and 64 px, and the logits' shape.
func TestHeadArchitecture(t *testing.T) {
	for _, h := range vgg.Heads() {
		for _, name := range []string{"vgg11", "vgg11_bn"} {
			model, _ := vgg.Parse(name)
			for _, S := range []int{32, 64} {
				cfg := tinyConfig()
				cfg.Model, cfg.ImageSize, cfg.Head = model, S, h
				tr := mustNew(t, cfg)
				ws, err := tr.Weights()
				if err != nil {
					t.Fatal(err)
				}
				ps, _ := vgg.ParamsFor(model, h, S, 3, 16)
				if err := weights.CheckShapes(ws, ps, false); err != nil {
					t.Errorf("%s head on %s at %d px: %v", h, name, S, err)
				}
				for i := range ps {
					if i < len(ws) && ws[i].Name != ps[i].Name {
						t.Errorf("%s head on %s: tensor %d: got %s, want %s (vgg.ParamsFor)", h, name, i, ws[i].Name, ps[i].Name)
					}
				}
				logits, err := tr.Logits(context.Background(), synthBatch(0, 2, 3, S, 1))
				if err != nil {
					t.Fatalf("%s head on %s at %d px: %v", h, name, S, err)
				}
				if got, want := len(logits), 2*3; got != want {
					t.Errorf("%s head on %s at %d px: got %d logits, want %d", h, name, S, got, want)
				}
				tr.Close()
			}
		}
	}
}

// TestReferenceHeads compares the torchvision and Keras heads on vgg11 and vgg11_bn with
// PyTorch: eval-mode logits and loss, and after one SGD step (lr 0.01, momentum 0.9,
// weight decay 5e-4, dropout 0) the loss and the updated tensors. Tolerances are
// reference_test.go's (refRtol, refAtol, devRtol: same libtorch kernels, float32
// rounding only) and its 1% rule for summed updates of tensors the fixture samples.
func TestReferenceHeads(t *testing.T) {
	ts, meta, err := weights.ReadSafetensors(filepath.FromSlash(headFixturePath))
	if err != nil {
		t.Fatal(err)
	}
	if meta["stride"] != strconv.Itoa(headStride) {
		t.Fatalf("fixture stride: got %q, want %d", meta["stride"], headStride)
	}
	var sums map[string]struct {
		Sum      float64 `json:"sum"`
		DeltaSum float64 `json:"delta_sum"`
		DeltaAbs float64 `json:"delta_abs_sum"`
	}
	if err := json.Unmarshal([]byte(meta["sums"]), &sums); err != nil {
		t.Fatalf("fixture sums: %v", err)
	}
	get := func(t *testing.T, name string) []float32 {
		t.Helper()
		w := weights.Lookup(ts, name)
		if w == nil {
			t.Fatalf("fixture has no %s", name)
		}
		return w.Data
	}
	for _, h := range []vgg.Head{vgg.HeadTorchvision, vgg.HeadKeras} {
		for _, name := range []string{"vgg11", "vgg11_bn"} {
			prefix := string(h) + "/" + name
			t.Run(prefix, func(t *testing.T) {
				cfg := refConfig(OptimizerSGD)
				cfg.Model, _ = vgg.Parse(name)
				cfg.Head, cfg.Hidden = h, 16
				init, err := reftest.WeightsFor(cfg.Model, h, 32, 3, 16)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Weights = init
				tr := mustNew(t, cfg)
				ctx := context.Background()
				in := reftest.Input(4, 32)

				logits, err := tr.Logits(ctx, in)
				if err != nil {
					t.Fatal(err)
				}
				want := get(t, prefix+"/logits")
				if err := closeTo(logits, want, refRtol, refAtol); err != nil {
					t.Errorf("logits: %v", err)
				}
				gd, wd := deviations(logits, 3), deviations(want, 3)
				if err := closeTo(gd, wd, devRtol, devRtol*maxAbs(wd)); err != nil {
					t.Errorf("logits minus batch mean: %v", err)
				}
				loss, _, err := tr.Evaluate(ctx, in)
				if err != nil {
					t.Fatal(err)
				}
				if w := float64(get(t, prefix+"/loss")[0]); math.Abs(loss-w) > refRtol*math.Abs(w) {
					t.Errorf("eval loss: got %.8g, want %.8g (PyTorch)", loss, w)
				}

				loss, err = tr.TrainStep(ctx, in)
				if err != nil {
					t.Fatal(err)
				}
				run := prefix + "/sgd1/"
				if w := float64(get(t, run+"loss")[0]); math.Abs(loss-w) > refRtol*math.Abs(w) {
					t.Errorf("train loss: got %.8g, want %.8g (PyTorch)", loss, w)
				}
				ws, err := tr.Weights()
				if err != nil {
					t.Fatal(err)
				}
				for i, w := range ws {
					var got []float32
					key := run + w.Name
					switch {
					case weights.Lookup(ts, key) != nil: // stored in full
						if err := closeTo(w.Data, get(t, key), refRtol, refAtol); err != nil {
							t.Errorf("%s: %v", w.Name, err)
						}
						continue
					case strings.HasPrefix(w.Name, "classifier."):
						for j := 0; j < len(w.Data); j += headStride {
							got = append(got, w.Data[j])
						}
						key += "/stride" + strconv.Itoa(headStride)
					default:
						got = w.Data[:64]
						key += "/first64"
					}
					if err := closeTo(got, get(t, key), refRtol, refAtol); err != nil {
						t.Errorf("%s (%s): %v", w.Name, key[len(run+w.Name)+1:], err)
					}
					s, ok := sums[run+w.Name]
					if !ok {
						t.Fatalf("fixture has no sums for %s%s", run, w.Name)
					}
					var delta float64
					for j, v := range w.Data {
						delta += float64(v) - float64(init[i].Data[j])
					}
					// As in TestReferenceTraining: the summed change agrees to 1% of the
					// summed absolute change.
					if d := math.Abs(delta - s.DeltaSum); d > 1e-2*s.DeltaAbs+1e-9 {
						t.Errorf("%s: summed update got %.6g, want %.6g (|diff| %.3g > 1%% of Σ|update| %.3g)", w.Name, delta, s.DeltaSum, d, s.DeltaAbs)
					}
				}
			})
		}
	}
}

// maskedHeadWeights returns reftest.WeightsFor(vgg11, h, 32, 3, 16) with
// classifier.0.weight zeroed and classifier.0.bias set to b0: the first hidden
// activation is then relu(b0) for every image, whatever the base computes, so the
// loss of a training step follows from the head's weights and the dropout masks alone.
func maskedHeadWeights(t *testing.T, h vgg.Head, b0 []float64) []*weights.Tensor {
	t.Helper()
	ws, err := reftest.WeightsFor(vgg.Config{Name: "vgg11"}, h, 32, 3, 16)
	if err != nil {
		t.Fatal(err)
	}
	w0, bias := weights.Lookup(ws, "classifier.0.weight"), weights.Lookup(ws, "classifier.0.bias")
	clear(w0.Data)
	for i := range bias.Data {
		bias.Data[i] = float32(b0[i])
	}
	return ws
}

// handLoss computes, in float64, the mean cross-entropy of a head whose first
// hidden activation is relu(b0) for each of n images, under the masks
// vgg.DropoutMask(seed, step, layer, p) and the head's other layers in ws.
func handLoss(h vgg.Head, ws []*weights.Tensor, b0 []float64, labels []int32, seed, step int64, p float64) float64 {
	layers, _ := h.Layers(32, 3, 16)
	n := len(labels)
	total := 0.0
	masks := make([][]float32, len(layers))
	for _, l := range layers {
		if l.Hidden {
			masks[l.Dropout] = make([]float32, n*l.Out)
			vgg.DropoutMask(masks[l.Dropout], seed, step, l.Dropout, p)
		}
	}
	for i := range n {
		var a []float64
		for k, l := range layers {
			if k == 0 {
				a = make([]float64, l.Out)
				for o := range a {
					a[o] = math.Max(b0[o], 0)
				}
			} else {
				w := weights.Lookup(ws, "classifier."+strconv.Itoa(l.Index)+".weight").Data
				b := weights.Lookup(ws, "classifier."+strconv.Itoa(l.Index)+".bias").Data
				next := make([]float64, l.Out)
				for o := range next {
					s := float64(b[o])
					for j, v := range a {
						s += float64(w[o*l.In+j]) * v
					}
					next[o] = s
					if l.Hidden {
						next[o] = math.Max(s, 0)
					}
				}
				a = next
			}
			if l.Hidden {
				for o := range a {
					a[o] *= float64(masks[l.Dropout][i*l.Out+o])
				}
			}
		}
		// a holds the logits: loss = logsumexp(a) - a[label].
		m := a[0]
		for _, v := range a {
			m = math.Max(m, v)
		}
		se := 0.0
		for _, v := range a {
			se += math.Exp(v - m)
		}
		total += m + math.Log(se) - a[labels[i]]
	}
	return total / float64(n)
}

// TestDropoutMasks: a training step's loss equals the loss computed by hand with the
// masks of vgg.DropoutMask(Seed, step, layer, 0.5) applied after each hidden layer's
// ReLU, at steps 0, 1 and 2 (the weights are reloaded before each step, which leaves
// the step counter alone), for the torchvision head (two dropouts) and the Keras head
// (one). Tolerance: rtol 1e-5, float32 rounding of 16-term dot products (float32
// epsilon 1.2e-7) against float64; a wrong mask, layer or step changes the loss by
// far more (the check below asserts that the neighbouring step's masks would fail).
func TestDropoutMasks(t *testing.T) {
	const p, seed = 0.5, 7
	b0 := make([]float64, 16)
	for i := range b0 {
		b0[i] = 2*reftest.U(2000, i) + 0.4 // in [-0.6, 1.4): some units are cut by ReLU
	}
	for _, h := range []vgg.Head{vgg.HeadTorchvision, vgg.HeadKeras} {
		t.Run(string(h), func(t *testing.T) {
			cfg := tinyConfig()
			cfg.Head, cfg.Dropout, cfg.Seed = h, p, seed
			cfg.Weights = maskedHeadWeights(t, h, b0)
			tr := mustNew(t, cfg)
			path := filepath.Join(t.TempDir(), "w.safetensors")
			if err := tr.SaveWeights(path); err != nil {
				t.Fatal(err)
			}
			ws, _ := tr.Weights() // the seeded output layer included
			in := synthBatch(0, 8, 3, 32, 1)
			for step := range int64(3) {
				if err := tr.LoadWeights(path); err != nil {
					t.Fatal(err)
				}
				got, err := tr.TrainStep(context.Background(), in)
				if err != nil {
					t.Fatal(err)
				}
				want := handLoss(h, ws, b0, in.Labels, seed, step, p)
				if math.Abs(got-want) > 1e-5*math.Abs(want) {
					t.Errorf("step %d: got loss %.8g, want %.8g (by hand with vgg.DropoutMask)", step, got, want)
				}
				if other := handLoss(h, ws, b0, in.Labels, seed, step+1, p); math.Abs(other-want) <= 1e-5*math.Abs(want) {
					t.Errorf("step %d: the next step's masks give the same loss %.8g: the test cannot tell masks apart", step, other)
				}
			}
		})
	}
}

// TestDropoutSeed: from the same weights, the same seed gives bit-identical losses
// and another seed (which here changes only the masks) other ones.
func TestDropoutSeed(t *testing.T) {
	init, err := reftest.WeightsFor(vgg.Config{Name: "vgg11"}, vgg.HeadTorchvision, 32, 3, 16)
	if err != nil {
		t.Fatal(err)
	}
	losses := func(seed int64) []float64 {
		cfg := tinyConfig()
		cfg.Head, cfg.Dropout, cfg.Seed, cfg.Weights = vgg.HeadTorchvision, 0.5, seed, init
		cfg.Mode = ModeScratch // every tensor from init: the seed only draws masks
		tr := mustNew(t, cfg)
		defer tr.Close()
		return trainRun(t, tr, 0, 3)
	}
	a, b, c := losses(1), losses(1), losses(2)
	for i := range a {
		if a[i] != b[i] {
			t.Errorf("step %d: seed 1 twice: got losses %v and %v, want identical", i+1, a[i], b[i])
		}
	}
	// Step 1 starts from the same weights; its loss differs only through the masks.
	for i := range a {
		if a[i] == c[i] {
			t.Errorf("step %d: seeds 1 and 2: got the same loss %v, want different masks to change it", i+1, a[i])
		}
	}
}

// TestFreezeLoadedHead: in features mode with the torchvision head, FreezeLoadedHead
// keeps classifier.0 and classifier.3 (torchvision's fc6/fc7, from the file) unchanged
// while classifier.6 (seeded) trains; without it all three train. The base never does.
func TestFreezeLoadedHead(t *testing.T) {
	init, err := reftest.WeightsFor(vgg.Config{Name: "vgg11"}, vgg.HeadTorchvision, 32, 3, 16)
	if err != nil {
		t.Fatal(err)
	}
	for _, freeze := range []bool{true, false} {
		cfg := tinyConfig()
		cfg.Mode, cfg.Head, cfg.FreezeLoadedHead, cfg.Weights = ModeFeatures, vgg.HeadTorchvision, freeze, init
		cfg.Dropout = 0.5
		tr := mustNew(t, cfg)
		before, err := tr.Weights()
		if err != nil {
			t.Fatal(err)
		}
		trainRun(t, tr, 0, 2)
		after, err := tr.Weights()
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range after {
			changed := !equalData(w.Data, before[i].Data)
			want := strings.HasPrefix(w.Name, "classifier.6.") || (!freeze && strings.HasPrefix(w.Name, "classifier."))
			if changed != want {
				t.Errorf("FreezeLoadedHead %t: %s: got changed=%t, want %t", freeze, w.Name, changed, want)
			}
			fromFile := !strings.HasPrefix(w.Name, "classifier.6.")
			if fromFile && !equalData(before[i].Data, weights.Lookup(init, w.Name).Data) {
				t.Errorf("FreezeLoadedHead %t: %s: initial value is not the file's", freeze, w.Name)
			}
		}
	}
}

// TestFillMasks: the step's masks are vgg.DropoutMask's for each hidden layer in
// turn, drawn into one buffer that later steps reuse (no allocation of its own once
// it is large enough), and Dropout 0 draws none.
func TestFillMasks(t *testing.T) {
	layers, _ := vgg.HeadTorchvision.Layers(32, 3, 16)
	tr := &Trainer{cfg: Config{Dropout: 0.5, Seed: 3}, head: layers, step: 5}
	got := tr.fillMasks(4)
	want := make([]float32, 2*4*16)
	vgg.DropoutMask(want[:64], 3, 5, 0, 0.5)
	vgg.DropoutMask(want[64:], 3, 5, 1, 0.5)
	if !equalData(got, want) {
		t.Errorf("fillMasks(4) at step 5: got %v, want %v (vgg.DropoutMask for layers 0 and 1)", got, want)
	}
	// What vgg.DropoutMask allocates itself (its generator) is not the buffer's doing.
	base := testing.AllocsPerRun(10, func() { vgg.DropoutMask(want[:64], 3, 5, 0, 0.5); vgg.DropoutMask(want[64:], 3, 5, 1, 0.5) })
	if a := testing.AllocsPerRun(10, func() { tr.fillMasks(4); tr.fillMasks(2) }); a > 2*base {
		t.Errorf("fillMasks: got %v allocations per two steps, want at most %v (vgg.DropoutMask's own)", a, 2*base)
	}
	t.Logf("allocations: vgg.DropoutMask %v per step", base)
	tr.cfg.Dropout = 0
	if got := tr.fillMasks(4); got != nil {
		t.Errorf("fillMasks with dropout 0: got %d values, want nil", len(got))
	}
}
