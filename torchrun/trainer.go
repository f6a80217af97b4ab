package torchrun

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

var (
	// ErrClosed is returned by every method of a Trainer after Close.
	ErrClosed = errors.New("torchrun: trainer is closed")
	// ErrBusy is returned when a call overlaps another call on the same Trainer.
	ErrBusy = errors.New("torchrun: trainer is busy: another call on it is in progress (a Trainer is not safe for concurrent use)")
	// ErrOutOfMemory is wrapped by errors from a device (or host) allocation failure.
	ErrOutOfMemory = errors.New("out of memory")
	// ErrWeights is wrapped by New's error when the initial weights do not fit
	// the model (tensors missing, of another shape, or not in the model); the
	// message names them. It is the caller's mistake, not a libtorch failure.
	ErrWeights = errors.New("initial weights do not fit the model")
)

// Framework is the name Trainer.Info reports.
const Framework = "torch"

// cuBLAS's deterministic workspace setting (what PyTorch's reproducibility
// notes ask for), set by New for a deterministic CUDA recipe unless the
// environment has one.
const (
	cublasWorkspaceEnv = "CUBLAS_WORKSPACE_CONFIG"
	cublasWorkspace    = ":4096:8"
)

// Trainer trains one model.Net on libtorch. It owns a native model and
// optimizer; Close frees them.
//
// A Trainer is not safe for concurrent use: a call that overlaps another call
// on the same Trainer returns ErrBusy instead of corrupting state (Close waits
// for the call in flight instead). Several Trainers may live in one process and
// be used from different goroutines on the CPU; they share libtorch's
// process-wide thread pools (see recipe.Config.Threads).
type Trainer struct {
	mu      sync.Mutex
	m       *handle // nil after Close
	w       *worker // the OS thread that makes every native call for m
	cleanup runtime.Cleanup

	cfg   recipe.Config // resolved
	net   *model.Net
	info  recipe.Info
	drops []int // the net's Dropout layers (Net.Dropouts)
	// masks holds one step's dropout masks, layer after layer (N·width values
	// for each dropout layer); reused across steps. nil with Dropout 0.
	masks []float32
	// gmask holds one dropout layer's mask for a whole global batch when a step's
	// batch is a data-parallel shard (its rows are cut out of it).
	gmask []float32
	step  int64 // completed training steps: the dropout mask index

	// Data-parallel runs (NewParallel); zero in a single-process Trainer.
	par      recipe.Parallel
	group    *group
	groupErr error         // the first failed parallel step: the group is out of step for good
	comm     atomic.Uint64 // math.Float64bits of the seconds spent waiting for gradient all-reduces
}

