package compare

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// Trainer is what compare needs of a framework driver. torchrun.Trainer and tfrun.Trainer
// satisfy it; compare imports neither (a program registers them with Register). A driver that
// can do more satisfies the optional interfaces: Checkpointer, WeightsReader, Logitser,
// Syncer, GPUMemory.
type Trainer interface {
	// TrainStep trains one batch and returns its loss and how many of its images the model,
	// in training mode (dropout on), classified correctly (top-1).
	TrainStep(ctx context.Context, b *dataset.Batch) (loss float64, correct int, err error)
	// Evaluate returns the batch's loss and top-1 hits in evaluation mode, without an update.
	Evaluate(ctx context.Context, b *dataset.Batch) (loss float64, correct int, err error)
	// Info reports the framework's name, version, device, threads and settings.
	Info() recipe.Info
	Close() error
}

// Checkpointer is implemented by drivers that save and restore their whole training state
// (weights, optimizer state, step counters). Train needs it for Spec.Checkpoint and
// Spec.Resume.
type Checkpointer interface {
	SaveCheckpoint(dir string, epoch, step int) error
	LoadCheckpoint(dir string) (epoch, step int, err error)
}

// WeightsReader is implemented by drivers that can read their parameters back out of the
// framework in torchvision's canonical layout, in model.Net.Params order.
type WeightsReader interface {
	Weights() ([]*weights.Tensor, error)
}

// Logitser is implemented by drivers that return a batch's logits, dropout off.
type Logitser interface {
	Logits(ctx context.Context, b *dataset.Batch) ([]float32, error)
}

// Syncer is implemented by drivers whose steps may return before the device finished
// (CUDA): Sync waits for it. Train calls it before every timer read; a driver without it is
// taken to be synchronous.
type Syncer interface {
	Sync() error
}

// LossScaler is implemented by drivers with fp16 dynamic loss scaling: the scale in force
// (0 when the precision has none), recorded in the run's settings as "loss_scale".
type LossScaler interface {
	LossScale() float64
}

// GPUMemory is implemented by drivers that report the peak GPU memory their
// allocator handed out (RunRecord.PeakGPUAllocatorBytes).
type GPUMemory interface {
	PeakGPUBytes() int64
}

// ErrInterrupted is returned by Train when its context is cancelled: the step in flight
// finished, a checkpoint was written (when a folder was given) and the record is partial.
var ErrInterrupted = errors.New("compare: interrupted")

// Progress is one report from a training loop or a comparison. compare never prints; the
// CLI draws bars from these.
type Progress struct {
	Phase     string // "parity", "train", "eval", "done"
	Framework string
	Repeat    int // 1-based; 0 outside a comparison
	Repeats   int
	Epoch     int // 1-based
	Epochs    int
	Step      int // 1-based within the epoch
	Steps     int
	Loss      float64
	Accuracy  float64
	ImagesPS  float64
}

// Loaders is the data a training run consumes.
type Loaders struct {
	Train, Val *dataset.Loader
	Classes    int
	DataPath   string
	TrainLen   int
	ValLen     int
}

// Train runs spec.Epochs epochs of tr over the loaders and fills a run record. Cancelling ctx
// stops after the step in flight: a checkpoint is written to spec.Checkpoint (if set), the
// record is marked partial and ErrInterrupted is returned with it. With spec.Resume, training
// continues from that checkpoint; batches and dropout masks derive from (seed, epoch, step), so
// the result equals an uninterrupted run.
func Train(ctx context.Context, tr Trainer, spec Spec, data Loaders, onProgress func(Progress)) (*RunRecord, error) {
	clk := newLapClock(0)
	rec, err := train(ctx, tr, spec, data, onProgress, clk, nil)
	if rec != nil {
		rec.TimeBreakdownSeconds = clk.done(partReport)
	}
	return rec, err
}

