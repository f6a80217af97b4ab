package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/dist"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// specFlags are the training flags shared by `train` and `compare`. They fill the Spec's
// recipe (recipe.Config) and what the Spec adds; nothing here checks a value that
// recipe.Config.Validate or compare.Spec.Validate checks.
func specFlags(d compare.Spec) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "data", Usage: "dataset folder (class sub-folders, train/val split, or MNIST IDX); default: the built-in synthetic set"},
		&cli.StringFlag{Name: "model", Value: d.Model, Usage: strings.Join(model.Names(), "|")},
		&cli.StringFlag{Name: "head", Value: d.Head, Usage: "flatten|torchvision|keras for VGG; torchvision for resnet/mobilenet; default: the model's own. VGG's: flatten (base flattened into torchvision's 3-layer classifier) | torchvision (AdaptiveAvgPool 7×7, fc6/fc7 kept from the weights, new last layer: the study's PyTorch side) | keras (Flatten, Dense(hidden), Dropout, Dense(classes): the study's Keras side)"},
		&cli.BoolFlag{Name: "freeze-fc", Value: d.FreezeLoadedHead, Usage: "features mode: keep the head layers taken from the weights file (torchvision's fc6/fc7) frozen"},
		&cli.BoolFlag{Name: "allow-partial-weights", Value: d.AllowPartialWeights, Usage: "seed the tensors the weights file lacks (or has in another shape) instead of refusing it; the report lists each one"},
		&cli.StringFlag{Name: "mode", Value: d.Mode, Usage: strings.Join(model.Modes(), "|")},
		&cli.StringFlag{Name: "optimizer", Value: d.Optimizer, Usage: recipe.SGD + "|" + recipe.Adam},
		&cli.Float64Flag{Name: "lr", Value: d.LR, Usage: "learning rate"},
		&cli.Float64Flag{Name: "momentum", Value: d.Momentum, Usage: "SGD momentum"},
		&cli.Float64Flag{Name: "weight-decay", Value: d.WeightDecay, Usage: "coupled L2 weight decay (torch's weight_decay)"},
		&cli.BoolFlag{Name: "nesterov", Value: d.Nesterov, Usage: "SGD with Nesterov momentum"},
		&cli.Float64Flag{Name: "beta1", Value: d.Beta1, Usage: "Adam's β1"},
		&cli.Float64Flag{Name: "beta2", Value: d.Beta2, Usage: "Adam's β2"},
		&cli.Float64Flag{Name: "eps", Value: d.Eps, Usage: "Adam's ε"},
		&cli.IntFlag{Name: "epochs", Value: d.Epochs},
		&cli.IntFlag{Name: "batch-size", Value: d.BatchSize},
		&cli.IntFlag{Name: "image-size", Value: d.ImageSize, Usage: "S: images are resized to S×S; a multiple of 32"},
		&cli.IntFlag{Name: "hidden", Value: d.Hidden, Usage: "width of VGG's hidden classifier layers (torchvision VGG16: 4096); models without hidden layers ignore it"},
		&cli.Float64Flag{Name: "dropout", Value: d.Dropout, Usage: "drop probability of the head's dropout layers"},
		&cli.StringFlag{Name: "precision", Value: d.Precision, Usage: strings.Join(recipe.Precisions(), "|") + ": bf16 and fp16 are mixed precision with fp32 master weights (fp16 with dynamic loss scaling); fp32 turns TF32 off in both frameworks, tf32 (CUDA only) on"},
		&cli.BoolFlag{Name: "channels-last", Usage: "torch trains in the channels_last memory format (TF is NHWC already)"},
		&cli.BoolFlag{Name: "cudnn-benchmark", Usage: "autotune convolutions: torch's cuDNN benchmark mode and TF's autotuning (off: neither autotunes)"},
		&cli.BoolFlag{Name: "xla", Usage: "compile TF's training step with XLA (TensorFlow only: libtorch has no C++ counterpart to torch.compile)"},
		&cli.BoolFlag{Name: "deterministic", Usage: "deterministic algorithms in both frameworks, where they offer them"},
		&cli.Int64Flag{Name: "seed", Value: d.Seed},
		&cli.IntFlag{Name: "threads", Value: d.Threads, Usage: "intra-op threads per framework, and inter-op threads unless --inter-op-threads says otherwise (0: all cores)"},
		&cli.IntFlag{Name: "inter-op-threads", Value: d.InterOpThreads, Usage: "inter-op threads per framework (default: as --threads; 0: all cores)"},
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

// specFrom reads the shared flags into a Spec starting from d. Flags the user did not set
// keep d's values.
func specFrom(c *cli.Context, d compare.Spec) compare.Spec {
	s := d
	str := func(name string, dst *string) {
		if c.IsSet(name) {
			*dst = c.String(name)
		}
	}
	str("data", &s.Data)
	str("model", &s.Model)
	str("head", &s.Head)
	str("mode", &s.Mode)
	str("optimizer", &s.Optimizer)
	str("precision", &s.Precision)
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
	f64("beta1", &s.Beta1)
	f64("beta2", &s.Beta2)
	f64("eps", &s.Eps)
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
	if c.IsSet("threads") {
		s.InterOpThreads = s.Threads
	}
	i("inter-op-threads", &s.InterOpThreads)
	i("warmup-steps", &s.WarmupSteps)
	i("steps-per-epoch", &s.StepsPerEpoch)
	if c.IsSet("seed") {
		s.Seed = c.Int64("seed")
	}
	if c.IsSet("max-pixels") {
		s.MaxPixels = c.Int64("max-pixels")
	}
	for name, dst := range map[string]*bool{"augment": &s.Augment, "freeze-fc": &s.FreezeLoadedHead,
		"allow-partial-weights": &s.AllowPartialWeights, "strict": &s.Strict, "nesterov": &s.Nesterov,
		"channels-last": &s.ChannelsLast, "cudnn-benchmark": &s.CUDNNBenchmark, "xla": &s.XLA, "deterministic": &s.Deterministic} {
		if c.IsSet(name) {
			*dst = c.Bool(name)
		}
	}
	if c.Bool("gpu") && !s.GPU() {
		s.Device = "cuda"
	}
	return s
}

