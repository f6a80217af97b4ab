package tfrun

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// Config describes one model and how to train it. The zero value is not
// usable; start from DefaultConfig.
type Config struct {
	Model      vgg.Config // default vgg16
	ImageSize  int        // S: images are S×S×3, S a multiple of 32, >= 32
	NumClasses int
	// Head is the classifier on the convolutional base (see vgg.Head); ""
	// means vgg.HeadFlatten. With vgg.HeadTorchvision the base's output is
	// first average-pooled to 7×7 (torch's AdaptiveAvgPool2d bins).
	Head    vgg.Head
	Hidden  int     // classifier hidden width; 0 means 4096 (tests use small widths)
	Dropout float64 // drop probability of each Dropout layer of the head, in [0, 1); 0 disables
	Mode    string  // ModeScratch | ModeFinetune | ModeFeatures (vgg's mode constants)
	// FreezeLoadedHead keeps, in features mode, the head layers that come
	// from the weights file (torchvision's fc6 and fc7 with
	// vgg.HeadTorchvision) frozen: only the re-initialised layers train
	// (vgg.Trainable). Without it every head layer trains. Other modes
	// ignore it.
	FreezeLoadedHead bool
	Optimizer        string // "sgd" | "adam"

	LR, Momentum, WeightDecay float64 // WeightDecay is torch's L2 term: wd·w added to the gradient
	Nesterov                  bool    // sgd only; needs Momentum > 0

	Beta1, Beta2, Eps float64 // adam (0.9, 0.999, 1e-8 by default)

	// Seed fixes the seeded initial tensors (all of them when Weights is
	// nil, otherwise those the mode re-initialises) and the dropout masks:
	// the mask of dropout layer l at global step i is
	// vgg.DropoutMask(Seed, i, l), drawn in Go, so a resumed run draws the
	// same masks and torchrun drops the same units.
	Seed           int64
	Device         string // "cpu" | "cuda" | "cuda:N"
	Threads        int    // intra-op threads of the session's own pool; 0 means runtime.NumCPU()
	InterOpThreads int    // inter-op threads of the session's own pool; 0 means runtime.NumCPU()

	// Weights are the initial tensors in torchvision's canonical layout,
	// composed by weights.Initial(Weights, params, Mode, Head, Seed, false)
	// (see the Mode constants): nil means every tensor seeded
	// (weights.InitParams with Seed); otherwise every tensor comes from
	// Weights except those the mode re-initialises, and a missing,
	// mis-shaped or unexpected tensor makes New fail with ErrWeights. New
	// copies them into the graph's variables; the caller keeps ownership.
	Weights []*weights.Tensor
}

// The modes (Config.Mode): vgg's, as in torchrun. Where a run's initial
// tensors come from is weights.Initial's rule, and what trains is
// vgg.Trainable's.
const (
	// ModeScratch trains every layer. Every tensor comes from
	// Config.Weights when given (the head included), else from the seed.
	ModeScratch = vgg.ModeScratch
	// ModeFinetune trains every layer. The base and the head's hidden
	// layers come from Config.Weights; the output layer (and with
	// vgg.HeadKeras the whole head) always starts from the seed
	// (vgg.Reinitialised), whatever its shape in the file.
	ModeFinetune = vgg.ModeFinetune
	// ModeFeatures starts as ModeFinetune but uses the convolutional base
	// as a fixed feature extractor: the base never changes, gets no
	// gradients, and its BatchNorm layers stay in evaluation mode. The head
	// trains, except the layers from the file when
	// Config.FreezeLoadedHead is set. With nil Weights the base is seeded
	// (useful only for timing).
	ModeFeatures = vgg.ModeFeatures
)

// ErrWeights is wrapped by New's error when Config.Weights does not fit the
// model (tensors missing, of another shape, or unexpected; the message
// names them).
var ErrWeights = errors.New("initial weights do not fit the model")

// The optimizers (Config.Optimizer).
const (
	OptimizerSGD  = "sgd"  // torch.optim.SGD: momentum, weight decay, Nesterov
	OptimizerAdam = "adam" // torch.optim.Adam with L2 weight decay (not AdamW)
)

// DefaultConfig returns the study's setting, as torchrun.DefaultConfig:
// VGG16 at 224×224, three classes, vgg.HeadFlatten (hidden 4096,
// dropout 0.5), trained from scratch with SGD (lr 0.01, momentum 0.9),
// Adam's defaults from torch.optim.Adam, seed 1, on the CPU.
func DefaultConfig() Config {
	return Config{
		Model:      vgg.Config{Name: "vgg16"},
		ImageSize:  224,
		NumClasses: 3,
		Head:       vgg.HeadFlatten,
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

// Validate checks c in pure Go, before any native call. It does not check
// Weights against the model (New does) nor whether a GPU exists.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("tfrun: config: %w", err)
	}
	return nil
}

