package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// specFlags are the training flags shared by `train` and `compare`.
func specFlags(d compare.Spec) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data", Usage: "dataset folder (class sub-folders, train/val split, or MNIST IDX); default: the built-in synthetic set"},
		&cli.StringFlag{Name: "model", Value: d.Model, Usage: "vgg11|vgg13|vgg16|vgg19, optionally with _bn"},
		&cli.StringFlag{Name: "head", Value: d.Head, Usage: "flatten (base flattened into torchvision's 3-layer classifier) | torchvision (AdaptiveAvgPool 7×7, fc6/fc7 kept from the weights, new last layer: the study's PyTorch side) | keras (Flatten, Dense(hidden), Dropout, Dense(classes): the study's Keras side)"},
		&cli.BoolFlag{Name: "freeze-fc", Value: d.FreezeFC, Usage: "features mode: keep the head layers taken from the weights file (torchvision's fc6/fc7) frozen"},
		&cli.BoolFlag{Name: "allow-partial-weights", Value: d.AllowPartialWeights, Usage: "seed the tensors the weights file lacks (or has in another shape) instead of refusing it; the report lists each one"},
		&cli.StringFlag{Name: "mode", Value: d.Mode, Usage: "scratch|finetune|features"},
		&cli.StringFlag{Name: "optimizer", Value: d.Optimizer, Usage: "sgd|adam"},
		&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "learning rate"},
		&cli.Float64Flag{Name: "momentum", Value: d.Momentum, Usage: "SGD momentum"},
		&cli.Float64Flag{Name: "weight-decay", Value: d.WeightDecay},
		&cli.BoolFlag{Name: "nesterov", Value: d.Nesterov},
		&cli.IntFlag{Name: "epochs", Value: d.Epochs},
		&cli.IntFlag{Name: "batch-size", Value: d.BatchSize},
		&cli.IntFlag{Name: "image-size", Value: d.ImageSize, Usage: "S: images are resized to S×S; a multiple of 32"},
		&cli.IntFlag{Name: "hidden", Value: d.Hidden, Usage: "classifier hidden width (torchvision VGG16: 4096)"},
		&cli.Float64Flag{Name: "dropout", Value: d.Dropout},
		&cli.Int64Flag{Name: "seed", Value: d.Seed},
		&cli.IntFlag{Name: "threads", Value: d.Threads, Usage: "intra-op and inter-op threads per framework (0: all cores)"},
		&cli.BoolFlag{Name: "gpu", Usage: "train on the first CUDA GPU (same as --device cuda)"},
		&cli.StringFlag{Name: "device", Value: d.Device, Usage: "cpu|cuda|cuda:N"},
		&cli.StringFlag{Name: "normalize", Value: d.Normalize, Usage: "auto (the weights' origin decides: torch files imagenet, Keras files caffe, none rescale) | rescale (x/255) | imagenet | caffe"},
		&cli.BoolFlag{Name: "augment", Value: d.Augment, Usage: "ImageDataGenerator-style augmentation (flip, rotation, shift, zoom, shear)"},
		&cli.Float64Flag{Name: "val-split", Value: d.ValSplit, Usage: "validation share when the data is not pre-split"},
		&cli.StringFlag{Name: "weights", Usage: "initial weights, format read from the content: safetensors or torch .pth (zip or legacy) in torchvision's layout, or Keras .h5 / .weights.h5"},
		&cli.IntFlag{Name: "warmup-steps", Value: d.WarmupSteps, Usage: "steps left out of throughput figures"},
		&cli.IntFlag{Name: "steps-per-epoch", Usage: "cap on training steps per epoch (0: the whole training set)"},
		&cli.Float64Flag{Name: "target-accuracy", Usage: "record the time to reach this validation accuracy (0..1)"},
		&cli.StringFlag{Name: "checkpoint", Usage: "folder for checkpoints (written atomically after each epoch and on interrupt)"},
		&cli.StringFlag{Name: "resume", Usage: "continue from the checkpoint in this folder"},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"},
		&cli.Int64Flag{Name: "max-pixels", Value: dataset.DefaultMaxPixels, Usage: "largest declared width*height of one image file (checked from its header; larger files are skipped)"},
		&cli.BoolFlag{Name: "strict", Usage: "fail on the first unusable data file instead of skipping it (skips are listed in the run record)"},
	}
}