// frameworkName is the registered name of a framework spelled name ("tf", "PyTorch"); a name
// no framework answers to stays as it is, for compare.Spec.Validate to refuse.
func frameworkName(name string) string {
	if f, ok := compare.LookupFramework(name); ok {
		return f.Name
	}
	return name
}

// defaultFramework is the framework `fwbench train` uses without --framework: torch where it
// is built in, else the first registered one.
func defaultFramework() string {
	if f, ok := compare.LookupFramework("torch"); ok {
		return f.Name
	}
	if fws := compare.Frameworks(); len(fws) > 0 {
		return fws[0]
	}
	return "torch"
}

func trainCommand() *cli.Command {
	d := compare.DefaultSpec()
	flags := append(specFlags(d),
		&cli.StringFlag{Name: "framework", Aliases: []string{"f"}, Value: defaultFramework(), Usage: strings.Join(compare.Frameworks(), "|") + " (also tf, pytorch)"},
		&cli.StringFlag{Name: "json", Usage: "write the run record (fwbench.run/v1) to this file"},
		&cli.StringFlag{Name: "save-weights", Usage: "write the final weights to this file, format by extension: .pth (torch.save zip for torchvision), .weights.h5 (Keras 3, for keras.applications.VGG16 + head), else safetensors"},
		&cli.BoolFlag{Name: "progress-json", Hidden: true, Usage: "machine-readable progress lines on stderr (used by compare)"},
	)
	flags = append(flags, parallelFlags()...)
	return &cli.Command{
		Name:  "train",
		Usage: "train an image classifier (" + strings.Join(model.Names(), ", ") + ") with one framework and report its figures",
		Flags: flags,
		Action: func(c *cli.Context) error {
			s := specFrom(c, d)
			s.Framework = frameworkName(c.String("framework"))
			if err := s.Validate(); err != nil {
				return err
			}
			net, err := specNet(s)
			if err != nil {
				return err
			}
			save := c.String("save-weights")
			if p := strings.ToLower(save); strings.HasSuffix(p, ".h5") {
				if !strings.HasSuffix(p, ".weights.h5") {
					return fmt.Errorf("%w: --save-weights %s: a Keras export is named NAME.weights.h5 (Keras reads any other .h5 as a Keras 2 file)", compare.ErrInvalid, save)
				}
				if !kerasExportable(net) {
					return fmt.Errorf("%w: --save-weights %s: a Keras file holds a plain VGG (no batch norm) with the flatten or keras head, not %s with head %s", compare.ErrInvalid, save, net.Name, net.Head)
				}
			}
			if p := c.String("json"); p != "" {
				if err := compare.CheckOutput(p); err != nil {
					return err
				}
			}
			nproc, ranked := c.Int("nproc"), parallelSet(c)
			switch {
			case nproc < 1:
				return fmt.Errorf("%w: --nproc must be at least 1, got %d", compare.ErrInvalid, nproc)
			case nproc > 1 && ranked:
				return fmt.Errorf("%w: --nproc starts its own ranks: leave out --rank, --world-size, --master, --workers and $WORLD_SIZE", compare.ErrInvalid)
			case nproc > 1:
				return launch(c, s, nproc)
			}
			ctx, cancel := context.WithCancel(c.Context)
			defer cancel()
			opts := compare.TrainOptions{SaveWeights: save, Export: exportWeights, CheckpointExports: checkpointExports(net)}
			rank := 0
			var g *dist.Group
			if ranked {
				cfg, err := parallelConfig(c)
				if err != nil {
					return err
				}
				if err := checkParallel(s, cfg.WorldSize, 1); err != nil {
					return err
				}
				var stop func()
				if g, stop, err = joinGroup(ctx, cfg, s, cancel); err != nil {
					return err
				}
				s.Device = rankDevice(s.Device, cfg.LocalRank) // after the rendezvous: every rank's recipe said "cuda"
				defer g.Close()
				defer stop()
				opts.Group, rank = distGroup{g}, cfg.Rank
			}
			progress := newProgress(c.Bool("quiet") || rank != 0, c.Bool("progress-json") && rank == 0)
			defer progress.close()
			opts.OnProgress = progress.update
			rec, err := compare.TrainOne(ctx, s, opts)
			if err != nil && g != nil && !errors.Is(err, compare.ErrInterrupted) {
				g.Fail(err.Error()) // the other ranks stop at once, with this reason
			}
			if rank != 0 {
				return err // rank 0 writes the record and prints the table
			}
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
		r.Device, r.Threads, r.Model, r.Head, r.Mode, r.ImageSize, r.BatchSize, r.Optimizer, r.LR)
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
