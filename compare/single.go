package compare

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// TrainOptions tunes TrainOne.
type TrainOptions struct {
	// OnProgress receives the run's progress; nil means none.
	OnProgress func(Progress)
	// SaveWeights, when set, is the file the trained weights are written to (through Export);
	// the record carries its sha256.
	SaveWeights string
	// Export writes trained tensors (canonical layout, net.Params order) to path; nil means
	// WriteWeights (torch .pth by extension, else safetensors). A program that links more
	// formats (Keras' .weights.h5) passes its own.
	Export func(ts []*weights.Tensor, path string) error
	// CheckpointExports are file names ("final.pth") written into Spec.Checkpoint through
	// Export after a run that finished, so that the trained weights leave fwbench for other
	// tools.
	CheckpointExports []string
	// Group, when set, makes the run one rank of a data-parallel run (see train): the
	// framework's NewParallel joins its process group, the training data is this rank's share
	// of each global batch, and only rank 0 writes outputs (SaveWeights, checkpoints, exports).
	Group Group
}

// TrainOne makes one training run of one framework, the whole of `fwbench train`: it
// validates s, checks the GPU and the outputs (PrepareOutputs), resolves the normalisation,
// opens the data (the built-in synthetic set when s.Data is ""), composes the initial weights
// once (weights.Initial, for the model built with the data's class count), builds the
// registered framework's Trainer, trains (Train), and exports the trained weights. The record
// is returned whenever training started, with the error of a failed or interrupted run
// (ErrInterrupted).
func TrainOne(ctx context.Context, s Spec, opts TrainOptions) (rec *RunRecord, err error) {
	clk := newLapClock(ProcessAge())
	if err := s.Validate(); err != nil {
		return nil, err
	}
	fw, err := lookup(s.Framework)
	if err != nil {
		return nil, err
	}
	s.Framework = fw.Name
	if err := CheckGPU(fw.Name, s.Device); err != nil {
		return nil, err
	}
	var shard dataset.Shard
	if g := opts.Group; g != nil {
		if fw.NewParallel == nil {
			return nil, fmt.Errorf("compare: %w: %s has no data-parallel mode", ErrInvalid, fw.Name)
		}
		if err := CheckParallel(s, g.WorldSize()); err != nil {
			return nil, err
		}
		shard = dataset.Shard{Rank: g.Rank(), Count: g.WorldSize()}
		if g.Rank() != 0 { // only rank 0 writes
			s.Checkpoint, opts.SaveWeights, opts.CheckpointExports = "", "", nil
		}
	}
	if err := PrepareOutputs(s, opts.SaveWeights); err != nil {
		return nil, err
	}
	if s.Normalize, err = ResolveNormalize(s); err != nil {
		return nil, err
	}
	data, skipped, err := openData(ctx, s, shard)
	if err != nil {
		return nil, err
	}
	defer data.Train.Close()
	defer data.Val.Close()
	net, err := s.netFor(data.Classes)
	if err != nil {
		return nil, err
	}
	// Decode and resize every image once, before any framework thread exists, so that a
	// training step's loader work is augmentation and normalisation only (the loader's CPU
	// per batch fell 7-70× with it: docs/benchmarks.md). The batches are the same bytes.
	var warm [2]dataset.WarmStats
	for i, l := range []*dataset.Loader{data.Train, data.Val} {
		if warm[i], err = l.Warm(ctx); err != nil {
			return nil, fmt.Errorf("compare: reading the data: %w", err)
		}
	}
	clk.lap(partSetup)
	if fw.Version != nil {
		fw.Version() // the first call into the native library
	}
	clk.lap(partLibraryLoad)
	s.Classes = net.Classes
	init, prov, err := initialWeights(s, net)
	if err != nil {
		return nil, err
	}
	var initSum string
	if s.Weights != "" {
		if initSum, err = FileSHA256(s.Weights); err != nil {
			return nil, fmt.Errorf("compare: %w", err)
		}
	}
	clk.lap(partWeightLoad)
	var tr Trainer
	if opts.Group != nil {
		tr, err = fw.NewParallel(ctx, s.Config, init, opts.Group.Parallel())
	} else {
		tr, err = fw.New(ctx, s.Config, init)
	}
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	if opts.Group != nil {
		defer func() {
			if ab, ok := tr.(Abandoner); ok && err != nil && !errors.Is(err, ErrInterrupted) {
				ab.Abandon() // before Close (deferred earlier, so run later): the others may be gone
			}
		}()
	}
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
	clk.lap(partBuild)
	rec, err = train(ctx, tr, s, data, opts.OnProgress, clk, opts.Group)
	if rec != nil {
		defer func() { rec.TimeBreakdownSeconds = clk.done(partReport) }()
		rec.InitialWeightsSHA256 = initSum
		rec.WeightsProvenance = &prov
		rec.Dataset.Cached = warm[0].Cached + warm[1].Cached
		rec.Dataset.CacheSeconds = warm[0].WallSeconds + warm[1].WallSeconds
		rec.Dataset.SkippedCount = len(skipped)
		rec.Dataset.Skipped = skipped[:min(len(skipped), MaxSkippedListed)]
	}
	export := opts.Export
	if export == nil {
		export = WriteWeights
	}
	if err == nil && s.Checkpoint != "" {
		for _, name := range opts.CheckpointExports {
			if err = exportWeights(tr, export, filepath.Join(s.Checkpoint, name)); err != nil {
				break
			}
		}
	}
	if err == nil && opts.SaveWeights != "" {
		if err = exportWeights(tr, export, opts.SaveWeights); err == nil {
			rec.WeightsSHA256, _ = FileSHA256(opts.SaveWeights)
		}
	}
	return rec, err
}