func (c Config) validate() error {
	if err := c.Model.Validate(); err != nil {
		return err
	}
	if _, err := vgg.ParseHead(string(c.Head)); err != nil {
		return err
	}
	if _, err := vgg.ParamsFor(c.Model, c.head(), c.ImageSize, c.NumClasses, c.Hidden); err != nil {
		return err
	}
	finite := func(name string, v float64) error {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%s %v: want a finite number", name, v)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"dropout", c.Dropout}, {"lr", c.LR}, {"momentum", c.Momentum}, {"weight decay", c.WeightDecay}, {"beta1", c.Beta1}, {"beta2", c.Beta2}, {"eps", c.Eps}} {
		if err := finite(f.name, f.v); err != nil {
			return err
		}
	}
	if c.Dropout < 0 || c.Dropout >= 1 {
		return fmt.Errorf("dropout %v: want 0 <= p < 1", c.Dropout)
	}
	switch c.Mode {
	case ModeScratch, ModeFinetune, ModeFeatures:
	default:
		return fmt.Errorf("mode %q: want scratch, finetune or features", c.Mode)
	}
	if c.LR <= 0 {
		return fmt.Errorf("lr %v: want > 0", c.LR)
	}
	if c.WeightDecay < 0 {
		return fmt.Errorf("weight decay %v: want >= 0", c.WeightDecay)
	}
	switch c.Optimizer {
	case OptimizerSGD:
		if c.Momentum < 0 || c.Momentum >= 1 {
			return fmt.Errorf("momentum %v: want 0 <= m < 1", c.Momentum)
		}
		if c.Nesterov && c.Momentum == 0 {
			return errors.New("nesterov needs momentum > 0")
		}
	case OptimizerAdam:
		if c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 {
			return fmt.Errorf("adam betas (%v, %v): want each in [0, 1)", c.Beta1, c.Beta2)
		}
		if c.Eps <= 0 {
			return fmt.Errorf("adam eps %v: want > 0", c.Eps)
		}
		if c.Nesterov {
			return errors.New("nesterov applies to sgd only")
		}
	default:
		return fmt.Errorf("optimizer %q: want sgd or adam", c.Optimizer)
	}
	if _, err := parseDevice(c.Device); err != nil {
		return err
	}
	if c.Threads < 0 || c.InterOpThreads < 0 {
		return fmt.Errorf("threads %d, inter-op threads %d: want >= 0", c.Threads, c.InterOpThreads)
	}
	return nil
}

// head returns c.Head normalised by vgg.ParseHead ("" is vgg.HeadFlatten);
// an unknown head (which Validate rejects) is returned as is.
func (c Config) head() vgg.Head {
	h, err := vgg.ParseHead(string(c.Head))
	if err != nil {
		return c.Head
	}
	return h
}

// hidden resolves Hidden 0 to vgg.DefaultHidden.
func (c Config) hidden() int {
	if c.Hidden == 0 {
		return vgg.DefaultHidden
	}
	return c.Hidden
}

// device is a parsed Config.Device.
type device struct {
	gpu   bool
	index int
}

// parseDevice reads "cpu", "cuda" (cuda:0) or "cuda:N" (case and surrounding
// space ignored; "" means cpu).
func parseDevice(s string) (device, error) {
	d := strings.ToLower(strings.TrimSpace(s))
	switch {
	case d == "" || d == "cpu":
		return device{}, nil
	case d == "cuda" || d == "gpu":
		return device{gpu: true}, nil
	}
	rest, ok := strings.CutPrefix(d, "cuda:")
	if !ok {
		rest, ok = strings.CutPrefix(d, "gpu:")
	}
	if ok {
		n, err := strconv.Atoi(rest)
		if err == nil && n >= 0 && n < 1<<16 {
			return device{gpu: true, index: n}, nil
		}
	}
	return device{}, fmt.Errorf("device %q: want cpu, cuda or cuda:N", s)
}

// String is the flag form: "cpu" or "cuda:N".
func (d device) String() string {
	if !d.gpu {
		return "cpu"
	}
	return "cuda:" + strconv.Itoa(d.index)
}

// tfName is the TensorFlow device name: "/device:CPU:0" or "/device:GPU:N".
func (d device) tfName() string {
	if !d.gpu {
		return "/device:CPU:0"
	}
	return "/device:GPU:" + strconv.Itoa(d.index)
}

// threads resolves 0 to runtime.NumCPU().
func threads(n int) int {
	if n <= 0 {
		return runtime.NumCPU()
	}
	return n
}
