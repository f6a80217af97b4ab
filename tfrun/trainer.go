package tfrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	"google.golang.org/protobuf/proto"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// ErrClosed is returned by every call on a Trainer after Close.
var ErrClosed = errors.New("tfrun: trainer is closed")

// ErrBusy is returned when a call overlaps another call on the same
// Trainer: a Trainer is not safe for concurrent use.
var ErrBusy = errors.New("tfrun: trainer is busy with another call (a Trainer is not safe for concurrent use)")

// ErrWeights is wrapped by New's error when the initial tensors do not fit
// the model (tensors missing, of another shape, or unexpected; the message
// names them).
var ErrWeights = errors.New("initial weights do not fit the model")

// Framework is the name Info reports.
const Framework = "tensorflow"

// trainerSeq numbers the Trainers of a process; the number prefixes their
// variables' shared names.
var trainerSeq atomic.Int64

// Trainer is one model.Net on one TensorFlow session: a graph with the
// model, its loss, gradients and optimizer, and the variables that hold the
// weights and the optimizer state.
//
// A Trainer is not safe for concurrent use: a call that overlaps another
// returns ErrBusy instead of waiting (Close waits for the call in flight).
// Distinct Trainers are independent and may be used from different
// goroutines.
type Trainer struct {
	mu     sync.Mutex
	closed bool

	cfg   recipe.Config
	net   *model.Net
	dev   recipe.Device
	intra int
	inter int
	// dropout lists the Dropout layers that get a mask (none when the
	// recipe's Dropout is 0), in the order of m.masks and masks.
	dropout []int

	m    *netGraph
	sess *tf.Session

	// sw are the process-wide switches in force, read back from the
	// library; holdsSwitches says this Trainer counts as their holder (see
	// acquireSwitches) until release.
	sw            switches
	holdsSwitches bool

	step     int64 // completed training steps (restored by LoadCheckpoint): the dropout mask index
	adamStep int64 // Adam's t before the next step

	// Reused input tensors (see feedTensor); masks are the dropout masks.
	x, labels, adamLR, adamEps feedTensor
	masks                      []feedTensor

	// par is the Trainer's place in a data-parallel run (NewParallel);
	// nil for New's.
	par *parallel

	goOverhead atomic.Int64 // ns spent in Go by TrainStep outside Session.Run
	steps      atomic.Int64 // TrainStep calls that GoOverhead covers
}

// New builds cfg's model (cfg.Net) as a TensorFlow graph, starts a session
// on cfg.Device and loads the initial weights.
//
// cfg.Validate's error is returned as it is (it wraps recipe.ErrInvalid).
// init holds the initial tensors in torchvision's canonical layout, every
// one of Net.Params (compose them with weights.Initial); nil means every
// tensor seeded (weights.InitParams with cfg.Seed). Tensors that do not fit
// the model give an error wrapping ErrWeights. New copies them into the
// graph's variables; the caller keeps ownership.
func New(ctx context.Context, cfg recipe.Config, init []*weights.Tensor) (_ *Trainer, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return newTrainer(ctx, cfg, init, nil)
}

// newTrainer is New after validation; p, when not nil, makes the Trainer a
// rank of a data-parallel run (NewParallel).
func newTrainer(ctx context.Context, cfg recipe.Config, init []*weights.Tensor, p *recipe.Parallel) (_ *Trainer, err error) {
	var t *Trainer
	defer func() { // after recoverTo: also on a panic
		if err != nil && t != nil {
			t.release()
		}
	}()
	defer recoverTo(&err, "new")
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	net, err := cfg.Net()
	if err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	if init == nil {
		init, err = weights.InitParams(net.Params, cfg.Seed)
		if err != nil {
			return nil, fmt.Errorf("tfrun: new: %w", err)
		}
	} else if init, err = weights.Arrange(init, net.Params, false); err != nil {
		return nil, fmt.Errorf("tfrun: new: %w: %w", ErrWeights, err)
	}
	dev, err := recipe.ParseDevice(cfg.Device)
	if err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	t = &Trainer{
		cfg: cfg, net: net, dev: dev,
		dropout: dropoutLayers(cfg, net),
		intra:   threads(cfg.Threads), inter: threads(cfg.InterOpThreads),
		x: feedTensor{dt: tf.Float}, labels: feedTensor{dt: tf.Int32},
		adamLR: feedTensor{dt: tf.Float}, adamEps: feedTensor{dt: tf.Float},
	}
	if p != nil {
		t.par = &parallel{p: *p, weight: feedTensor{dt: tf.Float},
			device: "/job:" + parallelJob + "/replica:0/task:" + strconv.Itoa(p.Rank) + tfDevice(dev)}
	}
	t.masks = make([]feedTensor, len(t.dropout))
	for i := range t.masks {
		t.masks[i].dt = tf.Float
	}
	if err := t.start(ctx, init); err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	return t, nil
}

