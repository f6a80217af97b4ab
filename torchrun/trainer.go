package torchrun

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

var (
	// ErrClosed is returned by every method of a Trainer after Close.
	ErrClosed = errors.New("torchrun: trainer is closed")
	// ErrBusy is returned when a call overlaps another call on the same Trainer.
	ErrBusy = errors.New("torchrun: trainer is busy: another call on it is in progress (a Trainer is not safe for concurrent use)")
	// ErrOutOfMemory is wrapped by errors from a device (or host) allocation failure.
	ErrOutOfMemory = errors.New("out of memory")
	// ErrWeights is wrapped by New's error when Config.Weights do not fit the
	// model (tensors missing, of another shape, or not in the model); the
	// message names them. It is the caller's mistake, not a libtorch failure.
	ErrWeights = errors.New("initial weights do not fit the model")
)

// Framework is what Trainer.Framework reports.
const Framework = "torch"

// Checkpoint metadata keys (weights.CheckpointMeta.Extra) that torchrun writes.
const (
	extraStep     = "torchrun.step"      // global step counter: the dropout mask index
	extraAdamStep = "torchrun.adam_step" // Adam's per-parameter step (equal for all)
	extraModel    = "torchrun.model"
	extraMode     = "torchrun.mode"
	extraHead     = "torchrun.head"
)

// Trainer trains one VGG on libtorch. It owns a native model and optimizer;
// Close frees them.
//
// A Trainer is not safe for concurrent use: a call that overlaps another call
// on the same Trainer returns ErrBusy instead of corrupting state (Close waits
// for the call in flight instead). Several Trainers may live in one process and
// be used from different goroutines on the CPU; they share libtorch's
// process-wide thread pools (see Config.Threads).
type Trainer struct {
	mu      sync.Mutex
	m       *model  // nil after Close
	w       *worker // the OS thread that makes every native call for m
	cleanup runtime.Cleanup

	cfg    Config
	params []vgg.Param
	head   []vgg.HeadLayer
	device string
	// masks holds one step's dropout masks, layer after layer (N·Out values
	// for each hidden head layer); reused across steps. nil with Dropout 0.
	masks []float32
	// lastCorrect is the top-1 hit count of the last training batch.
	lastCorrect int
	threads     int
	step        int64 // completed training steps: the dropout mask index
}

// New builds the model on cfg.Device with the initial weights cfg describes
// (see Config.Weights and the Mode constants) and its optimizer.
func New(ctx context.Context, cfg Config) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("torchrun: new: %w", err)
	}
	device, _ := parseDevice(cfg.Device)
	if cfg.Hidden == 0 {
		cfg.Hidden = vgg.DefaultHidden
	}
	cfg.Head, _ = vgg.ParseHead(string(cfg.Head)) // Validate accepted it; "" becomes HeadFlatten
	threads := cfg.Threads
	if threads == 0 {
		threads = runtime.NumCPU()
	}
	interop := cfg.InterOpThreads
	if interop == 0 {
		interop = runtime.NumCPU()
	}
	params, err := vgg.ParamsFor(cfg.Model, cfg.Head, cfg.ImageSize, cfg.NumClasses, cfg.Hidden)
	if err != nil {
		return nil, fmt.Errorf("torchrun: new: %w", err)
	}
	head, err := cfg.Head.Layers(cfg.ImageSize, cfg.NumClasses, cfg.Hidden)
	if err != nil {
		return nil, fmt.Errorf("torchrun: new: %w", err)
	}
	init, _, err := weights.Initial(cfg.Weights, params, cfg.Mode, cfg.Head, cfg.Seed, false)
	if err != nil {
		if cfg.Weights != nil {
			return nil, fmt.Errorf("torchrun: new: %w: %w", ErrWeights, err)
		}
		return nil, fmt.Errorf("torchrun: new: %w", err)
	}
	layers := cfg.Model.Layers()
	s := &spec{
		layers:      make([]int32, len(layers)),
		batchNorm:   cfg.Model.BatchNorm,
		imageSize:   cfg.ImageSize,
		head:        head,
		headPool:    cfg.Head.AdaptivePool(),
		features:    cfg.Mode == ModeFeatures,
		adam:        cfg.Optimizer == OptimizerAdam,
		lr:          cfg.LR,
		momentum:    cfg.Momentum,
		weightDecay: cfg.WeightDecay,
		nesterov:    cfg.Nesterov,
		beta1:       cfg.Beta1,
		beta2:       cfg.Beta2,
		eps:         cfg.Eps,
		device:      device,
	}
	for i, v := range layers {
		if v == vgg.Pool {
			s.layers[i] = -1
		} else {
			s.layers[i] = int32(v)
		}
	}
	w := newWorker()
	var m *model
	w.do(func() {
		if _, err = nativeSetThreads(threads, interop); err != nil {
			return
		}
		if m, err = nativeNew(s); err != nil {
			return
		}
		for _, x := range init {
			if err = nativeSetTensor(m, "new", x.Name, x.Data); err != nil {
				break
			}
		}
		for _, p := range params {
			if err == nil && p.Kind.Trainable() && !vgg.Trainable(cfg.Mode, cfg.Head, cfg.FreezeLoadedHead, p) {
				err = nativeFreeze(m, p.Name)
			}
		}
		if err == nil {
			err = nativePrepare(m)
		}
		if err != nil {
			nativeFree(m)
		}
	})
	if err != nil {
		w.stop()
		return nil, err
	}
	t := &Trainer{m: m, w: w, cfg: cfg, params: params, head: head, device: device, threads: threads}
	t.cfg.Weights = nil // copied into the model; do not keep the caller's tensors alive
	// A safety net only: Close is the plan.
	t.cleanup = runtime.AddCleanup(t, func(r native) {
		r.w.do(func() { nativeFree(r.m) })
		r.w.stop()
	}, native{m, w})
	return t, nil
}