// WriteWeights writes ts in the format path's extension names: `.pth`/`.pt` a torch.save zip
// that torch.load(weights_only=True) reads into torchvision's model, any other name
// safetensors.
func WriteWeights(ts []*weights.Tensor, path string) error {
	switch lower := strings.ToLower(path); {
	case strings.HasSuffix(lower, ".pth") || strings.HasSuffix(lower, ".pt"):
		return weights.WritePth(path, ts)
	default:
		return weights.WriteSafetensors(path, ts, map[string]string{"fwbench": "trained weights"})
	}
}

// exportWeights reads tr's weights back (WeightsReader) and writes them with export.
func exportWeights(tr Trainer, export func([]*weights.Tensor, string) error, path string) error {
	wr, ok := tr.(WeightsReader)
	if !ok {
		return fmt.Errorf("compare: %s cannot read its weights back", tr.Info().Framework)
	}
	ts, err := wr.Weights()
	if err != nil {
		return fmt.Errorf("compare: reading the trained weights: %w", err)
	}
	if err := export(ts, path); err != nil {
		return fmt.Errorf("compare: writing %s: %w", path, err)
	}
	return nil
}

// netFor builds the recipe's model for the data's class count. A recipe that names a class
// count of its own must agree with the data.
func (s Spec) netFor(classes int) (*model.Net, error) {
	if s.Classes != 0 && s.Classes != classes {
		return nil, fmt.Errorf("compare: %w: the recipe has %d classes, the data %d", ErrInvalid, s.Classes, classes)
	}
	return s.net(classes)
}

// initialWeights composes a run's initial tensors, for TrainOne and for the shared file of a
// comparison alike: weights.Initial from s.Weights (strictly, unless s.AllowPartialWeights;
// the tensors s.Mode replaces seeded) or, without a file, every tensor seeded by s.Seed.
func initialWeights(s Spec, net *model.Net) ([]*weights.Tensor, weights.Provenance, error) {
	var loaded []*weights.Tensor
	if s.Weights != "" {
		var err error
		if loaded, err = weights.Load(s.Weights); err != nil {
			return nil, weights.Provenance{}, fmt.Errorf("compare: %w: %v", ErrInvalid, err)
		}
	}
	init, prov, err := weights.Initial(loaded, net, s.Mode, s.Seed, s.AllowPartialWeights)
	if err != nil {
		if s.Weights == "" {
			return nil, prov, fmt.Errorf("compare: initial weights: %w", err)
		}
		return nil, prov, fmt.Errorf("compare: %w: weights %s: %v (--allow-partial-weights seeds them instead)", ErrInvalid, s.Weights, err)
	}
	return init, prov, nil
}