func (t *Trainer) start(ctx context.Context, init []*weights.Tensor) error {
	if err := checkDevice(t.dev); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	// The process-wide switches, before this Trainer's session makes any
	// kernel: determinism as asked, TF32 only for precision tf32 (TF's
	// default is on), and on a GPU cuDNN autotuning as asked (TF's default
	// is on).
	want := switches{deterministic: t.cfg.Deterministic, tf32: t.cfg.Precision == recipe.TF32}
	if t.dev.GPU {
		want.autotune = "0"
		if t.cfg.CUDNNBenchmark {
			want.autotune = "1"
		}
	}
	sw, err := acquireSwitches(want)
	if err != nil {
		return err
	}
	t.sw, t.holdsSwitches = sw, true
	if t.cfg.XLA && !t.dev.GPU && !cpuJit {
		return errors.New("xla: TF_SetTfXlaCpuGlobalJit did not turn on XLA's CPU auto-clustering")
	}
	var reduce *allReduce
	device := tfDevice(t.dev)
	if t.par != nil {
		reduce = &allReduce{worldSize: t.par.p.WorldSize, hint: "ring"}
		device = t.par.device
	}
	m, err := buildParallelGraph(t.cfg, t.net, "tfrun"+strconv.FormatInt(trainerSeq.Add(1), 10)+"/", reduce)
	if err != nil {
		return err
	}
	t.m = m
	if err := m.placeGraph(device); err != nil {
		return fmt.Errorf("place graph on %s: %w", device, err)
	}
	sc := sessionConfigProto(t.intra, t.inter, t.dev, true, t.cfg.XLA)
	opts := &tf.SessionOptions{}
	if t.par != nil {
		if opts, err = t.startParallel(sc); err != nil {
			return err
		}
	} else if opts.Config, err = proto.Marshal(sc); err != nil {
		return fmt.Errorf("session config: %w", err)
	}
	t.sess, err = tf.NewSession(m.graph, opts)
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if err := t.assign(ctx, m.params, init); err != nil {
		return err
	}
	if m.scaler != nil {
		if err := t.setLossScale(recipe.LossScaleInit, 0); err != nil {
			return err
		}
	}
	return t.clearOptimizer()
}

// setLossScale sets FP16's loss scale and growth tracker.
func (t *Trainer) setLossScale(scale, tracker float64) error {
	ls := t.m.scaler
	feeds := map[tf.Output]*tf.Tensor{}
	for v, x := range map[*variable]float64{ls.scale: scale, ls.tracker: tracker} {
		val, err := tf.NewTensor(float32(x))
		if err != nil {
			return fmt.Errorf("loss scale: %w", err)
		}
		defer freeTensor(val)
		feeds[v.value] = val
	}
	if _, err := t.sess.Run(feeds, nil, []*tf.Operation{ls.scale.assign, ls.tracker.assign}); err != nil {
		return fmt.Errorf("loss scale: %w", err)
	}
	return nil
}

// lossScale reads FP16's loss scale and growth tracker.
func (t *Trainer) lossScale() (scale, tracker float64, err error) {
	ls := t.m.scaler
	out, err := t.sess.Run(nil, []tf.Output{ls.scale.read, ls.tracker.read}, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("loss scale: %w", err)
	}
	defer freeTensors(out)
	scale, err1 := scalar(out[0])
	tracker, err2 := scalar(out[1])
	return scale, tracker, errors.Join(err1, err2)
}

