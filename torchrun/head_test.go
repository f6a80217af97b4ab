package torchrun

import (
	"context"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// The head fixture is PyTorch 2.11's own result (scripts/reference/make_head_fixture.py)
// from the internal/reftest formula weights (WeightsFor) and input.
const headFixturePath = "../testdata/reference/heads_s32.safetensors"

// headStride is the fixture's sampling of tensors too large to store in full
// (its metadata "stride"; torchvision's classifier.0.weight).
const headStride = 97

// TestHeadArchitecture checks every VGG head on vgg11 and vgg11_bn against the Net's
// Params (names and shapes read back from libtorch, in order) at 32 and 64 px, and
// the logits' shape.
func TestHeadArchitecture(t *testing.T) {
	heads, err := model.Heads("vgg11")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range heads {
		for _, name := range []string{"vgg11", "vgg11_bn"} {
			for _, S := range []int{32, 64} {
				cfg := tinyConfig()
				cfg.Model, cfg.ImageSize, cfg.Head = name, S, h
				tr := mustNew(t, cfg, nil)
				ws, err := tr.Weights()
				if err != nil {
					t.Fatal(err)
				}
				ps := mustNet(t, cfg).Params
				if err := weights.CheckShapes(ws, ps, false); err != nil {
					t.Errorf("%s head on %s at %d px: %v", h, name, S, err)
				}
				for i := range ps {
					if i < len(ws) && ws[i].Name != ps[i].Name {
						t.Errorf("%s head on %s: tensor %d: got %s, want %s (model.Net.Params)", h, name, i, ws[i].Name, ps[i].Name)
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
	f := reftest.LoadFixture(t, headFixturePath)
	meta, get := f.Meta, f.Get
	if meta["stride"] != strconv.Itoa(headStride) {
		t.Fatalf("fixture stride: got %q, want %d", meta["stride"], headStride)
	}
	for _, h := range []string{model.HeadTorchvision, model.HeadKeras} {
		for _, name := range []string{"vgg11", "vgg11_bn"} {
			prefix := h + "/" + name
			t.Run(prefix, func(t *testing.T) {
				cfg := refConfig(recipe.SGD)
				cfg.Model, cfg.Head, cfg.Hidden = name, h, 16
				init, err := reftest.Weights(model.Spec{Name: name, Head: h, ImageSize: 32, Classes: 3, Hidden: 16})
				if err != nil {
					t.Fatal(err)
				}
				tr := mustNew(t, cfg, init)
				ctx := context.Background()
				in := reftest.Input(4, 32)

				logits, err := tr.Logits(ctx, in)
				if err != nil {
					t.Fatal(err)
				}
				want := get(t, prefix+"/logits")
				checkRefLogits(t, logits, want)
				loss, _, err := tr.Evaluate(ctx, in)
				if err != nil {
					t.Fatal(err)
				}
				if w := float64(get(t, prefix+"/loss")[0]); math.Abs(loss-w) > refRtol*math.Abs(w) {
					t.Errorf("eval loss: got %.8g, want %.8g (PyTorch)", loss, w)
				}

				loss, _, err = tr.TrainStep(ctx, in)
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
					case f.Tensor(key) != nil: // stored in full
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
					checkSummedUpdate(t, f, run+w.Name, w, init[i])
				}
			})
		}
	}
}

// headConfig is tinyConfig with VGG head h.
func headConfig(h string) recipe.Config {
	cfg := tinyConfig()
	cfg.Head = h
	return cfg
}

// maskedHeadWeights returns the reftest formula weights of vgg11 with head h
// (hidden 16) with classifier.0.weight zeroed and classifier.0.bias set to b0: the
// first hidden activation is then relu(b0) for every image, whatever the base
// computes, so the loss of a training step follows from the head's weights and the
// dropout masks alone.
func maskedHeadWeights(t *testing.T, h string, b0 []float64) []*weights.Tensor {
	t.Helper()
	ws := reftest.WeightsForNet(mustNet(t, headConfig(h)))
	w0, bias := weights.Lookup(ws, "classifier.0.weight"), weights.Lookup(ws, "classifier.0.bias")
	clear(w0.Data)
	for i := range bias.Data {
		bias.Data[i] = float32(b0[i])
	}
	return ws
}

// handLoss computes, in float64, the mean cross-entropy of net's head for n images
// whose first Linear layer outputs b0, by walking the net's layers after it (Linear,
// ReLU, Dropout) with the tensors ws and the masks model.DropoutMask(seed, step,
// layer.Mask, p).
func handLoss(net *model.Net, ws []*weights.Tensor, b0 []float64, labels []int32, seed, step int64, p float64) float64 {
	first := slices.IndexFunc(net.Layers, func(l model.Layer) bool { return l.Op == model.Linear })
	n := len(labels)
	total := 0.0
	for i := range n {
		a := slices.Clone(b0)
		for _, l := range net.Layers[first+1:] {
			switch l.Op {
			case model.ReLU:
				for o := range a {
					a[o] = math.Max(a[o], 0)
				}
			case model.Dropout:
				mask := make([]float32, n*len(a))
				model.DropoutMask(mask, seed, step, l.Mask, p)
				for o := range a {
					a[o] *= float64(mask[i*len(a)+o])
				}
			case model.Linear:
				w := weights.Lookup(ws, l.Name+".weight").Data
				b := weights.Lookup(ws, l.Name+".bias").Data
				next := make([]float64, l.Out)
				for o := range next {
					s := float64(b[o])
					for j, v := range a {
						s += float64(w[o*len(a)+j]) * v
					}
					next[o] = s
				}
				a = next
			}
		}
		// a holds the logits: loss = logsumexp(a) - a[label].
		m := slices.Max(a)
		se := 0.0
		for _, v := range a {
			se += math.Exp(v - m)
		}
		total += m + math.Log(se) - a[labels[i]]
	}
	return total / float64(n)
}

// TestDropoutMasks: a training step's loss equals the loss computed by hand with the
// masks of model.DropoutMask(Seed, step, layer, 0.5) applied at each Dropout layer, at
// steps 0, 1 and 2 (the weights are reset before each step, which leaves the step
// counter alone), for the torchvision head (two dropouts) and the Keras head (one).
// Tolerance: rtol 1e-5, float32 rounding of 16-term dot products (float32 epsilon
// 1.2e-7) against float64; a wrong mask, layer or step changes the loss by far more
// (the check below asserts that the neighbouring step's masks would fail).
func TestDropoutMasks(t *testing.T) {
	const p, seed = 0.5, 7
	b0 := make([]float64, 16)
	for i := range b0 {
		b0[i] = 2*reftest.U(2000, i) + 0.4 // in [-0.6, 1.4): some units are cut by ReLU
	}
	for _, h := range []string{model.HeadTorchvision, model.HeadKeras} {
		t.Run(h, func(t *testing.T) {
			cfg := headConfig(h)
			cfg.Dropout, cfg.Seed = p, seed
			ws := maskedHeadWeights(t, h, b0)
			tr := mustNew(t, cfg, ws)
			net := mustNet(t, cfg)
			in := synthBatch(0, 8, 3, 32, 1)
			for step := range int64(3) {
				setWeights(t, tr, ws)
				got, _, err := tr.TrainStep(context.Background(), in)
				if err != nil {
					t.Fatal(err)
				}
				want := handLoss(net, ws, b0, in.Labels, seed, step, p)
				if math.Abs(got-want) > 1e-5*math.Abs(want) {
					t.Errorf("step %d: got loss %.8g, want %.8g (by hand with model.DropoutMask)", step, got, want)
				}
				if other := handLoss(net, ws, b0, in.Labels, seed, step+1, p); math.Abs(other-want) <= 1e-5*math.Abs(want) {
					t.Errorf("step %d: the next step's masks give the same loss %.8g: the test cannot tell masks apart", step, other)
				}
			}
		})
	}
}

// TestDropoutSeed: from the same weights, the same seed gives bit-identical losses
// and another seed (which here changes only the masks) other ones.
func TestDropoutSeed(t *testing.T) {
	cfg := headConfig(model.HeadTorchvision)
	init := reftest.WeightsForNet(mustNet(t, cfg))
	losses := func(seed int64) []float64 {
		c := cfg
		c.Dropout, c.Seed = 0.5, seed
		tr := mustNew(t, c, init) // every tensor from init: the seed only draws masks
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
	for _, freeze := range []bool{true, false} {
		cfg := headConfig(model.HeadTorchvision)
		cfg.Mode, cfg.FreezeLoadedHead, cfg.Dropout = model.ModeFeatures, freeze, 0.5
		file := reftest.WeightsForNet(mustNet(t, cfg))
		tr := mustNew(t, cfg, initial(t, cfg, file))
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
			if fromFile && !equalData(before[i].Data, weights.Lookup(file, w.Name).Data) {
				t.Errorf("FreezeLoadedHead %t: %s: initial value is not the file's", freeze, w.Name)
			}
		}
		tr.Close()
	}
}

// TestFillMasks: the step's masks are model.DropoutMask's for each Dropout layer in
// turn (vgg11's torchvision head: classifier.2 and classifier.5, 16 wide, masks 0
// and 1; mobilenet_v2: classifier.0 over 1280 features, mask 0), drawn into one
// buffer that later steps reuse (no allocation of its own once it is large enough),
// and Dropout 0 draws none.
func TestFillMasks(t *testing.T) {
	tests := []struct {
		cfg    recipe.Config
		widths []int
	}{
		{headConfig(model.HeadTorchvision), []int{16, 16}},
		{func() recipe.Config { c := tinyConfig(); c.Model = "mobilenet_v2"; return c }(), []int{1280}},
	}
	for _, tt := range tests {
		net := mustNet(t, tt.cfg)
		tr := &Trainer{cfg: recipe.Config{Dropout: 0.5, Seed: 3}, net: net, drops: net.Dropouts(), step: 5}
		b4, b2 := &dataset.Batch{N: 4}, &dataset.Batch{N: 2}
		got := slices.Clone(tr.fillMasks(b4))
		var want, wantShard []float32
		for layer, w := range tt.widths {
			m := make([]float32, 4*w)
			model.DropoutMask(m, 3, 5, layer, 0.5)
			want = append(want, m...)
			wantShard = append(wantShard, m[1*w:3*w]...) // rows [1, 3) of the global batch's mask
		}
		if !equalData(got, want) {
			t.Errorf("%s: fillMasks(4 images) at step 5: got %d values, want %d (model.DropoutMask for widths %v)", net.Name, len(got), len(want), tt.widths)
		}
		// A data-parallel shard: images [1, 3) of a global batch of 4 get the rows
		// a single process would apply to them.
		if got := tr.fillMasks(&dataset.Batch{N: 2, Offset: 1, GlobalN: 4}); !equalData(got, wantShard) {
			t.Errorf("%s: fillMasks(shard [1, 3) of 4) at step 5: got %d values, want rows 1-2 of each layer's global mask (%d values)", net.Name, len(got), len(wantShard))
		}
		if a := testing.AllocsPerRun(10, func() { tr.fillMasks(b4); tr.fillMasks(b2) }); a != 0 {
			t.Errorf("%s: fillMasks: got %v allocations per two steps, want 0 (the buffer is reused)", net.Name, a)
		}
		tr.cfg.Dropout = 0
		if got := tr.fillMasks(b4); got != nil {
			t.Errorf("%s: fillMasks with dropout 0: got %d values, want nil", net.Name, len(got))
		}
	}
}