// openData opens the dataset (or the built-in synthetic one) and makes the two loaders.
// It returns the files the dataset left out.
//
// shard is this rank's share of each training batch in a data-parallel run (the zero Shard:
// the whole batch); the validation loader is never sharded (rank 0 validates on all of it).
func openData(ctx context.Context, s Spec, shard dataset.Shard) (Loaders, []dataset.Skipped, error) {
	path := s.Data
	if path == "" {
		var err error
		if path, err = builtinData(s.Seed); err != nil {
			return Loaders{}, nil, err
		}
	}
	ds, err := dataset.Open(ctx, path, dataset.OpenOptions{ValSplit: s.ValSplit, Seed: s.Seed, MaxPixels: s.MaxPixels, Strict: s.Strict})
	if err != nil {
		if ctx.Err() != nil {
			return Loaders{}, nil, err
		}
		return Loaders{}, nil, fmt.Errorf("compare: %w: %v", ErrInvalid, err)
	}
	// The decoded images are kept in memory (at most dataset.DefaultCacheBytes for the
	// training set, a quarter of it for the validation set; images past it are decoded again
	// each time they are used).
	lc := dataset.LoaderConfig{ImageSize: s.ImageSize, BatchSize: s.BatchSize, Seed: s.Seed, Shuffle: true,
		DropLast: true, Normalize: s.Normalize, Cache: dataset.CacheMemory, CacheBytes: dataset.DefaultCacheBytes()}
	if s.Augment {
		lc.Augment = dataset.PaperAugment()
	}
	tc := lc
	tc.Shard = shard
	train, err := dataset.NewLoader(ds.Train(), tc)
	if err != nil {
		return Loaders{}, nil, fmt.Errorf("compare: %w: %v", ErrInvalid, err)
	}
	vc := lc
	vc.Shuffle, vc.DropLast, vc.Augment, vc.CacheBytes = false, false, dataset.Augment{}, max(1, lc.CacheBytes/4)
	val, err := dataset.NewLoader(ds.Val(), vc)
	if err != nil {
		train.Close()
		return Loaders{}, nil, fmt.Errorf("compare: %w: %v", ErrInvalid, err)
	}
	return Loaders{Train: train, Val: val, Classes: len(ds.Classes()), DataPath: path,
		TrainLen: ds.Train().Len(), ValLen: ds.Val().Len()}, ds.Skipped(), nil
}

// Built-in synthetic dataset: three classes of 60 images of 64 px (dataset.Synthesize).
const (
	builtinClasses, builtinPerClass, builtinSize = 3, 60, 64
)

// builtinData makes (once) and returns the built-in synthetic dataset under the cache
// folder: $FWBENCH_CACHE, else ~/.cache/fwbench.
func builtinData(seed int64) (string, error) {
	base := os.Getenv("FWBENCH_CACHE")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache", "fwbench")
	}
	dir := filepath.Join(base, fmt.Sprintf("synth-c%d-n%d-s%d-seed%d", builtinClasses, builtinPerClass, builtinSize, seed))
	stamp := filepath.Join(dir, ".complete")
	if _, err := os.Stat(stamp); err == nil {
		return dir, nil
	}
	tmp := dir + fmt.Sprintf(".tmp%d", os.Getpid())
	os.RemoveAll(tmp)
	if err := dataset.Synthesize(tmp, builtinClasses, builtinPerClass, builtinSize, seed, "png"); err != nil {
		return "", fmt.Errorf("compare: built-in dataset: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return "", fmt.Errorf("compare: built-in dataset: %w", err)
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(stamp); serr == nil { // another process won the race
			os.RemoveAll(tmp)
			return dir, nil
		}
		return "", fmt.Errorf("compare: built-in dataset: %w", err)
	}
	return dir, nil
}