// LossScale returns FP16's current loss scale (torch.amp.GradScaler's
// scale: recipe.LossScaleInit at first, halved after each step with a
// non-finite gradient, doubled after LossScaleGrowthInterval finite steps
// in a row), and 0 for every other precision, after Close, or if the
// scale cannot be read. It waits for a call in flight.
func (t *Trainer) LossScale() float64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.m == nil || t.m.scaler == nil {
		return 0
	}
	scale, _, err := t.lossScale()
	if err != nil {
		return 0
	}
	return scale
}

// assign loads canonical tensors (vars[i] from ts[i]) into the variables,
// one variable per Session.Run so that at most one extra copy of a tensor
// exists at a time.
func (t *Trainer) assign(ctx context.Context, vars []*variable, ts []*weights.Tensor) error {
	if len(vars) != len(ts) {
		return fmt.Errorf("assign: %d tensors for %d variables", len(ts), len(vars))
	}
	for i, v := range vars {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Convert straight into the native buffer where tfrun can reach it:
		// at 224 px the first classifier layer alone is 411 MB.
		val, view, err := newFloatTensor(v.shape, len(ts[i].Data))
		if err == nil && view != nil {
			toTFInto(v.param, v.depthwise, ts[i].Data, view)
		} else if err == nil {
			data := toTF(v.param, v.depthwise, ts[i].Data)
			val, err = tf.ReadTensor(tf.Float, v.shape, bytes.NewReader(asBytes(data)))
		}
		if err != nil {
			return fmt.Errorf("assign %s: %w", v.name, err)
		}
		_, err = t.sess.Run(map[tf.Output]*tf.Tensor{v.value: val}, nil, []*tf.Operation{v.assign})
		freeTensor(val)
		if err != nil {
			return fmt.Errorf("assign %s: %w", v.name, err)
		}
	}
	return nil
}

// read fetches the variables' values in canonical layout, named after the
// variables.
func (t *Trainer) read(vars []*variable) ([]*weights.Tensor, error) {
	fetch := make([]tf.Output, len(vars))
	for i, v := range vars {
		fetch[i] = v.read
	}
	out, err := t.sess.Run(nil, fetch, nil)
	if err != nil {
		return nil, err
	}
	defer freeTensors(out)
	ts := make([]*weights.Tensor, len(vars))
	for i, v := range vars {
		n := v.param.NumElements()
		data := make([]float32, n)
		if view := floatView(out[i], n); view != nil {
			fromTFInto(v.param, v.depthwise, view, data)
		} else {
			buf := make([]float32, n)
			if err := readFloats(out[i], buf); err != nil {
				return nil, fmt.Errorf("read %s: %w", v.name, err)
			}
			fromTFInto(v.param, v.depthwise, buf, data)
		}
		ts[i] = &weights.Tensor{Name: v.name, Shape: append([]int(nil), v.param.Shape...), Data: data}
		freeTensor(out[i])
	}
	return ts, nil
}

// enter starts a call: it fails with ErrBusy while another call runs, with
// ErrClosed after Close, and with ctx's error when ctx is done. On success
// the caller holds t.mu.
func (t *Trainer) enter(ctx context.Context, what string) error {
	if !t.mu.TryLock() {
		return ErrBusy
	}
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	if t.par != nil && t.par.stuck != nil {
		t.mu.Unlock()
		return ErrStalled
	}
	if err := ctx.Err(); err != nil {
		t.mu.Unlock()
		return fmt.Errorf("tfrun: %s: %w", what, err)
	}
	return nil
}