// native is what a Trainer's cleanup frees.
type native struct {
	m *model
	w *worker
}

// acquire locks t for one call: ErrBusy if a call is in flight, ErrClosed after Close.
func (t *Trainer) acquire() error {
	if !t.mu.TryLock() {
		return ErrBusy
	}
	if t.m == nil {
		t.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// run locks t for one call (see acquire) and runs f on t's worker thread.
func (t *Trainer) run(f func() error) error {
	if err := t.acquire(); err != nil {
		return err
	}
	defer t.mu.Unlock()
	var err error
	t.w.do(func() { err = f() })
	return err
}

// checkBatch makes sure the native side reads only memory that b owns.
func (t *Trainer) checkBatch(op string, b *dataset.Batch, needLabels bool) error {
	switch {
	case b == nil:
		return fmt.Errorf("torchrun: %s: nil batch", op)
	case b.N < 1 || b.H < 1 || b.W < 1 || b.C < 1:
		return fmt.Errorf("torchrun: %s: batch of shape %d×%d×%d×%d (NHWC) is empty", op, b.N, b.H, b.W, b.C)
	case len(b.X) != b.N*b.H*b.W*b.C:
		return fmt.Errorf("torchrun: %s: batch holds %d values, want N·H·W·C = %d·%d·%d·%d = %d", op, len(b.X), b.N, b.H, b.W, b.C, b.N*b.H*b.W*b.C)
	case needLabels && len(b.Labels) != b.N:
		return fmt.Errorf("torchrun: %s: batch holds %d labels, want N = %d", op, len(b.Labels), b.N)
	}
	return nil
}

// checkShape refuses images the model was not built for. (libtorch would catch
// most of them as a matrix-shape error; some, such as 33×33 at S = 32, would
// silently pass through the pooling, so Go checks first.)
func (t *Trainer) checkShape(op string, b *dataset.Batch) error {
	if b.H != t.cfg.ImageSize || b.W != t.cfg.ImageSize || b.C != 3 {
		return fmt.Errorf("torchrun: %s: batch images are %d×%d×%d, the model wants %d×%d×3", op, b.H, b.W, b.C, t.cfg.ImageSize, t.cfg.ImageSize)
	}
	return nil
}

// fillMasks draws the dropout masks of global step t.step for a batch of n
// images (vgg.DropoutMask, layer after layer) into t.masks and returns them;
// nil when the head has no dropout.
func (t *Trainer) fillMasks(n int) []float32 {
	if !(t.cfg.Dropout > 0) {
		return nil
	}
	total := 0
	for _, l := range t.head {
		if l.Hidden {
			total += n * l.Out
		}
	}
	if cap(t.masks) < total {
		t.masks = make([]float32, total)
	}
	masks, off := t.masks[:total], 0
	for _, l := range t.head {
		if l.Hidden {
			vgg.DropoutMask(masks[off:off+n*l.Out], t.cfg.Seed, t.step, l.Dropout, t.cfg.Dropout)
			off += n * l.Out
		}
	}
	return masks
}

// TrainStep runs one optimizer step on b (forward in training mode,
// cross-entropy, backward, update) and returns the batch's mean loss before the
// update. Dropout multiplies each hidden head layer's activation (after ReLU)
// by vgg.DropoutMask(Seed, step, layer), step being the number of steps the
// Trainer has taken (restored by LoadCheckpoint). The whole step is one native
// call, masks included; ctx is checked before it starts.
// After an error the weights may be partly updated.
func (t *Trainer) TrainStep(ctx context.Context, b *dataset.Batch) (float64, error) {
	return t.trainStep(ctx, b, true)
}

// trainStep is TrainStep; check false skips the Go shape check so that tests can
// provoke libtorch's own shape error.
func (t *Trainer) trainStep(ctx context.Context, b *dataset.Batch, check bool) (float64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("torchrun: step: %w", err)
	}
	var loss float64
	err := t.run(func() error {
		if err := t.checkBatch("step", b, true); err != nil {
			return err
		}
		if check {
			if err := t.checkShape("step", b); err != nil {
				return err
			}
		}
		var err error
		if loss, t.lastCorrect, err = nativeTrainStep(t.m, b.X, b.Labels, b.N, b.H, b.W, b.C, t.fillMasks(b.N)); err != nil {
			return err
		}
		t.step++
		return nil
	})
	return loss, err
}

// LastStepCorrect is how many images of the last training batch the model, in training mode
// (dropout on, as Keras reports training accuracy), classified correctly.
func (t *Trainer) LastStepCorrect() int { return t.lastCorrect }

// Evaluate returns the mean cross-entropy loss on b and the number of images
// whose highest logit is their label, in eval mode (dropout off, BatchNorm
// running statistics) without gradients. Labels out of [0, NumClasses) are an
// error (from libtorch).
func (t *Trainer) Evaluate(ctx context.Context, b *dataset.Batch) (loss float64, correct int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("torchrun: evaluate: %w", err)
	}
	err = t.run(func() error {
		if err := t.checkBatch("evaluate", b, true); err != nil {
			return err
		}
		if err := t.checkShape("evaluate", b); err != nil {
			return err
		}
		var err error
		loss, correct, err = nativeEvaluate(t.m, "evaluate", b.X, b.Labels, b.N, b.H, b.W, b.C, nil)
		return err
	})
	return loss, correct, err
}