// New builds cfg's model on cfg.Device with the initial tensors init and its
// optimizer.
//
// cfg is checked by cfg.Validate first, and its error is returned as it is
// (it wraps recipe.ErrInvalid). init holds the model's tensors in
// torchvision's canonical layout (package weights), every one of them and no
// other (weights.Arrange); a missing, mis-shaped or unexpected tensor is an
// error wrapping ErrWeights. init nil means weights.InitParams(net.Params,
// cfg.Seed). Composing tensors from a file with seeded ones, as the training
// modes do, is the caller's job: weights.Initial. The Trainer copies the
// tensors; the caller keeps them.
//
// Parameters that net.Trainable(cfg.Mode, cfg.FreezeLoadedHead, p) excludes
// are frozen; in features mode the layers outside the head also run without
// autograd and with their BatchNorm in eval mode.
func New(ctx context.Context, cfg recipe.Config, init []*weights.Tensor) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("torchrun: new: %w", err)
	}
	net, err := cfg.Net()
	if err != nil {
		return nil, fmt.Errorf("torchrun: new: %w", err)
	}
	cfg = cfg.Resolved()
	var ws []*weights.Tensor
	if init == nil {
		if ws, err = weights.InitParams(net.Params, cfg.Seed); err != nil {
			return nil, fmt.Errorf("torchrun: new: %w", err)
		}
	} else if ws, err = weights.Arrange(init, net.Params, false); err != nil {
		return nil, fmt.Errorf("torchrun: new: %w: %w", ErrWeights, err)
	}
	dev, _ := recipe.ParseDevice(cfg.Device) // Validate accepted it
	s := &spec{
		net:         net,
		features:    cfg.Mode == model.ModeFeatures,
		adam:        cfg.Optimizer == recipe.Adam,
		lr:          cfg.LR,
		momentum:    cfg.Momentum,
		weightDecay: cfg.WeightDecay,
		nesterov:    cfg.Nesterov,
		beta1:       cfg.Beta1,
		beta2:       cfg.Beta2,
		eps:         cfg.Eps,
		device:      dev.String(),

		precision:      cfg.Precision,
		channelsLast:   cfg.ChannelsLast,
		cudnnBenchmark: cfg.CUDNNBenchmark,
		deterministic:  cfg.Deterministic,
	}
	if cfg.Deterministic && dev.GPU {
		// cuBLAS is deterministic only with a fixed workspace, which it reads
		// from the environment when it first starts (and libtorch refuses a
		// cuBLAS product without it); the user's own value wins.
		if _, ok := os.LookupEnv(cublasWorkspaceEnv); !ok {
			if err := os.Setenv(cublasWorkspaceEnv, cublasWorkspace); err != nil {
				return nil, fmt.Errorf("torchrun: new: %w", err)
			}
		}
	}
	w := newWorker()
	var m *handle
	var settings map[string]string
	w.do(func() {
		if _, err = nativeSetThreads(cfg.Threads, cfg.InterOpThreads); err != nil {
			return
		}
		if m, err = nativeNew(s); err != nil {
			return
		}
		// Read back after tr_new has set the switches.
		if settings, err = nativeSettings(m); err == nil {
			var interop int
			if _, interop, err = nativeThreads(); err == nil {
				settings["inter_op_threads"] = strconv.Itoa(interop)
			}
		}
		for _, x := range ws {
			if err != nil {
				break
			}
			err = nativeSetTensor(m, "new", x.Name, x.Data)
		}
		for _, p := range net.Params {
			if err == nil && p.Kind.Trainable() && !net.Trainable(cfg.Mode, cfg.FreezeLoadedHead, p) {
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
	t := &Trainer{m: m, w: w, cfg: cfg, net: net, drops: net.Dropouts()}
	t.info = recipe.Info{Framework: Framework, Version: Version(), Device: dev.String(), Threads: cfg.Threads, Settings: settings}
	// A safety net only: Close is the plan.
	t.cleanup = runtime.AddCleanup(t, func(r native) {
		r.w.do(func() { nativeFree(r.m) })
		r.w.stop()
	}, native{m, w, nil})
	return t, nil
}

// native is what a Trainer's cleanup frees.
type native struct {
	m *handle
	w *worker
	g *group // nil in a single-process Trainer
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
	if S := t.net.ImageSize; b.H != S || b.W != S || b.C != 3 {
		return fmt.Errorf("torchrun: %s: batch images are %d×%d×%d, the model wants %d×%d×3", op, b.H, b.W, b.C, S, S)
	}
	return nil
}

// fillMasks draws the dropout masks of global step t.step for b into t.masks
// and returns them: for each dropout layer of the net in order, the rows
// [b.Offset, b.Offset+b.N) of the mask of the whole global batch,
// model.DropoutMask(Seed, step, layer's Mask) over b.Global()·width values,
// width being the C·H·W of the layer's input. Outside data-parallel runs the
// batch is the global batch and that is the whole mask; a shard takes the rows
// a single process training on the global batch would apply to its images. It
// returns nil when nothing drops.
func (t *Trainer) fillMasks(b *dataset.Batch) []float32 {
	if !(t.cfg.Dropout > 0) {
		return nil
	}
	n, global, first := b.N, b.Global(), b.Offset
	total := 0
	for _, i := range t.drops {
		total += n * t.net.Layers[i].In.Elements()
	}
	if total == 0 {
		return nil
	}
	if cap(t.masks) < total {
		t.masks = make([]float32, total)
	}
	masks, off := t.masks[:total], 0
	for _, i := range t.drops {
		l := t.net.Layers[i]
		width := l.In.Elements()
		w := n * width
		if global == n {
			model.DropoutMask(masks[off:off+w], t.cfg.Seed, t.step, l.Mask, t.cfg.Dropout)
		} else {
			if cap(t.gmask) < global*width {
				t.gmask = make([]float32, global*width)
			}
			g := t.gmask[:global*width]
			model.DropoutMask(g, t.cfg.Seed, t.step, l.Mask, t.cfg.Dropout)
			copy(masks[off:off+w], g[first*width:(first+n)*width])
		}
		off += w
	}
	return masks
}

// TrainStep runs one optimizer step on b (forward in training mode,
// cross-entropy, backward, update) and returns the batch's mean loss before the
// update and how many of its images the model, in training mode (dropout on,
// as Keras reports training accuracy), classified correctly. Each Dropout
// layer multiplies its input by model.DropoutMask(Seed, step, layer), step
// being the number of steps the Trainer has taken (restored by
// LoadCheckpoint). The whole step is one native call, masks included; ctx is
// checked before it starts. After an error the weights may be partly updated.
func (t *Trainer) TrainStep(ctx context.Context, b *dataset.Batch) (loss float64, correct int, err error) {
	return t.trainStep(ctx, b, true)
}

// trainStep is TrainStep; check false skips the Go shape check so that tests can
// provoke libtorch's own shape error.
func (t *Trainer) trainStep(ctx context.Context, b *dataset.Batch, check bool) (loss float64, correct int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("torchrun: step: %w", err)
	}
	err = t.run(func() error {
		if err := t.checkBatch("step", b, true); err != nil {
			return err
		}
		if check {
			if err := t.checkShape("step", b); err != nil {
				return err
			}
		}
		if b.Offset < 0 || b.Offset+b.N > b.Global() {
			return fmt.Errorf("torchrun: step: a shard of %d images at offset %d does not fit its global batch of %d", b.N, b.Offset, b.Global())
		}
		if t.groupErr != nil {
			return fmt.Errorf("torchrun: step: the process group failed at an earlier step: %w", t.groupErr)
		}
		var err error
		var comm float64
		loss, correct, comm, err = nativeTrainStep(t.m, b.X, b.Labels, b.N, b.H, b.W, b.C, t.fillMasks(b))
		if t.group != nil {
			if err != nil {
				// This rank is out of step with the others now (a peer lost, a
				// collective timed out, or a step that failed before its all-reduce).
				t.groupErr = err
				return err
			}
			t.comm.Store(math.Float64bits(math.Float64frombits(t.comm.Load()) + comm))
		}
		if err != nil {
			return err
		}
		t.step++
		return nil
	})
	return loss, correct, err
}

// Evaluate returns the mean cross-entropy loss on b and the number of images
// whose highest logit is their label, in eval mode (dropout off, BatchNorm
// running statistics) without gradients. Labels out of [0, Classes) are an
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

// Logits returns the model's output for b in eval mode, N×Classes values in
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
		out = make([]float32, b.N*t.net.Classes)
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
	out := make([]*weights.Tensor, len(t.net.Params))
	for i, p := range t.net.Params {
		w := &weights.Tensor{Name: p.Name, Shape: append([]int(nil), p.Shape...), Data: make([]float32, p.NumElements())}
		if err := nativeGetTensor(t.m, "weights", p.Name, w.Data); err != nil {
			return nil, err
		}
		out[i] = w
	}
	return out, nil
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

// trainable reports whether the optimizer updates p (model.Net.Trainable).
func (t *Trainer) trainable(p model.Param) bool {
	return t.net.Trainable(t.cfg.Mode, t.cfg.FreezeLoadedHead, p)
}

// SaveCheckpoint writes dir/ (weights.SaveCheckpoint, atomically): the model's
// tensors, the optimizer state (SGD: "<param>.momentum_buffer"; Adam:
// "<param>.exp_avg", "<param>.exp_avg_sq" and the step count), epoch and step
// (the caller's numbers, returned by LoadCheckpoint), the Trainer's own
// step counter, which fixes the dropout masks of the steps that follow, and in
// fp16 the loss scale and its growth tracker (recipe.MetaLossScale,
// recipe.MetaLossScaleTracker). Tensors are written in torchvision's
// contiguous layouts whatever the memory format.
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
	for _, p := range t.net.Params {
		if !t.trainable(p) {
			continue
		}
		kinds := []int{stateMomentum}
		suffix := []string{"momentum_buffer"}
		if t.cfg.Optimizer == recipe.Adam {
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
			if t.cfg.Optimizer == recipe.Adam {
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
		Optimizer: t.cfg.OptimizerString(),
		Extra: map[string]string{
			recipe.MetaStep:  strconv.FormatInt(t.step, 10),
			recipe.MetaModel: t.net.Name,
			recipe.MetaHead:  t.net.Head,
			recipe.MetaMode:  t.cfg.Mode,
		},
	}
	if adamStep >= 0 {
		meta.Extra[recipe.MetaAdamStep] = strconv.FormatInt(adamStep, 10)
	}
	if t.cfg.Precision == recipe.FP16 {
		scale, tracker, err := nativeLossScale(t.m)
		if err != nil {
			return err
		}
		meta.Extra[recipe.MetaLossScale] = strconv.FormatFloat(scale, 'g', -1, 64)
		meta.Extra[recipe.MetaLossScaleTracker] = strconv.FormatInt(tracker, 10)
	}
	if err := weights.SaveCheckpoint(dir, ws, state, meta); err != nil {
		return fmt.Errorf("torchrun: save checkpoint: %w", err)
	}
	return nil
}

// LoadCheckpoint restores a checkpoint that SaveCheckpoint wrote for the same
// model and optimizer: weights, optimizer state, the Trainer's step counter
// and, in fp16, the loss scale and growth tracker (GradScaler's initial state
// when the checkpoint has none).
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
	// Another learning rate is fine, another optimizer is not: its state would not fit.
	if !t.cfg.SameOptimizerState(meta.Optimizer) {
		return 0, 0, fmt.Errorf("torchrun: load checkpoint: optimizer %s, this trainer uses %s", meta.Optimizer, t.cfg.OptimizerString())
	}
	for _, k := range []struct{ key, want string }{{recipe.MetaModel, t.net.Name}, {recipe.MetaHead, t.net.Head}} {
		if got, ok := meta.Extra[k.key]; ok && got != k.want {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s holds %s %q, this trainer has %q", dir, k.key, got, k.want)
		}
	}
	ws, err := weights.Arrange(ps, t.net.Params, false)
	if err != nil {
		return 0, 0, fmt.Errorf("torchrun: load checkpoint: %w", err)
	}
	gstep := int64(meta.Step)
	if s, ok := meta.Extra[recipe.MetaStep]; ok {
		if gstep, err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s: %w", recipe.MetaStep, err)
		}
	}
	adamStep := int64(0)
	if s, ok := meta.Extra[recipe.MetaAdamStep]; ok {
		if adamStep, err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s: %w", recipe.MetaAdamStep, err)
		}
	}
	// fp16: the scale and tracker the run had; a checkpoint of another
	// precision starts from GradScaler's initial state.
	scale, tracker := recipe.LossScaleInit, int64(0)
	if s, ok := meta.Extra[recipe.MetaLossScale]; ok {
		if scale, err = strconv.ParseFloat(s, 64); err != nil || !(scale > 0 && scale <= math.MaxFloat32) {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s %q: want a positive float32", recipe.MetaLossScale, s)
		}
	}
	if s, ok := meta.Extra[recipe.MetaLossScaleTracker]; ok {
		if tracker, err = strconv.ParseInt(s, 10, 64); err != nil || tracker < 0 {
			return 0, 0, fmt.Errorf("torchrun: load checkpoint: %s %q: want a count of 0 or more", recipe.MetaLossScaleTracker, s)
		}
	}
	if err := t.setWeights("load checkpoint", ws); err != nil {
		return 0, 0, err
	}
	if t.cfg.Precision == recipe.FP16 {
		if err := nativeSetLossScale(t.m, "load checkpoint", scale, tracker); err != nil {
			return 0, 0, err
		}
	}
	for _, p := range t.net.Params {
		if !t.trainable(p) {
			continue
		}
		var a, b *weights.Tensor
		if t.cfg.Optimizer == recipe.Adam {
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

// LossScale returns the current fp16 loss scale (recipe.LossScaleInit at the
// start, halved by each step whose gradients overflow, doubled after
// recipe.LossScaleGrowthInterval finite steps in a row), or 0 when the
// precision is not fp16, after Close and while another call is in flight.
func (t *Trainer) LossScale() float64 {
	var s float64
	if t.run(func() (err error) { s, _, err = nativeLossScale(t.m); return err }) != nil {
		return 0
	}
	return s
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

// Info reports the framework ("torch"), the loaded libtorch's version, the
// device ("cpu" or "cuda:N"), the intra-op thread count the Trainer set, and
// the settings that affect speed as libtorch read them back when New returned:
// every recipe.SettingKeys key (precision; tf32, "true" only when both cuBLAS's
// and cuDNN's TF32 switches are on; memory_format "contiguous" or
// "channels_last"; cudnn_benchmark; xla recipe.NotApplicable, as libtorch has
// no C++ counterpart of torch.compile; deterministic) and others (mkldnn,
// cudnn_allow_tf32, cublas_allow_tf32, autocast_dtype under bf16 and fp16,
// inter_op_threads). The TF32, autotuner and deterministic switches are
// process-wide: a later New with other values changes them for every Trainer,
// as the thread counts. The map is the caller's copy. It works after Close too.
func (t *Trainer) Info() recipe.Info {
	i := t.info
	i.Settings = maps.Clone(i.Settings)
	return i
}

// Close frees the native model and optimizer, after waiting for a call in
// flight. A parallel Trainer (NewParallel) then leaves its process group: it
// closes its Gloo connections and tells the store; rank 0, whose process serves
// the store, first waits until every rank has closed (at most the collective
// timeout, capped at 30 s, and not at all after a failed step), so that a rank
// that finishes first does not pull the store from under the others. Close
// returns that wait's error, if any, after freeing everything. It is safe to
// call more than once; later calls on t return ErrClosed.
func (t *Trainer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		return nil
	}
	t.cleanup.Stop()
	var err error
	t.w.do(func() {
		nativeFree(t.m)
		if t.group != nil {
			err = nativeGroupFree(t.group, t.groupErr == nil, closeWait(t.par))
		}
	})
	t.w.stop()
	t.m, t.group = nil, nil
	return err
}