// feedBatch checks b and copies it into the reused input tensors. The
// image size is not checked here: a wrong size reaches TensorFlow, which
// reports it.
func (t *Trainer) feedBatch(b *dataset.Batch, labels bool) (x, l *tf.Tensor, err error) {
	if b == nil {
		return nil, nil, errors.New("nil batch")
	}
	if b.N < 1 || b.H < 1 || b.W < 1 || b.C != 3 || len(b.X) != b.N*b.H*b.W*b.C {
		return nil, nil, fmt.Errorf("batch: got N=%d H=%d W=%d C=%d with %d values, want C=3 and N·H·W·C values", b.N, b.H, b.W, b.C, len(b.X))
	}
	x, err = t.x.set([]int64{int64(b.N), int64(b.H), int64(b.W), int64(b.C)}, asBytes(b.X))
	if err != nil {
		return nil, nil, err
	}
	if !labels {
		return x, nil, nil
	}
	if len(b.Labels) != b.N {
		return nil, nil, fmt.Errorf("batch: got %d labels, want N=%d", len(b.Labels), b.N)
	}
	for i, c := range b.Labels {
		if c < 0 || int(c) >= t.net.Classes {
			return nil, nil, fmt.Errorf("batch: label %d of image %d: want 0 <= label < %d", c, i, t.net.Classes)
		}
	}
	l, err = t.labels.set([]int64{int64(b.N)}, asBytes(b.Labels))
	return x, l, err
}

// TrainStep runs one optimizer step on b (forward in training mode with
// dropout, backward, update, BatchNorm statistics) and returns the batch's
// mean cross-entropy loss before the update and the number of images whose
// highest training-mode logit (dropout on, as Keras reports training
// accuracy) is their label. The whole step is one Session.Run that fetches
// only those two scalars; the updates run as its targets. The dropout masks
// of global step Step() are drawn in Go by model.DropoutMask straight into
// the reused input tensors and fed. A batch of the wrong image size fails
// with TensorFlow's shape error before any update.
func (t *Trainer) TrainStep(ctx context.Context, b *dataset.Batch) (loss float64, correct int, err error) {
	start := time.Now()
	if err := t.enter(ctx, "train step"); err != nil {
		return 0, 0, err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "train step")
	fail := func(err error) (float64, int, error) { return 0, 0, fmt.Errorf("tfrun: train step: %w", err) }
	feeds, err := t.stepFeeds(b)
	if err != nil {
		return fail(err)
	}
	// The loss and the batch's top-1 hits (two scalars) are the only
	// fetches, and under FP16 whether the step's gradients were finite.
	fetches := []tf.Output{t.m.trainLoss, t.m.trainCorrect}
	if t.m.scaler != nil {
		fetches = append(fetches, t.m.scaler.finite)
	}
	runStart := time.Now()
	var out []float64
	if t.par != nil {
		if err := t.shardFeeds(b, feeds); err != nil {
			return fail(err)
		}
		out, err = t.runParallelStep(feeds, fetches)
	} else {
		out, err = t.runStep(feeds, fetches)
	}
	run := time.Since(runStart)
	if err != nil {
		return fail(err)
	}
	// The step counts for the dropout masks even when FP16 skipped the
	// update (torch's mask index is the global step); Adam's t counts only
	// the updates made, as torch's optimizer state does.
	t.step++
	if t.m.scaler == nil || out[2] != 0 { // FP16: the step's gradients were finite
		t.adamStep++
	}
	t.goOverhead.Add(int64(time.Since(start) - run))
	t.steps.Add(1)
	return out[0], int(out[1]), nil
}

// runStep runs a training step's Session.Run and reads its scalar fetches
// (float32, int32 or bool, true as 1).
func (t *Trainer) runStep(feeds map[tf.Output]*tf.Tensor, fetches []tf.Output) ([]float64, error) {
	out, err := t.sess.Run(feeds, fetches, t.m.train)
	if err != nil {
		return nil, err
	}
	defer freeTensors(out)
	vals := make([]float64, len(out))
	for i, o := range out {
		if b, ok := o.Value().(bool); ok {
			if b {
				vals[i] = 1
			}
			continue
		}
		if vals[i], err = scalar(o); err != nil {
			return nil, err
		}
	}
	return vals, nil
}