// Logits returns the model's output for b in eval mode, N×NumClasses values in
// row-major order, owned by the caller. Labels are not used.
func (t *Trainer) Logits(ctx context.Context, b *dataset.Batch) ([]float32, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("torchrun: logits: %w", err)
	}
	var out []float32
	err := t.run(func() error {
		if err := t.checkBatch("logits", b, false); err != nil {
			return err
		}
		if err := t.checkShape("logits", b); err != nil {
			return err
		}
		out = make([]float32, b.N*t.cfg.NumClasses)
		_, _, err := nativeEvaluate(t.m, "logits", b.X, nil, b.N, b.H, b.W, b.C, out)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Weights returns a copy of every model tensor (BatchNorm running statistics
// included) in torchvision's canonical names, layouts and state-dict order.
// The tensors belong to the caller.
func (t *Trainer) Weights() ([]*weights.Tensor, error) {
	var ws []*weights.Tensor
	err := t.run(func() (err error) {
		ws, err = t.weights()
		return err
	})
	return ws, err
}

func (t *Trainer) weights() ([]*weights.Tensor, error) {
	out := make([]*weights.Tensor, len(t.params))
	for i, p := range t.params {
		w := &weights.Tensor{Name: p.Name, Shape: append([]int(nil), p.Shape...), Data: make([]float32, p.NumElements())}
		if err := nativeGetTensor(t.m, "weights", p.Name, w.Data); err != nil {
			return nil, err
		}
		out[i] = w
	}
	return out, nil
}

func (t *Trainer) fileMeta() map[string]string {
	return map[string]string{
		"framework":   Framework,
		"version":     Version(),
		"model":       t.cfg.Model.String(),
		"image_size":  strconv.Itoa(t.cfg.ImageSize),
		"num_classes": strconv.Itoa(t.cfg.NumClasses),
		"hidden":      strconv.Itoa(t.cfg.Hidden),
		"head":        string(t.cfg.Head),
	}
}

// SaveWeights writes the model's tensors (see Weights) to path as
// safetensors, atomically.
func (t *Trainer) SaveWeights(path string) error {
	var ws []*weights.Tensor
	err := t.run(func() (err error) {
		ws, err = t.weights()
		return err
	})
	if err != nil {
		return err
	}
	if err := weights.WriteSafetensors(path, ws, t.fileMeta()); err != nil {
		return fmt.Errorf("torchrun: save weights: %w", err)
	}
	return nil
}

// LoadWeights replaces the model's tensors with those in path (.safetensors,
// or a torch .pth state dict read by weights.Load) and clears the optimizer
// state. The file must hold every tensor of the model with its shape; in
// ModeFeatures a file whose classifier is missing or shaped for another head
// loads the base only and keeps the current head.
func (t *Trainer) LoadWeights(path string) error {
	if err := t.acquire(); err != nil {
		return err
	}
	defer t.mu.Unlock()
	ts, err := weights.Load(path)
	if err != nil {
		return fmt.Errorf("torchrun: load weights: %w", err)
	}
	ws, err := weights.Arrange(ts, t.params, false)
	if err != nil && t.cfg.Mode == ModeFeatures {
		ws, err = weights.Arrange(ts, t.params, true)
	}
	if err != nil {
		return fmt.Errorf("torchrun: load weights: %s: %w", path, err)
	}
	t.w.do(func() { err = t.setWeights("load weights", ws) })
	return err
}

// setWeights copies ws into the model and clears the optimizer state; call it on t's worker.
func (t *Trainer) setWeights(op string, ws []*weights.Tensor) error {
	for _, w := range ws {
		if err := nativeSetTensor(t.m, op, w.Name, w.Data); err != nil {
			return err
		}
	}
	return nativeClearState(t.m)
}

func (t *Trainer) optimizerString() string {
	c := t.cfg
	if c.Optimizer == OptimizerAdam {
		return fmt.Sprintf("adam(lr=%g,betas=(%g,%g),eps=%g,weight_decay=%g)", c.LR, c.Beta1, c.Beta2, c.Eps, c.WeightDecay)
	}
	return fmt.Sprintf("sgd(lr=%g,momentum=%g,weight_decay=%g,nesterov=%t)", c.LR, c.Momentum, c.WeightDecay, c.Nesterov)
}

// trainable reports whether the optimizer updates p (vgg.Trainable).
func (t *Trainer) trainable(p vgg.Param) bool {
	return vgg.Trainable(t.cfg.Mode, t.cfg.Head, t.cfg.FreezeLoadedHead, p)
}

// SaveCheckpoint writes dir/ (weights.SaveCheckpoint, atomically): the model's
// tensors, the optimizer state (SGD: "<param>.momentum_buffer"; Adam:
// "<param>.exp_avg", "<param>.exp_avg_sq" and the step count), epoch and step
// (the caller's numbers, returned by LoadCheckpoint) and the Trainer's own
// step counter, which fixes the dropout masks of the steps that follow.
func (t *Trainer) SaveCheckpoint(dir string, epoch, step int) error {
	return t.run(func() error { return t.saveCheckpoint(dir, epoch, step) })
}

func (t *Trainer) saveCheckpoint(dir string, epoch, step int) error {
	ws, err := t.weights()
	if err != nil {
		return err
	}
	var state []*weights.Tensor
	adamStep := int64(-1)
	for _, p := range t.params {
		if !t.trainable(p) {
			continue
		}
		kinds := []int{stateMomentum}
		suffix := []string{"momentum_buffer"}
		if t.cfg.Optimizer == OptimizerAdam {
			kinds = []int{stateExpAvg, stateExpAvgSq}
			suffix = []string{"exp_avg", "exp_avg_sq"}
		}
		for i, k := range kinds {
			buf := make([]float32, p.NumElements())
			st, ok, err := nativeGetState(t.m, p.Name, k, buf)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if t.cfg.Optimizer == OptimizerAdam {
				if adamStep >= 0 && st != adamStep {
					return fmt.Errorf("torchrun: checkpoint: adam step of %s is %d, other parameters have %d", p.Name, st, adamStep)
				}
				adamStep = st
			}
			state = append(state, &weights.Tensor{Name: p.Name + "." + suffix[i], Shape: append([]int(nil), p.Shape...), Data: buf})
		}
	}
	meta := weights.CheckpointMeta{
		Framework: Framework,
		Epoch:     epoch,
		Step:      step,
		Seed:      t.cfg.Seed,
		Optimizer: t.optimizerString(),
		Extra: map[string]string{
			extraStep:  strconv.FormatInt(t.step, 10),
			extraModel: t.cfg.Model.String(),
			extraMode:  t.cfg.Mode,
			extraHead:  string(t.cfg.Head),
		},
	}
	if adamStep >= 0 {
		meta.Extra[extraAdamStep] = strconv.FormatInt(adamStep, 10)
	}
	if err := weights.SaveCheckpoint(dir, ws, state, meta); err != nil {
		return fmt.Errorf("torchrun: save checkpoint: %w", err)
	}
	return nil
}

// LoadCheckpoint restores a checkpoint that SaveCheckpoint wrote for the same
// model and optimizer: weights, optimizer state and the Trainer's step counter.
// It returns the epoch and step given to SaveCheckpoint.
func (t *Trainer) LoadCheckpoint(dir string) (epoch, step int, err error) {
	err = t.run(func() (err error) {
		epoch, step, err = t.loadCheckpoint(dir)
		return err
	})
	return epoch, step, err
}

func (t *Trainer) loadCheckpoint(dir string) (epoch, step int, err error) {
	ps, state, meta, err := weights.LoadCheckpoint(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("torchrun: load checkpoint: %w", err)
	}
	if meta.Framework != Framework {
		return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s was written by %q, want %q", dir, meta.Framework, Framework)
	}
	if got, want := meta.Optimizer, t.optimizerString(); got != want {
		// Another learning rate is fine, another optimizer is not: its state would not fit.
		if (t.cfg.Optimizer == OptimizerAdam) != (len(got) >= 4 && got[:4] == "adam") {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: optimizer %s, this trainer uses %s", got, want)
		}
	}
	ws, err := weights.Arrange(ps, t.params, false)
	if err != nil {
		return 0, 0, fmt.Errorf("torchrun: load checkpoint: %w", err)
	}
	gstep := int64(meta.Step)
	if s, ok := meta.Extra[extraStep]; ok {
		if gstep, err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s: %w", extraStep, err)
		}
	}
	adamStep := int64(0)
	if s, ok := meta.Extra[extraAdamStep]; ok {
		if adamStep, err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s: %w", extraAdamStep, err)
		}
	}
	if err := t.setWeights("load checkpoint", ws); err != nil {
		return 0, 0, err
	}
	for _, p := range t.params {
		if !t.trainable(p) {
			continue
		}
		var a, b *weights.Tensor
		if t.cfg.Optimizer == OptimizerAdam {
			a, b = weights.Lookup(state, p.Name+".exp_avg"), weights.Lookup(state, p.Name+".exp_avg_sq")
			if (a == nil) != (b == nil) {
				return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s has only part of its adam state", p.Name)
			}
		} else {
			a = weights.Lookup(state, p.Name+".momentum_buffer")
		}
		if a == nil {
			continue // no state yet (no step taken, or momentum 0)
		}
		if len(a.Data) != p.NumElements() || (b != nil && len(b.Data) != p.NumElements()) {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: optimizer state of %s: got %d values, want %d", p.Name, len(a.Data), p.NumElements())
		}
		var bd []float32
		if b != nil {
			bd = b.Data
		}
		if err := nativeSetState(t.m, p.Name, a.Data, bd, adamStep); err != nil {
			return 0, 0, err
		}
	}
	t.step = gstep
	return meta.Epoch, meta.Step, nil
}

// Sync waits until the device has finished all queued work (CUDA
// synchronize); on the CPU every call has already finished when it returns.
func (t *Trainer) Sync() error {
	return t.run(func() error { return nativeSync(t.m) })
}

// PeakGPUBytes returns the most memory that libtorch's CUDA caching allocator
// has handed out to tensors on this Trainer's device since New (its
// "allocated_bytes" peak, what torch.cuda.max_memory_allocated reports; the
// allocator's cache reserves more). The statistic is per device, so Trainers
// sharing a GPU see each other's allocations. It is 0 on the CPU, after
// Close, while another call is in flight, and when libtorch cannot tell.
func (t *Trainer) PeakGPUBytes() int64 {
	var n int64
	if t.run(func() (err error) { n, err = nativePeakGPUBytes(t.m); return err }) != nil {
		return 0
	}
	return n
}

// Framework returns "torch".
func (t *Trainer) Framework() string { return Framework }

// Version returns the version of the loaded libtorch (see the package function).
func (t *Trainer) Version() string { return Version() }

// Device returns the device the model lives on: "cpu" or "cuda:N".
func (t *Trainer) Device() string { return t.device }

// Threads returns the number of libtorch intra-op threads the Trainer asked for.
func (t *Trainer) Threads() int { return t.threads }

// Close frees the native model and optimizer, after waiting for a call in
// flight. It is safe to call more than once; later calls on t return ErrClosed.
func (t *Trainer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		return nil
	}
	t.cleanup.Stop()
	t.w.do(func() { nativeFree(t.m) })
	t.w.stop()
	t.m = nil
	return nil
}
