package tfrun

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	tf "github.com/galeone/tensorflow/tensorflow/go"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// ErrClosed is returned by every call on a Trainer after Close.
var ErrClosed = errors.New("tfrun: trainer is closed")

// ErrBusy is returned when a call overlaps another call on the same
// Trainer: a Trainer is not safe for concurrent use.
var ErrBusy = errors.New("tfrun: trainer is busy with another call (a Trainer is not safe for concurrent use)")

// Framework is what Trainer.Framework reports.
const Framework = "tensorflow"

// trainerSeq numbers the Trainers of a process; the number prefixes their
// variables' shared names.
var trainerSeq atomic.Int64

// Trainer is VGG on one TensorFlow session: a graph with the model, its
// loss, gradients and optimizer, and the variables that hold the weights and
// the optimizer state.
//
// A Trainer is not safe for concurrent use: a call that overlaps another
// returns ErrBusy instead of waiting (Close waits for the call in flight).
// Distinct Trainers are independent and may be used from different
// goroutines.
type Trainer struct {
	mu     sync.Mutex
	closed bool

	cfg    Config
	dev    device
	intra  int
	inter  int
	params []vgg.Param // vgg.ParamsFor order
	side   int         // flatSide: the H×W×C-flattened map's side, 0 after the adaptive pool
	// dropout lists the head layers followed by a Dropout (none when
	// Config.Dropout is 0), in the order of m.masks and masks.
	dropout []vgg.HeadLayer
	// lastCorrect is the top-1 hit count of the last training batch.
	lastCorrect int

	m    *model
	sess *tf.Session

	step     int64 // completed training steps (restored by LoadCheckpoint): the dropout mask index
	adamStep int64 // Adam's t before the next step; reset with the optimizer state by LoadWeights

	// Reused input tensors (see feedTensor); masks are the dropout masks.
	x, labels, adamLR, adamEps feedTensor
	masks                      []feedTensor

	goOverhead atomic.Int64 // ns spent in Go by TrainStep outside Session.Run
	steps      atomic.Int64 // TrainStep calls that GoOverhead covers
}

// New builds the model's graph, starts a session on cfg.Device and loads
// the initial weights: weights.Initial(cfg.Weights, params, cfg.Mode,
// cfg.Head, cfg.Seed, false), see Config.Weights and the Mode constants.
// Weights that do not fit the model give an error wrapping ErrWeights.
func New(ctx context.Context, cfg Config) (_ *Trainer, err error) {
	var t *Trainer
	defer func() { // after recoverTo: also on a panic
		if err != nil && t != nil {
			t.release()
		}
	}()
	defer recoverTo(&err, "new")
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	cfg.Head = cfg.head()
	params, err := vgg.ParamsFor(cfg.Model, cfg.Head, cfg.ImageSize, cfg.NumClasses, cfg.Hidden)
	if err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	headLayers, err := cfg.Head.Layers(cfg.ImageSize, cfg.NumClasses, cfg.Hidden)
	if err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	init, _, err := weights.Initial(cfg.Weights, params, cfg.Mode, cfg.Head, cfg.Seed, false)
	if err != nil {
		return nil, fmt.Errorf("tfrun: new: %w: %w", ErrWeights, err)
	}
	dev, _ := parseDevice(cfg.Device)
	t = &Trainer{
		cfg: cfg, dev: dev, params: params,
		side:    flatSide(cfg.ImageSize, cfg.Head),
		dropout: dropoutLayers(cfg, headLayers),
		intra:   threads(cfg.Threads), inter: threads(cfg.InterOpThreads),
		x: feedTensor{dt: tf.Float}, labels: feedTensor{dt: tf.Int32},
		adamLR: feedTensor{dt: tf.Float}, adamEps: feedTensor{dt: tf.Float},
	}
	t.masks = make([]feedTensor, len(t.dropout))
	for i := range t.masks {
		t.masks[i].dt = tf.Float
	}
	t.cfg.Weights = nil // do not pin the caller's tensors
	if err := t.start(ctx, init); err != nil {
		return nil, fmt.Errorf("tfrun: new: %w", err)
	}
	return t, nil
}

