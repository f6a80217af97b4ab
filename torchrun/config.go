package torchrun

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// Training modes (Config.Mode), equal to package vgg's. Where the initial
// tensors come from is decided by weights.Initial (vgg.Reinitialised), what
// trains by vgg.Trainable.
const (
	// ModeScratch trains every layer. With Config.Weights every tensor comes
	// from them (a file for another head or class count is an error); without,
	// every tensor is seeded.
	ModeScratch = vgg.ModeScratch
	// ModeFinetune trains every layer starting from Config.Weights, except the
	// output layer (classifier.6; with HeadKeras the whole head), which always
	// starts from the seed, as the study replaced torchvision's VGG16 head.
	ModeFinetune = vgg.ModeFinetune
	// ModeFeatures uses the convolutional base as a fixed feature extractor:
	// base weights come from Config.Weights (seeded when nil, useful only
	// for timing), never change, get no gradients, and BatchNorm layers in the
	// base stay in eval mode; the head starts as in ModeFinetune and trains,
	// except the layers from the file when Config.FreezeLoadedHead is set.
	ModeFeatures = vgg.ModeFeatures
)

// Optimizers (Config.Optimizer).
const (
	OptimizerSGD  = "sgd"  // torch.optim.SGD: momentum, weight decay, Nesterov
	OptimizerAdam = "adam" // torch.optim.Adam with L2 weight decay (not AdamW)
)

// Config describes one training run. Start from DefaultConfig; zero Hidden,
// Threads and InterOpThreads mean their defaults.
type Config struct {
	Model      vgg.Config // e.g. vgg16, vgg16_bn
	ImageSize  int        // S: a multiple of 32, at least 32
	NumClasses int
	Hidden     int     // classifier hidden width; 0 means vgg.DefaultHidden (4096)
	Dropout    float64 // drop probability of every dropout of the head, in [0, 1)
	Mode       string  // ModeScratch, ModeFinetune or ModeFeatures
	// Head is the classifier on the base (see vgg.Head); "" means
	// vgg.HeadFlatten.
	Head vgg.Head
	// FreezeLoadedHead keeps, in ModeFeatures, the head layers that the mode
	// takes from Config.Weights frozen (torchvision's fc6 and fc7 with
	// HeadTorchvision or HeadFlatten; with HeadKeras every head layer is new,
	// so nothing more freezes). It is vgg.Trainable's rule, so it freezes
	// those layers also when they were seeded because Weights is nil. Other
	// modes ignore it.
	FreezeLoadedHead bool
	Optimizer        string // OptimizerSGD or OptimizerAdam

	LR, Momentum, WeightDecay float64
	Nesterov                  bool    // SGD only; needs Momentum > 0
	Beta1, Beta2, Eps         float64 // Adam

	// Seed fixes the seeded initial tensors (all of them when Weights is nil,
	// the layers the mode replaces otherwise; weights.InitParams) and the
	// dropout masks: the masks of global step i are vgg.DropoutMask(Seed, i,
	// layer), so a resumed run draws the same masks, and tfrun draws the same.
	Seed int64

	Device         string // "cpu", "cuda" or "cuda:N"
	Threads        int    // libtorch intra-op threads; 0 means runtime.NumCPU()
	InterOpThreads int    // libtorch inter-op threads (settable once per process); 0 means runtime.NumCPU()

	// Weights are the initial tensors in torchvision's canonical layout (see
	// package weights), composed with the seeded ones by weights.Initial: nil
	// means every tensor seeded; otherwise the model takes every tensor it
	// needs from them except those the mode re-initialises, and a missing,
	// mis-shaped or unexpected tensor is an error wrapping ErrWeights. The
	// Trainer copies them; the caller keeps ownership.
	Weights []*weights.Tensor
}

// DefaultConfig returns the study's setting: VGG16 at 224×224, three classes,
// torchvision's classifier (hidden 4096, dropout 0.5), trained from scratch with
// SGD (lr 0.01, momentum 0.9, as torchvision's reference recipe), Adam's
// defaults from torch.optim.Adam, seed 1, on the CPU.
func DefaultConfig() Config {
	return Config{
		Model:      vgg.Config{Name: "vgg16"},
		ImageSize:  224,
		NumClasses: 3,
		Dropout:    vgg.Dropout,
		Mode:       ModeScratch,
		Optimizer:  OptimizerSGD,
		LR:         0.01,
		Momentum:   0.9,
		Beta1:      0.9,
		Beta2:      0.999,
		Eps:        1e-8,
		Seed:       1,
		Device:     "cpu",
	}
}

// Validate checks c without touching libtorch. It does not check Weights
// against the model (New does) nor whether a CUDA device exists.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if err := c.Model.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ImageSize < 32 || c.ImageSize%32 != 0 {
		bad("image size %d: want a multiple of 32, at least 32", c.ImageSize)
	}
	if c.NumClasses < 1 {
		bad("number of classes %d: want at least 1", c.NumClasses)
	}
	if c.Hidden < 0 {
		bad("hidden width %d: want 0 (4096) or more", c.Hidden)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		bad("dropout %v: want a probability in [0, 1)", c.Dropout)
	}
	switch c.Mode {
	case ModeScratch, ModeFinetune, ModeFeatures:
	default:
		bad("mode %q: want %q, %q or %q", c.Mode, ModeScratch, ModeFinetune, ModeFeatures)
	}
	if _, err := vgg.ParseHead(string(c.Head)); err != nil {
		errs = append(errs, err)
	}
	if !(c.LR > 0) || math.IsInf(c.LR, 0) {
		bad("learning rate %v: want a positive number", c.LR)
	}
	if !(c.WeightDecay >= 0) {
		bad("weight decay %v: want 0 or more", c.WeightDecay)
	}
	switch c.Optimizer {
	case OptimizerSGD:
		if !(c.Momentum >= 0) {
			bad("momentum %v: want 0 or more", c.Momentum)
		}
		if c.Nesterov && !(c.Momentum > 0) {
			bad("nesterov needs a positive momentum, got %v", c.Momentum)
		}
	case OptimizerAdam:
		if !(c.Beta1 >= 0 && c.Beta1 < 1) || !(c.Beta2 >= 0 && c.Beta2 < 1) {
			bad("adam betas (%v, %v): want each in [0, 1)", c.Beta1, c.Beta2)
		}
		if !(c.Eps > 0) {
			bad("adam eps %v: want a positive number", c.Eps)
		}
	default:
		bad("optimizer %q: want %q or %q", c.Optimizer, OptimizerSGD, OptimizerAdam)
	}
	if _, err := parseDevice(c.Device); err != nil {
		errs = append(errs, err)
	}
	if c.Threads < 0 || c.InterOpThreads < 0 {
		bad("threads %d, inter-op threads %d: want 0 (all cores) or more", c.Threads, c.InterOpThreads)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("torchrun: config: %w", errors.Join(errs...))
}

// parseDevice normalises "cpu", "cuda" and "cuda:N" to "cpu" or "cuda:N"
// (N = 0 for "cuda").
func parseDevice(s string) (string, error) {
	switch {
	case s == "cpu":
		return s, nil
	case s == "cuda":
		return "cuda:0", nil
	case strings.HasPrefix(s, "cuda:"):
		n, err := strconv.Atoi(s[len("cuda:"):])
		if err == nil && n >= 0 && n < 1<<15 {
			return "cuda:" + strconv.Itoa(n), nil
		}
	}
	return "", fmt.Errorf("device %q: want cpu, cuda or cuda:N", s)
}