// stepFeeds fills the reused input tensors of training step Step() on b:
// the batch, the dropout masks and Adam's step size and epsilon.
func (t *Trainer) stepFeeds(b *dataset.Batch) (map[tf.Output]*tf.Tensor, error) {
	x, l, err := t.feedBatch(b, true)
	if err != nil {
		return nil, err
	}
	feeds := map[tf.Output]*tf.Tensor{t.m.x: x, t.m.labels: l}
	if len(t.dropout) > 0 && (b.Offset < 0 || b.Offset+b.N > b.Global()) {
		return nil, fmt.Errorf("batch: images [%d, %d) are outside the global batch of %d", b.Offset, b.Offset+b.N, b.Global())
	}
	for i, li := range t.dropout {
		layer := t.net.Layers[li]
		width := layer.In.Elements()
		m, err := t.masks[i].setFloats([]int64{int64(b.N), int64(width)}, func(dst []float32) {
			if b.Global() == b.N {
				model.DropoutMask(dst, t.cfg.Seed, t.step, layer.Mask, t.cfg.Dropout)
				return
			}
			// A shard's rows [Offset, Offset+N) of the global batch's mask.
			global := t.globalMask(b.Global() * width)
			model.DropoutMask(global, t.cfg.Seed, t.step, layer.Mask, t.cfg.Dropout)
			copy(dst, global[b.Offset*width:])
		})
		if err != nil {
			return nil, err
		}
		feeds[t.m.masks[i]] = m
	}
	if t.cfg.Optimizer == recipe.Adam {
		lr, eps := adamFeeds(t.cfg, t.adamStep+1)
		a, err1 := t.adamLR.set(nil, asBytes([]float32{lr}))
		e, err2 := t.adamEps.set(nil, asBytes([]float32{eps}))
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		feeds[t.m.adamLR], feeds[t.m.adamEps] = a, e
	}
	return feeds, nil
}

// globalMask returns a reused buffer of n values for a global batch's
// dropout mask.
func (t *Trainer) globalMask(n int) []float32 {
	if t.par == nil {
		return make([]float32, n)
	}
	if cap(t.par.global) < n {
		t.par.global = make([]float32, n)
	}
	return t.par.global[:n]
}

// adamFeeds returns the step size and epsilon that make TF's
// ResourceApplyAdam (fed beta powers 0) perform torch's Adam step t: see
// buildOptimizer. Both are computed in float64 and rounded once.
func adamFeeds(cfg recipe.Config, t int64) (lr, eps float32) {
	bc1 := 1 - math.Pow(cfg.Beta1, float64(t))
	bc2 := 1 - math.Pow(cfg.Beta2, float64(t))
	return float32(cfg.LR * math.Sqrt(bc2) / bc1), float32(cfg.Eps * math.Sqrt(bc2))
}

// Evaluate returns b's mean cross-entropy loss and the number of images
// whose highest logit is their label, in evaluation mode (dropout off,
// BatchNorm running statistics), without gradients or updates.
func (t *Trainer) Evaluate(ctx context.Context, b *dataset.Batch) (loss float64, correct int, err error) {
	if err := t.enter(ctx, "evaluate"); err != nil {
		return 0, 0, err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "evaluate")
	x, l, err := t.feedBatch(b, true)
	if err != nil {
		return 0, 0, fmt.Errorf("tfrun: evaluate: %w", err)
	}
	out, err := t.sess.Run(map[tf.Output]*tf.Tensor{t.m.x: x, t.m.labels: l}, []tf.Output{t.m.loss, t.m.correct}, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("tfrun: evaluate: %w", err)
	}
	defer freeTensors(out)
	loss, err1 := scalar(out[0])
	c, err2 := scalar(out[1])
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("tfrun: evaluate: %w", err)
	}
	return loss, int(c), nil
}