// specFrom reads the shared flags into a Spec starting from d.
func specFrom(c *cli.Context, d compare.Spec) compare.Spec {
	s := d
	str := func(name string, dst *string) {
		if c.IsSet(name) || *dst == "" {
			*dst = c.String(name)
		}
	}
	str("data", &s.Data)
	str("model", &s.Model)
	str("head", &s.Head)
	str("mode", &s.Mode)
	str("optimizer", &s.Optimizer)
	str("normalize", &s.Normalize)
	str("weights", &s.Weights)
	str("checkpoint", &s.Checkpoint)
	str("resume", &s.Resume)
	str("device", &s.Device)
	f64 := func(name string, dst *float64) {
		if c.IsSet(name) {
			*dst = c.Float64(name)
		}
	}
	f64("lr", &s.LR)
	f64("momentum", &s.Momentum)
	f64("weight-decay", &s.WeightDecay)
	f64("dropout", &s.Dropout)
	f64("val-split", &s.ValSplit)
	f64("target-accuracy", &s.TargetAccuracy)
	i := func(name string, dst *int) {
		if c.IsSet(name) {
			*dst = c.Int(name)
		}
	}
	i("epochs", &s.Epochs)
	i("batch-size", &s.BatchSize)
	i("image-size", &s.ImageSize)
	i("hidden", &s.Hidden)
	i("threads", &s.Threads)
	i("warmup-steps", &s.WarmupSteps)
	i("steps-per-epoch", &s.StepsPerEpoch)
	if c.IsSet("seed") {
		s.Seed = c.Int64("seed")
	}
	if c.IsSet("max-pixels") {
		s.MaxPixels = c.Int64("max-pixels")
	}
	if c.IsSet("strict") {
		s.Strict = c.Bool("strict")
	}
	if c.IsSet("nesterov") {
		s.Nesterov = c.Bool("nesterov")
	}
	for name, dst := range map[string]*bool{"augment": &s.Augment, "freeze-fc": &s.FreezeFC, "allow-partial-weights": &s.AllowPartialWeights} {
		if c.IsSet(name) {
			*dst = c.Bool(name)
		}
	}
	if c.Bool("gpu") && !strings.HasPrefix(s.Device, "cuda") {
		s.Device = "cuda"
	}
	if s.Threads == 0 {
		s.Threads = runtime.NumCPU()
	}
	return s
}

// normFramework accepts the common spellings of the two frameworks.
func normFramework(name string) string {
	switch strings.ToLower(name) {
	case "tf", "tensorflow":
		return compare.TensorFlow
	case "torch", "pytorch", "libtorch":
		return compare.Torch
	}
	return name
}

func trainCommand() *cli.Command {
	d := compare.DefaultSpec()
	flags := append(specFlags(d),
		&cli.StringFlag{Name: "framework", Aliases: []string{"f"}, Value: d.Framework, Usage: "torch|tensorflow (tf)"},
		&cli.StringFlag{Name: "json", Usage: "write the run record (fwbench.run/v1) to this file"},
		&cli.StringFlag{Name: "save-weights", Usage: "write the final weights to this file, format by extension: .pth (torch.save zip for torchvision), .weights.h5 (Keras 3, for keras.applications.VGG16 + head), else safetensors"},
		&cli.BoolFlag{Name: "progress-json", Hidden: true, Usage: "machine-readable progress lines on stderr (used by compare)"},
	)
	return &cli.Command{
		Name:  "train",
		Usage: "train a VGG classifier with one framework and report its figures",
		Flags: flags,
		Action: func(c *cli.Context) error {
			s := specFrom(c, d)
			s.Framework = normFramework(c.String("framework"))
			if err := s.Validate(); err != nil {
				return err
			}
			if p := strings.ToLower(c.String("save-weights")); strings.HasSuffix(p, ".h5") {
				if !strings.HasSuffix(p, ".weights.h5") {
					return fmt.Errorf("%w: --save-weights %s: a Keras export is named NAME.weights.h5 (Keras reads any other .h5 as a Keras 2 file)", compare.ErrInvalid, c.String("save-weights"))
				}
				if !kerasExportable(s) {
					return fmt.Errorf("%w: --save-weights %s: a Keras file holds a plain VGG (no _bn) with the flatten or keras head, not %s with head %s", compare.ErrInvalid, c.String("save-weights"), s.Model, s.Head)
				}
			}
			// Every output, the --resume recipe and the checkpoint folder, before any training.
			if err := compare.PrepareOutputs(s, c.String("json"), c.String("save-weights")); err != nil {
				return err
			}
			progress := newProgress(c.Bool("quiet"), c.Bool("progress-json"))
			defer progress.close()
			rec, err := trainOnce(c.Context, s, progress.update, c.String("save-weights"))
			if rec != nil && err != nil && !errors.Is(err, compare.ErrInterrupted) {
				rec.Partial, rec.Error = true, err.Error() // the record of a failed run says so
			}
			if rec != nil && c.String("json") != "" {
				if werr := writeJSON(c.String("json"), rec); werr != nil {
					return errors.Join(err, werr)
				}
			}
			progress.close()
			// A record left unfinished by a failure has no totals to print (compare.Train).
			if rec != nil && !c.Bool("progress-json") && (err == nil || rec.TotalSeconds > 0) {
				fmt.Fprint(os.Stdout, runTable(rec))
			}
			return err
		},
	}
}