// train is Train with the run's clock: TrainOne starts it at the run's first statement and
// laps the rest of the record's time (exports) after it. g is the data-parallel group of a
// rank (nil for one process): the ranks check that they loaded the same weights, exchange
// each step's figures and the decision to stop (so that every rank stops before the same
// step), and only rank 0 validates and writes checkpoints.
func train(ctx context.Context, tr Trainer, spec Spec, data Loaders, onProgress func(Progress), clk *lapClock, g Group) (*RunRecord, error) {
	if onProgress == nil {
		onProgress = func(Progress) {}
	}
	info := tr.Info()
	rec := newRecord(info, spec, data)
	lead := g == nil || g.Rank() == 0 // validates and writes checkpoints
	if g != nil {
		rec.WorldSize, rec.Rank, rec.Backend = g.WorldSize(), g.Rank(), info.Settings[recipe.SettingBackend]
	}
	gpu := startGPU(rec, info.Device) // NVML's peak over the whole run, on every return
	defer gpu.stop(rec)
	ck, canCheckpoint := tr.(Checkpointer)
	if !canCheckpoint && (spec.Checkpoint != "" || spec.Resume != "") {
		return rec, fmt.Errorf("compare: %w: %s cannot write or read checkpoints", ErrInvalid, info.Framework)
	}
	if spec.Resume == "" {
		// What the framework really holds, read back before the clock starts.
		if wr, ok := tr.(WeightsReader); ok {
			ts, err := wr.Weights()
			if err != nil {
				return rec, fmt.Errorf("compare: reading the loaded weights back: %w", err)
			}
			rec.LoadedWeightsSHA256 = weights.CanonicalSHA256(ts)
			if g != nil {
				if err := g.Check(ctx, "loaded weights", rec.LoadedWeightsSHA256); err != nil {
					return rec, fmt.Errorf("compare: %w", err)
				}
			}
		}
	}
	clk.lap(partParity)
	start := time.Now()
	startEpoch, skip := 0, 0
	if spec.Resume != "" {
		e, s, err := ck.LoadCheckpoint(spec.Resume)
		if err != nil {
			return rec, fmt.Errorf("compare: resume: %w", err)
		}
		startEpoch, skip = e, s
		rec.ResumedFrom = &Position{Epoch: e, Step: s}
		if g != nil {
			if err := g.Check(ctx, "checkpoint position", fmt.Sprintf("epoch %d step %d", e, s)); err != nil {
				return rec, fmt.Errorf("compare: resume: %w", err)
			}
		}
		clk.lap(partCheckpoints)
	}
	steps := data.Train.BatchesPerEpoch()
	if spec.StepsPerEpoch > 0 && spec.StepsPerEpoch < steps {
		steps = spec.StepsPerEpoch
	}
	if steps == 0 {
		return rec, fmt.Errorf("compare: %w: the training set has fewer images than one batch", ErrInvalid)
	}

	// The first batch's evaluation and each validation pass run to their end when ctx is
	// cancelled, like a step: an interruption then lands between steps (the next epoch's
	// first, after the epoch's checkpoint) and the record says where.
	evalCtx := context.WithoutCancel(ctx)

	// The first batch, before any update, with dropout off: the parity value.
	if startEpoch == 0 && skip == 0 {
		it := data.Train.Epoch(evalCtx, 0)
		b, err := it.Next()
		it.Close()
		if err != nil {
			return rec, fmt.Errorf("compare: first batch: %w", err)
		}
		rec.FirstBatchSHA256 = b.Hash()
		loss, _, err := tr.Evaluate(evalCtx, b)
		if err != nil {
			return rec, fmt.Errorf("compare: initial loss: %w", err)
		}
		rec.InitialLoss = loss
		if lg, ok := tr.(Logitser); ok {
			if rec.FirstBatchLogits, err = lg.Logits(evalCtx, b); err != nil {
				return rec, fmt.Errorf("compare: first-batch logits: %w", err)
			}
		}
		onProgress(Progress{Phase: "parity", Framework: info.Framework, Loss: loss})
		clk.lap(partParity)
	}

	var stepTimes []float64
	var waitTotal, stepTotal time.Duration
	globalStep := 0
	for epoch := startEpoch; epoch < spec.Epochs; epoch++ {
		er, interrupted, err := trainEpoch(ctx, tr, info, spec, data, epoch, steps, skip, &globalStep, rec, &stepTimes, &waitTotal, &stepTotal, onProgress, clk, g)
		skip = 0
		if err != nil {
			rec.finish(start, stepTimes, waitTotal, stepTotal, tr)
			return rec, err
		}
		if interrupted != nil {
			rec.finish(start, stepTimes, waitTotal, stepTotal, tr)
			rec.Partial = true
			rec.InterruptedAt = interrupted
			if spec.Checkpoint != "" && lead {
				err := ck.SaveCheckpoint(spec.Checkpoint, interrupted.Epoch, interrupted.Step)
				clk.lap(partCheckpoints)
				if err != nil {
					err = fmt.Errorf("compare: checkpoint on interrupt: %w", err)
					rec.Error = err.Error()
					return rec, err
				}
			}
			return rec, ErrInterrupted
		}
		if !lead {
			// The other ranks wait for rank 0's validation at the next step's exchange.
		} else if err := evaluate(evalCtx, tr, data.Val, epoch, &er); err != nil {
			rec.finish(start, stepTimes, waitTotal, stepTotal, tr)
			return rec, err
		}
		clk.lap(partEvaluation)
		er.Seconds = time.Since(start).Seconds() - rec.elapsedBefore()
		rec.Epochs = append(rec.Epochs, er)
		if spec.TargetAccuracy > 0 && rec.TimeToTargetSeconds == nil && er.ValAccuracy >= spec.TargetAccuracy {
			t := time.Since(start).Seconds()
			rec.TimeToTargetSeconds = &t
		}
		onProgress(Progress{Phase: "eval", Framework: info.Framework, Epoch: epoch + 1, Epochs: spec.Epochs,
			Loss: er.ValLoss, Accuracy: er.ValAccuracy, ImagesPS: er.ImagesPerSecond})
		if spec.Checkpoint != "" && lead {
			err := ck.SaveCheckpoint(spec.Checkpoint, epoch+1, 0)
			clk.lap(partCheckpoints)
			if err != nil {
				rec.finish(start, stepTimes, waitTotal, stepTotal, tr)
				err = fmt.Errorf("compare: checkpoint: %w", err)
				rec.Partial, rec.Error = true, err.Error()
				return rec, err
			}
		}
	}
	rec.finish(start, stepTimes, waitTotal, stepTotal, tr)
	onProgress(Progress{Phase: "done", Framework: info.Framework})
	return rec, nil
}