func (t *Trainer) start(ctx context.Context, init []*weights.Tensor) error {
	if err := checkDevice(t.dev); err != nil {
		return fmt.Errorf("device: %w", err)
	}
	m, err := buildModel(t.cfg, "tfrun"+strconv.FormatInt(trainerSeq.Add(1), 10)+"/")
	if err != nil {
		return err
	}
	t.m = m
	if err := m.placeGraph(t.dev.tfName()); err != nil {
		return fmt.Errorf("place graph on %s: %w", t.dev.tfName(), err)
	}
	cfg, err := sessionConfig(t.intra, t.inter, t.dev, true)
	if err != nil {
		return fmt.Errorf("session config: %w", err)
	}
	t.sess, err = tf.NewSession(m.graph, &tf.SessionOptions{Config: cfg})
	if err != nil {
		return fmt.Errorf("session: %w", err)
	}
	if err := t.assign(ctx, m.params, init); err != nil {
		return err
	}
	return t.clearOptimizer()
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
			toTFInto(v.param, t.side, ts[i].Data, view)
		} else if err == nil {
			data := toTF(v.param, t.side, ts[i].Data)
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
			fromTFInto(v.param, t.side, view, data)
		} else {
			buf := make([]float32, n)
			if err := readFloats(out[i], buf); err != nil {
				return nil, fmt.Errorf("read %s: %w", v.name, err)
			}
			fromTFInto(v.param, t.side, buf, data)
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
		if c < 0 || int(c) >= t.cfg.NumClasses {
			return nil, nil, fmt.Errorf("batch: label %d of image %d: want 0 <= label < %d", c, i, t.cfg.NumClasses)
		}
	}
	l, err = t.labels.set([]int64{int64(b.N)}, asBytes(b.Labels))
	return x, l, err
}

// TrainStep runs one optimizer step on b (forward in training mode with
// dropout, backward, update, BatchNorm statistics) and returns the batch's
// mean cross-entropy loss before the update. The whole step is one
// Session.Run that fetches only the loss and the hit count; the updates run
// as its targets. The dropout masks of global step Step() are drawn in Go
// by vgg.DropoutMask straight into the reused input tensors and fed.
// A batch of the wrong image size fails with TensorFlow's shape error
// before any update.
func (t *Trainer) TrainStep(ctx context.Context, b *dataset.Batch) (loss float64, err error) {
	start := time.Now()
	if err := t.enter(ctx, "train step"); err != nil {
		return 0, err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "train step")
	x, l, err := t.feedBatch(b, true)
	if err != nil {
		return 0, fmt.Errorf("tfrun: train step: %w", err)
	}
	feeds := map[tf.Output]*tf.Tensor{t.m.x: x, t.m.labels: l}
	for i, dl := range t.dropout {
		m, err := t.masks[i].setFloats([]int64{int64(b.N), int64(dl.Out)}, func(dst []float32) {
			vgg.DropoutMask(dst, t.cfg.Seed, t.step, dl.Dropout, t.cfg.Dropout)
		})
		if err != nil {
			return 0, fmt.Errorf("tfrun: train step: %w", err)
		}
		feeds[t.m.masks[i]] = m
	}
	if t.cfg.Optimizer == OptimizerAdam {
		lr, eps := adamFeeds(t.cfg, t.adamStep+1)
		a, err1 := t.adamLR.set(nil, asBytes([]float32{lr}))
		e, err2 := t.adamEps.set(nil, asBytes([]float32{eps}))
		if err := errors.Join(err1, err2); err != nil {
			return 0, fmt.Errorf("tfrun: train step: %w", err)
		}
		feeds[t.m.adamLR], feeds[t.m.adamEps] = a, e
	}
	runStart := time.Now()
	// The loss and the batch's top-1 hits (two scalars) are the only fetches.
	out, err := t.sess.Run(feeds, []tf.Output{t.m.trainLoss, t.m.trainCorrect}, t.m.train)
	run := time.Since(runStart)
	if err != nil {
		return 0, fmt.Errorf("tfrun: train step: %w", err)
	}
	t.step++
	t.adamStep++
	loss, err = scalar(out[0])
	if c, ok := out[1].Value().(int32); ok {
		t.lastCorrect = int(c)
	}
	freeTensors(out)
	if err != nil {
		return 0, fmt.Errorf("tfrun: train step: %w", err)
	}
	t.goOverhead.Add(int64(time.Since(start) - run))
	t.steps.Add(1)
	return loss, nil
}

// LastStepCorrect is how many images of the last training batch the model, in training mode
// (dropout on, as Keras reports training accuracy), classified correctly.
func (t *Trainer) LastStepCorrect() int { return t.lastCorrect }

// adamFeeds returns the step size and epsilon that make TF's
// ResourceApplyAdam (fed beta powers 0) perform torch's Adam step t: see
// buildOptimizer. Both are computed in float64 and rounded once.
func adamFeeds(cfg Config, t int64) (lr, eps float32) {
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
// [N, NumClasses]. Labels are not used. The slice is the caller's.
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
	logits = make([]float32, b.N*t.cfg.NumClasses)
	if err := readFloats(out[0], logits); err != nil {
		return nil, fmt.Errorf("tfrun: logits: %w", err)
	}
	return logits, nil
}

// Weights returns the model's current weights in canonical torchvision
// layout and vgg.ParamsFor order. The tensors are the caller's.
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