// trainOnce opens the data, builds the framework's trainer and runs compare.Train.
func trainOnce(ctx context.Context, s compare.Spec, onProgress func(compare.Progress), saveWeights string) (*compare.RunRecord, error) {
	var err error
	if s.Normalize, err = compare.ResolveNormalize(s); err != nil {
		return nil, err
	}
	data, skipped, err := openData(ctx, s)
	if err != nil {
		return nil, err
	}
	defer data.Train.Close()
	defer data.Val.Close()
	init, prov, initSum, err := initialWeights(s, data.Classes)
	if err != nil {
		return nil, err
	}
	tr, err := newTrainer(ctx, s, data.Classes, init)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	// The trainer holds its own copy of the initial weights (0.5 GiB for VGG16 at 224 px):
	// give the Go heap's back to the OS before training.
	init = nil
	debug.FreeOSMemory()
	// The loader allocates a batch buffer per step while the live heap is small, which made
	// the GC run about once per step (docs/benchmarks.md); a higher GOGC keeps it off the
	// step path. An explicit GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	rec, err := compare.Train(ctx, tr, s, data, onProgress)
	if rec != nil {
		rec.InitialWeightsSHA256 = initSum
		rec.WeightsProvenance = prov
		rec.Settings = trainerSettings(tr)
		rec.Dataset.SkippedCount = len(skipped)
		rec.Dataset.Skipped = skipped[:min(len(skipped), compare.MaxSkippedListed)]
	}
	if err == nil && s.Checkpoint != "" {
		// The trained weights leave fwbench for either ecosystem: a torch .pth always, a Keras
		// .weights.h5 where Keras' VGG16 can hold the model.
		exports := []string{filepath.Join(s.Checkpoint, "final.pth")}
		if kerasExportable(s) {
			exports = append(exports, filepath.Join(s.Checkpoint, "final.weights.h5"))
		}
		for _, p := range exports {
			if err = saveTrainerWeights(tr, p); err != nil {
				break
			}
		}
	}
	if err == nil && saveWeights != "" {
		if err = saveTrainerWeights(tr, saveWeights); err == nil {
			rec.WeightsSHA256, _ = compare.FileSHA256(saveWeights)
		}
	}
	return rec, err
}

// kerasExportable reports whether Keras' VGG16 plus a Keras head can hold s's model: a plain
// VGG (Keras has no VGG with batch norm) with the flatten or keras head (no adaptive pool).
func kerasExportable(s compare.Spec) bool {
	m, err := vgg.Parse(s.Model)
	return err == nil && !m.BatchNorm && s.Head != string(vgg.HeadTorchvision)
}

// initialWeights composes the run's initial tensors once (weights.Initial): from s.Weights,
// strictly unless s.AllowPartialWeights, with the tensors the mode replaces seeded. Without a
// weights file it returns nil (the driver seeds every tensor the same way). A file that does
// not fit the model is invalid input.
func initialWeights(s compare.Spec, classes int) ([]*weights.Tensor, *weights.Provenance, string, error) {
	if s.Weights == "" {
		return nil, nil, "", nil
	}
	loaded, err := weights.Load(s.Weights)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: %v", compare.ErrInvalid, err)
	}
	params, head, err := s.Params(classes)
	if err != nil {
		return nil, nil, "", err
	}
	init, prov, err := weights.Initial(loaded, params, s.Mode, head, s.Seed, s.AllowPartialWeights)
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: weights %s: %v (--allow-partial-weights seeds them instead)", compare.ErrInvalid, s.Weights, err)
	}
	sum, err := compare.FileSHA256(s.Weights)
	return init, &prov, sum, err
}