func trainEpoch(ctx context.Context, tr Trainer, info recipe.Info, spec Spec, data Loaders, epoch, steps, skip int,
	globalStep *int, rec *RunRecord, stepTimes *[]float64, waitTotal, stepTotal *time.Duration, onProgress func(Progress), clk *lapClock, g Group) (EpochRecord, *Position, error) {
	er := EpochRecord{Epoch: epoch + 1}
	// A rank of a data-parallel run stops only where the ranks agreed to (the exchange before
	// each step): its batches must not fail because ctx ended between an exchange and the step.
	iterCtx := ctx
	if g != nil {
		iterCtx = context.WithoutCancel(ctx)
	}
	it := data.Train.Epoch(iterCtx, epoch)
	defer it.Close()
	var lossSum float64
	var correct, seen, timedImages int
	var timed time.Duration
	// A step runs to its end even when ctx is cancelled: the driver gets a context that is
	// never cancelled, and ctx is checked between steps.
	stepCtx := context.WithoutCancel(ctx)
	for i := 0; i < steps; i++ {
		if i >= skip {
			// The ranks of a data-parallel run agree before each step whether to stop, so
			// that none waits in an all-reduce the others never join.
			stop := ctx.Err() != nil
			if g != nil {
				v, err := g.Step(stepCtx, StepValues{Stop: stop})
				if err != nil {
					return er, nil, fmt.Errorf("compare: epoch %d step %d: %w", epoch+1, i+1, err)
				}
				stop = v.Stop
			}
			if stop {
				return er, &Position{Epoch: epoch, Step: i}, nil
			}
		}
		b, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil && i >= skip && ctx.Err() != nil && g == nil { // cancelled while the batch was loading
			return er, &Position{Epoch: epoch, Step: i}, nil
		}
		if err != nil {
			return er, nil, fmt.Errorf("compare: epoch %d batch %d: %w", epoch+1, i, err)
		}
		if i < skip { // resuming mid-epoch: these batches were trained before the interruption
			*globalStep++
			continue
		}
		t0 := time.Now()
		loss, c, err := tr.TrainStep(stepCtx, b)
		synced := false
		if sy, ok := tr.(Syncer); ok && err == nil {
			err, synced = sy.Sync(), true
		}
		n := b.N
		if err == nil && g != nil {
			// Every rank records the global batch's figures: the sums over the ranks.
			var v StepValues
			if v, err = g.Step(stepCtx, StepValues{LossSum: loss * float64(b.N), Correct: c, Images: b.N}); err == nil {
				loss, c, n = v.LossSum/float64(v.Images), v.Correct, v.Images
			}
		}
		if err != nil {
			return er, nil, fmt.Errorf("compare: epoch %d step %d: %w", epoch+1, i+1, err)
		}
		d := time.Since(t0)
		if synced || info.Device == "cpu" {
			rec.SyncedTimerReads++ // a driver without Sync is synchronous, which is enough on the CPU
		}
		rec.StepLosses = append(rec.StepLosses, loss)
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return er, nil, fmt.Errorf("compare: epoch %d step %d: loss is %v (lower the learning rate)", epoch+1, i+1, loss)
		}
		*globalStep++
		if *globalStep > spec.WarmupSteps {
			*stepTimes = append(*stepTimes, d.Seconds())
			rec.TimedSteps++
			*waitTotal += b.Wait
			*stepTotal += d + b.Wait
			timed += d + b.Wait
			timedImages += n
		}
		lossSum += loss * float64(n)
		seen += n
		correct += c
		er.TrainAccuracy = float64(correct) / float64(seen)
		if timed > 0 {
			er.ImagesPerSecond = float64(timedImages) / timed.Seconds()
		}
		onProgress(Progress{Phase: "train", Framework: info.Framework, Epoch: epoch + 1, Epochs: spec.Epochs,
			Step: i + 1, Steps: steps, Loss: lossSum / float64(seen), Accuracy: er.TrainAccuracy, ImagesPS: er.ImagesPerSecond})
		if *globalStep > spec.WarmupSteps {
			clk.lap(partTimed)
		} else {
			clk.lap(partWarmup)
		}
	}
	if seen > 0 {
		er.TrainLoss = lossSum / float64(seen)
	}
	return er, nil, nil
}