// SaveWeights writes the weights to path as safetensors in canonical
// torchvision layout, atomically.
func (t *Trainer) SaveWeights(path string) error {
	ts, err := t.Weights()
	if err != nil {
		return err
	}
	meta := map[string]string{
		"framework":   Framework,
		"version":     Version(),
		"model":       t.cfg.Model.String(),
		"head":        string(t.cfg.Head),
		"image_size":  strconv.Itoa(t.cfg.ImageSize),
		"num_classes": strconv.Itoa(t.cfg.NumClasses),
		"hidden":      strconv.Itoa(t.cfg.hidden()),
	}
	if err := weights.WriteSafetensors(path, ts, meta); err != nil {
		return fmt.Errorf("tfrun: save weights: %w", err)
	}
	return nil
}

// LoadWeights replaces the weights with those in path (.safetensors or a
// torchvision .pth state dict, canonical layout). The file must hold the
// whole model; in "features" mode a file with the convolutional base only
// (or a classifier of another shape, such as torchvision's 1000-class head)
// replaces the base and keeps the current head. The optimizer state is
// cleared (zero momentum, Adam restarts at step 1), as in torchrun.
func (t *Trainer) LoadWeights(path string) (err error) {
	ts, err := weights.Load(path)
	if err != nil {
		return fmt.Errorf("tfrun: load weights: %w", err)
	}
	if err := t.enter(context.Background(), "load weights"); err != nil {
		return err
	}
	defer t.mu.Unlock()
	defer recoverTo(&err, "load weights")
	vars := t.m.params
	full, ferr := weights.Arrange(ts, t.params, false)
	if ferr != nil && t.cfg.Mode == ModeFeatures {
		if base, berr := weights.Arrange(ts, t.params, true); berr == nil {
			full, ferr = base, nil
			vars = vars[:len(base)] // the base comes first in params order
		}
	}
	if ferr != nil {
		return fmt.Errorf("tfrun: load weights: %s: %w", path, ferr)
	}
	if err := t.assign(context.Background(), vars, full); err != nil {
		return fmt.Errorf("tfrun: load weights: %w", err)
	}
	if err := t.clearOptimizer(); err != nil {
		return fmt.Errorf("tfrun: load weights: %w", err)
	}
	return nil
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

// Checkpoint metadata keys (weights.CheckpointMeta.Extra) that tfrun writes.
const (
	extraStep     = "tfrun.step"      // global step counter: the dropout mask index
	extraAdamStep = "tfrun.adam_step" // Adam's step count (torch's per-parameter "step")
	extraModel    = "tfrun.model"
	extraHead     = "tfrun.head"
	extraMode     = "tfrun.mode"
)

// optimizerString describes the optimizer for checkpoint metadata, in
// torchrun's format.
func (c Config) optimizerString() string {
	if c.Optimizer == OptimizerAdam {
		return fmt.Sprintf("adam(lr=%g,betas=(%g,%g),eps=%g,weight_decay=%g)", c.LR, c.Beta1, c.Beta2, c.Eps, c.WeightDecay)
	}
	return fmt.Sprintf("sgd(lr=%g,momentum=%g,weight_decay=%g,nesterov=%t)", c.LR, c.Momentum, c.WeightDecay, c.Nesterov)
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
		Optimizer: t.cfg.optimizerString(),
		Extra: map[string]string{
			extraStep:  strconv.FormatInt(t.step, 10),
			extraModel: t.cfg.Model.String(),
			extraHead:  string(t.cfg.Head),
			extraMode:  t.cfg.Mode,
		},
	}
	if t.cfg.Optimizer == OptimizerAdam {
		meta.Extra[extraAdamStep] = strconv.FormatInt(t.adamStep, 10)
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
	if got, want := meta.Optimizer, t.cfg.optimizerString(); (t.cfg.Optimizer == OptimizerAdam) != strings.HasPrefix(got, "adam") {
		// Another learning rate is fine, another optimizer is not: its state would not fit.
		return fail(fmt.Errorf("optimizer %s, this trainer uses %s", got, want))
	}
	full, err := weights.Arrange(ps, t.params, false)
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
	gstep, err1 := counter(extraStep, int64(meta.Step))
	astep, err2 := counter(extraAdamStep, 0)
	if err := errors.Join(err1, err2); err != nil {
		return fail(err)
	}
	if err := t.assign(context.Background(), t.m.params, full); err != nil {
		return fail(err)
	}
	if err := t.assign(context.Background(), t.m.slots, slots); err != nil {
		return fail(err)
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

// Framework returns "tensorflow".
func (t *Trainer) Framework() string { return Framework }

// Version returns the loaded library's version (see Version).
func (t *Trainer) Version() string { return Version() }

// Device returns the device in flag form: "cpu" or "cuda:N".
func (t *Trainer) Device() string { return t.dev.String() }

// Threads returns the intra-op thread count of the session.
func (t *Trainer) Threads() int { return t.intra }

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
// on t returns ErrClosed.
func (t *Trainer) Close() (err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	defer recoverTo(&err, "close")
	t.closed = true
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
	if t.m != nil {
		freeGraph(t.m.graph)
		t.m = nil
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