// openData opens the dataset (or the built-in synthetic one) and makes the two loaders.
// It returns the files the dataset left out.
func openData(ctx context.Context, s compare.Spec) (compare.Loaders, []dataset.Skipped, error) {
	path := s.Data
	if path == "" {
		var err error
		if path, err = builtinData(s.Seed); err != nil {
			return compare.Loaders{}, nil, err
		}
	}
	ds, err := dataset.Open(ctx, path, dataset.OpenOptions{ValSplit: s.ValSplit, Seed: s.Seed, MaxPixels: s.MaxPixels, Strict: s.Strict})
	if err != nil {
		if ctx.Err() != nil {
			return compare.Loaders{}, nil, err
		}
		return compare.Loaders{}, nil, fmt.Errorf("%w: %v", compare.ErrInvalid, err)
	}
	lc := dataset.LoaderConfig{ImageSize: s.ImageSize, BatchSize: s.BatchSize, Seed: s.Seed, Shuffle: true,
		DropLast: true, Normalize: s.Normalize, Cache: "memory"}
	if s.Augment {
		lc.Augment = dataset.PaperAugment()
	}
	train, err := dataset.NewLoader(ds.Train(), lc)
	if err != nil {
		return compare.Loaders{}, nil, fmt.Errorf("%w: %v", compare.ErrInvalid, err)
	}
	vc := lc
	vc.Shuffle, vc.DropLast, vc.Augment = false, false, dataset.Augment{}
	val, err := dataset.NewLoader(ds.Val(), vc)
	if err != nil {
		train.Close()
		return compare.Loaders{}, nil, fmt.Errorf("%w: %v", compare.ErrInvalid, err)
	}
	return compare.Loaders{Train: train, Val: val, Classes: len(ds.Classes()), DataPath: path,
		TrainLen: ds.Train().Len(), ValLen: ds.Val().Len()}, ds.Skipped(), nil
}

// builtinData makes (once) and returns the built-in synthetic dataset under the cache.
func builtinData(seed int64) (string, error) {
	base := os.Getenv("FWBENCH_CACHE")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache", "fwbench")
	}
	const classes, perClass, size = 3, 60, 64
	dir := filepath.Join(base, fmt.Sprintf("synth-c%d-n%d-s%d-seed%d", classes, perClass, size, seed))
	stamp := filepath.Join(dir, ".complete")
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	tmp := dir + fmt.Sprintf(".tmp%d", os.Getpid())
	os.RemoveAll(tmp)
	if err := dataset.Synthesize(tmp, classes, perClass, size, seed, "png"); err != nil {
		return "", fmt.Errorf("built-in dataset: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(stamp); serr == nil { // another process won the race
			os.RemoveAll(tmp)
			return dir, nil
		}
		return "", fmt.Errorf("built-in dataset: %w", err)
	}
	return dir, nil
}

func writeJSON(path string, v any) error {
	return weights.WriteFileAtomic(path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	})
}

// runTable is the summary printed at the end of `fwbench train`.
func runTable(r *compare.RunRecord) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s on %s, %d threads: %s (head %s) %s, S=%d, batch %d, %s lr %g\n", r.Framework, r.FrameworkVersion,
		r.Device, r.Threads, r.Model, r.Recipe["head"], r.Mode, r.ImageSize, r.BatchSize, r.Optimizer, r.LR)
	fmt.Fprintf(&b, "%6s %11s %10s %9s %8s %9s %9s\n", "epoch", "train loss", "train acc", "val loss", "val acc", "seconds", "images/s")
	for _, e := range r.Epochs {
		fmt.Fprintf(&b, "%6d %11.4f %9.1f%% %9.4f %7.1f%% %9.2f %9.1f\n", e.Epoch, e.TrainLoss, 100*e.TrainAccuracy,
			e.ValLoss, 100*e.ValAccuracy, e.Seconds, e.ImagesPerSecond)
	}
	fmt.Fprintf(&b, "initial loss %.6f · total %.2f s · step p50 %.1f ms p95 %.1f ms · %.1f images/s · data wait %.2f%% · peak RSS %d MiB\n",
		r.InitialLoss, r.TotalSeconds, 1000*r.StepSeconds.P50, 1000*r.StepSeconds.P95, r.ImagesPerSecond,
		100*r.DataWaitFraction, r.PeakRSSBytes>>20)
	if n := r.Dataset.SkippedCount; n > 0 {
		fmt.Fprintf(&b, "skipped %d data file(s), listed with the reason in the run record (--json); --strict makes a skip an error\n", n)
	}
	if r.Error != "" {
		fmt.Fprintf(&b, "FAILED: %s\n", r.Error)
	} else if r.Partial {
		b.WriteString("PARTIAL: interrupted")
		if r.InterruptedAt != nil {
			fmt.Fprintf(&b, " at epoch %d step %d", r.InterruptedAt.Epoch+1, r.InterruptedAt.Step)
		}
		b.WriteString("\n")
	}
	return b.String()
}