// Logits returns the model's outputs for b in evaluation mode, row-major
// [N, classes]. Labels are not used. The slice is the caller's.
func (t *Trainer) Logits(ctx context.Context, b *dataset.Batch) (logits []float32, err error) {
	if err := t.enter(ctx, "logits"); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "logits")
	x, _, err := t.feedBatch(b, false)
	if err != nil {
		return nil, fmt.Errorf("tfrun: logits: %w", err)
	}
	out, err := t.sess.Run(map[tf.Output]*tf.Tensor{t.m.x: x}, []tf.Output{t.m.logits}, nil)
	if err != nil {
		return nil, fmt.Errorf("tfrun: logits: %w", err)
	}
	defer freeTensors(out)
	logits = make([]float32, b.N*t.net.Classes)
	if err := readFloats(out[0], logits); err != nil {
		return nil, fmt.Errorf("tfrun: logits: %w", err)
	}
	return logits, nil
}

// Weights returns the model's current weights in canonical torchvision
// layout and Net.Params order. The tensors are the caller's.
func (t *Trainer) Weights() (ts []*weights.Tensor, err error) {
	if err := t.enter(context.Background(), "weights"); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "weights")
	ts, err = t.read(t.m.params)
	if err != nil {
		return nil, fmt.Errorf("tfrun: weights: %w", err)
	}
	return ts, nil
}

// clearOptimizer zeroes the optimizer state and Adam's step count, as a
// fresh torch optimizer would have them.
func (t *Trainer) clearOptimizer() error {
	t.adamStep = 0
	if len(t.m.initSlots) == 0 {
		return nil
	}
	if _, err := t.sess.Run(nil, nil, t.m.initSlots); err != nil {
		return fmt.Errorf("clear optimizer state: %w", err)
	}
	return nil
}

// SaveCheckpoint writes dir/ (weights.SaveCheckpoint, atomically): the
// model's tensors, the optimizer state under torch's names in canonical
// layout (SGD with momentum: "<param>.momentum_buffer"; Adam:
// "<param>.exp_avg", "<param>.exp_avg_sq" and the step count), epoch and
// step (the caller's numbers, returned by LoadCheckpoint) and the Trainer's
// own step counter, which fixes the dropout masks of the steps that follow.
func (t *Trainer) SaveCheckpoint(dir string, epoch, step int) (err error) {
	if err := t.enter(context.Background(), "save checkpoint"); err != nil {
		return err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "save checkpoint")
	all, err := t.read(append(slices.Clone(t.m.params), t.m.slots...))
	if err != nil {
		return fmt.Errorf("tfrun: save checkpoint: %w", err)
	}
	meta := weights.CheckpointMeta{
		Framework: Framework, Epoch: epoch, Step: step, Seed: t.cfg.Seed,
		Optimizer: t.cfg.OptimizerString(),
		Extra: map[string]string{
			recipe.MetaStep:  strconv.FormatInt(t.step, 10),
			recipe.MetaModel: t.net.Name,
			recipe.MetaHead:  t.net.Head,
			recipe.MetaMode:  t.cfg.Mode,
		},
	}
	if t.cfg.Optimizer == recipe.Adam {
		meta.Extra[recipe.MetaAdamStep] = strconv.FormatInt(t.adamStep, 10)
	}
	if t.m.scaler != nil {
		scale, tracker, err := t.lossScale()
		if err != nil {
			return fmt.Errorf("tfrun: save checkpoint: %w", err)
		}
		meta.Extra[recipe.MetaLossScale] = strconv.FormatFloat(scale, 'g', -1, 32)
		meta.Extra[recipe.MetaLossScaleTracker] = strconv.FormatInt(int64(tracker), 10)
	}
	n := len(t.m.params)
	if err := weights.SaveCheckpoint(dir, all[:n], all[n:], meta); err != nil {
		return fmt.Errorf("tfrun: save checkpoint: %w", err)
	}
	return nil
}