// evaluate fills the validation figures of er: loss and accuracy over the whole validation
// set, dropout off, no update.
func evaluate(ctx context.Context, tr Trainer, val *dataset.Loader, epoch int, er *EpochRecord) error {
	if val == nil {
		return nil
	}
	it := val.Epoch(ctx, epoch)
	defer it.Close()
	var lossSum float64
	var correct, n int
	for {
		b, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("compare: validation: %w", err)
		}
		loss, c, err := tr.Evaluate(ctx, b)
		if err != nil {
			return fmt.Errorf("compare: validation: %w", err)
		}
		lossSum += loss * float64(b.N)
		correct += c
		n += b.N
	}
	if n > 0 {
		er.ValLoss = lossSum / float64(n)
		er.ValAccuracy = float64(correct) / float64(n)
	}
	return nil
}

// newRecord starts a run's record from what the driver reports (info) and the Spec: the
// model's name, head and hidden width resolved, the recipe with the driver's threads, and the
// driver's settings with its threads and device.
func newRecord(info recipe.Info, spec Spec, data Loaders) *RunRecord {
	r := spec.Config.Resolved()
	settings := map[string]string{"threads": strconv.Itoa(info.Threads), "device": info.Device}
	for k, v := range info.Settings {
		settings[k] = v
	}
	return &RunRecord{
		Schema: RunSchema, Framework: info.Framework, FrameworkVersion: info.Version,
		Device: info.Device, Threads: info.Threads, Model: r.Model, Head: r.Head, Mode: spec.Mode,
		ImageSize: spec.ImageSize, BatchSize: spec.BatchSize, Optimizer: spec.Optimizer,
		LR: spec.LR, Precision: r.Precision, Seed: spec.Seed, Hidden: r.Hidden, Recipe: spec.Recipe(info.Threads), StepLosses: []float64{},
		Dataset:     DatasetInfo{Path: data.DataPath, Classes: data.Classes, TrainImages: data.TrainLen, ValImages: data.ValLen},
		WarmupSteps: spec.WarmupSteps, Epochs: []EpochRecord{}, PID: os.Getpid(), Settings: settings,
		WorldSize: 1,
	}
}

func (r *RunRecord) elapsedBefore() float64 {
	var s float64
	for _, e := range r.Epochs {
		s += e.Seconds
	}
	return s
}

func (r *RunRecord) finish(start time.Time, stepTimes []float64, wait, total time.Duration, tr Trainer) {
	r.TotalSeconds = time.Since(start).Seconds()
	r.StepTimesSeconds = stepTimes
	r.StepSeconds = Quantiles{P50: Quantile(stepTimes, 0.5), P95: Quantile(stepTimes, 0.95)}
	if total > 0 {
		r.DataWaitFraction = wait.Seconds() / total.Seconds()
		var images int
		if len(stepTimes) > 0 {
			images = len(stepTimes) * r.BatchSize
		}
		r.ImagesPerSecond = float64(images) / total.Seconds()
	}
	r.PeakRSSBytes = PeakRSS()
	if cm, ok := tr.(Communicator); ok && r.Backend != "" && len(r.StepLosses) > 0 {
		c := cm.CommSeconds() / float64(len(r.StepLosses))
		r.CommSecondsPerStep = &c
	}
	if ls, ok := tr.(LossScaler); ok && r.Precision == recipe.FP16 {
		r.Settings["loss_scale"] = strconv.FormatFloat(ls.LossScale(), 'g', -1, 64)
	}
	// PeakGPUBytes is NVML's (gpuSampler.stop); the allocator's figure is a second column.
	if gm, ok := tr.(GPUMemory); ok {
		if g := gm.PeakGPUBytes(); g > 0 {
			r.PeakGPUAllocatorBytes = &g
		}
	}
}

// Quantile is the linear-interpolation quantile (numpy's default) of xs.
func Quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	pos := q * float64(len(s)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	return s[lo] + (s[hi]-s[lo])*(pos-float64(lo))
}

// PeakRSS is this process's peak resident set size (VmHWM), in bytes; 0 where unknown.
func PeakRSS() int64 { return procStatusBytes("VmHWM:") }

// RSS is this process's current resident set size (VmRSS), in bytes; 0 where unknown.
func RSS() int64 { return procStatusBytes("VmRSS:") }

func procStatusBytes(key string) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", "self", "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}