// LoadCheckpoint restores a checkpoint that SaveCheckpoint wrote for the
// same model and optimizer: weights, optimizer state (a missing slot is
// zero, as before the first step) and the step counters. It returns the
// epoch and step given to SaveCheckpoint. With the same Config (Seed
// included) the run then continues bit for bit as an uninterrupted one on
// the CPU.
func (t *Trainer) LoadCheckpoint(dir string) (epoch, step int, err error) {
	if err := t.enter(context.Background(), "load checkpoint"); err != nil {
		return 0, 0, err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "load checkpoint")
	ps, state, meta, err := weights.LoadCheckpoint(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("tfrun: load checkpoint: %w", err)
	}
	fail := func(err error) (int, int, error) {
		return 0, 0, fmt.Errorf("tfrun: load checkpoint: %s: %w", dir, err)
	}
	if meta.Framework != Framework {
		return fail(fmt.Errorf("written by %q, want %q", meta.Framework, Framework))
	}
	if got := meta.Optimizer; !t.cfg.SameOptimizerState(got) {
		// Another learning rate is fine, another optimizer is not: its state would not fit.
		return fail(fmt.Errorf("optimizer %s, this trainer uses %s", got, t.cfg.OptimizerString()))
	}
	full, err := weights.Arrange(ps, t.net.Params, false)
	if err != nil {
		return fail(err)
	}
	slots := make([]*weights.Tensor, len(t.m.slots))
	for i, v := range t.m.slots {
		s := weights.Lookup(state, v.name)
		if s == nil {
			s = &weights.Tensor{Name: v.name, Shape: v.param.Shape, Data: make([]float32, v.param.NumElements())}
		}
		if !slices.Equal(s.Shape, v.param.Shape) || len(s.Data) != v.param.NumElements() {
			return fail(fmt.Errorf("optimizer state %s: got shape %v, want %v", v.name, s.Shape, v.param.Shape))
		}
		slots[i] = s
	}
	counter := func(key string, def int64) (int64, error) {
		s, ok := meta.Extra[key]
		if !ok {
			return def, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%s %q: want a count", key, s)
		}
		return n, nil
	}
	gstep, err1 := counter(recipe.MetaStep, int64(meta.Step))
	astep, err2 := counter(recipe.MetaAdamStep, 0)
	if err := errors.Join(err1, err2); err != nil {
		return fail(err)
	}
	// FP16's scale and tracker; a checkpoint without them (another
	// precision's) starts from GradScaler's initial state.
	scale, tracker := recipe.LossScaleInit, int64(0)
	if t.m.scaler != nil {
		if s, ok := meta.Extra[recipe.MetaLossScale]; ok {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil || !(v > 0) || math.IsInf(v, 0) {
				return fail(fmt.Errorf("%s %q: want a positive finite number", recipe.MetaLossScale, s))
			}
			scale = v
		}
		if tracker, err = counter(recipe.MetaLossScaleTracker, 0); err != nil {
			return fail(err)
		}
	}
	if err := t.assign(context.Background(), t.m.params, full); err != nil {
		return fail(err)
	}
	if err := t.assign(context.Background(), t.m.slots, slots); err != nil {
		return fail(err)
	}
	if t.m.scaler != nil {
		if err := t.setLossScale(scale, float64(tracker)); err != nil {
			return fail(err)
		}
	}
	t.step, t.adamStep = gstep, astep
	return meta.Epoch, meta.Step, nil
}

// Sync waits for the device. Session.Run returns only when its fetches and
// targets are done, on the GPU as well, so there is nothing to wait for.
func (t *Trainer) Sync() error {
	if err := t.enter(context.Background(), "sync"); err != nil {
		return err
	}
	t.mu.Unlock()
	return nil
}

// PeakGPUBytes returns 0: the TensorFlow C API reports no allocator
// statistics (TF_DeviceListMemoryBytes is a limit, not a peak).
func (t *Trainer) PeakGPUBytes() int64 { return 0 }

// Info reports the framework, the loaded library's version, the device
// ("cpu" or "cuda:N"), the session's intra-op threads, and settings that
// affect speed: every recipe.SettingKeys key, the inter-op threads and
// TensorFlow's oneDNN switch (TF_ENABLE_ONEDNN_OPTS as the process has it;
// unset means TensorFlow's default, on for x86 CPUs).
//
// The keys' values: precision as trained; tf32 and deterministic as the
// library reads them back (tsl::tensor_float_32_execution_enabled,
// tsl::OpDeterminismRequired); memory_format "NHWC", the layout of the
// graph tfrun builds; cudnn_benchmark on a GPU as the convolution kernels
// read TF_CUDNN_USE_AUTOTUNE (tsl::CudnnUseAutotune), "false" on the CPU,
// where TensorFlow autotunes nothing; xla whether the session compiles with
// XLA.
func (t *Trainer) Info() recipe.Info {
	onednn, ok := os.LookupEnv("TF_ENABLE_ONEDNN_OPTS")
	if !ok {
		onednn = "default"
	}
	precision := t.cfg.Precision
	if precision == "" {
		precision = recipe.FP32
	}
	info := recipe.Info{
		Framework: Framework, Version: Version(), Device: t.dev.String(), Threads: t.intra,
		Settings: map[string]string{
			recipe.SettingPrecision:      precision,
			recipe.SettingTF32:           strconv.FormatBool(t.sw.tf32),
			recipe.SettingMemoryFormat:   "NHWC",
			recipe.SettingCUDNNBenchmark: strconv.FormatBool(t.sw.autotune == "1"),
			recipe.SettingXLA:            strconv.FormatBool(t.cfg.XLA),
			recipe.SettingDeterministic:  strconv.FormatBool(t.sw.deterministic),
			"inter_op_threads":           strconv.Itoa(t.inter),
			"onednn":                     onednn,
		},
	}
	if t.par != nil {
		info.Settings[recipe.SettingBackend] = recipe.BackendGRPC
		info.Settings[recipe.SettingWorldSize] = strconv.Itoa(t.par.p.WorldSize)
	}
	return info
}

// Step returns the number of optimizer steps taken, counting those restored
// by LoadCheckpoint.
// It waits for a call in flight.
func (t *Trainer) Step() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.step
}

// GoOverhead returns the time TrainStep spent in Go outside Session.Run
// (checking and copying the batch into the reused input tensors, building
// the feed map, reading the loss), summed over all successful steps, and
// the number of those steps.
func (t *Trainer) GoOverhead() (total time.Duration, steps int64) {
	return time.Duration(t.goOverhead.Load()), t.steps.Load()
}

// Close deletes the variables' resources, closes the session and frees the
// graph. It waits for a call in flight. It is idempotent; every later call
// on t returns ErrClosed. After an abandoned step that still runs in
// TensorFlow (ErrStalled) it frees nothing: the session, graph and input
// tensors that step uses are left to the process's exit.
func (t *Trainer) Close() (err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	defer recoverTo(&err, "close")
	t.closed = true
	if t.par.abandoned() {
		if t.holdsSwitches {
			releaseSwitches()
			t.holdsSwitches = false
		}
		return nil
	}
	var errs []error
	if t.sess != nil && t.m != nil && len(t.m.destroy) > 0 {
		if _, err := t.sess.Run(nil, nil, t.m.destroy); err != nil {
			errs = append(errs, fmt.Errorf("delete variables: %w", err))
		}
	}
	errs = append(errs, t.release())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("tfrun: close: %w", err)
	}
	return nil
}

// release frees the native objects: input tensors, session, graph.
func (t *Trainer) release() error {
	for _, f := range []*feedTensor{&t.x, &t.labels, &t.adamLR, &t.adamEps} {
		f.free()
	}
	for i := range t.masks {
		t.masks[i].free()
	}
	var err error
	if t.sess != nil {
		err = t.sess.Close()
		t.sess = nil
	}
	if t.par != nil {
		t.par.weight.free()
		// A started gRPC server cannot stop (see server.stop); it keeps
		// serving until the process exits, which is not an error of Close.
		_ = t.par.srv.stop()
		t.par.srv = nil
	}
	if t.m != nil {
		freeGraph(t.m.graph)
		t.m = nil
	}
	if t.holdsSwitches {
		releaseSwitches()
		t.holdsSwitches = false
	}
	return err
}

// recoverTo turns a panic inside the binding into an error. tfrun itself
// does not panic; the binding does in a few places (tf.NewTensor on odd
// input, Tensor.Value on an unsupported type).
func recoverTo(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("tfrun: %s: panic in the TensorFlow binding: %v", what, r)
	}
}
