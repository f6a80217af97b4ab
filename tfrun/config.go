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
	Hidden     int     // classifier hidden width; 0 means 4096 (tests use small widths)
	Dropout    float64 // drop probability of the two classifier Dropout layers, in [0, 1); 0 disables
	Mode       string  // "scratch" | "finetune" | "features"
	Optimizer  string  // "sgd" | "adam"

	LR, Momentum, WeightDecay float64 // WeightDecay is torch's L2 term: wd·w added to the gradient
	Nesterov                  bool    // sgd only; needs Momentum > 0

	Beta1, Beta2, Eps float64 // adam (0.9, 0.999, 1e-8 by default)

	// Seed fixes the initial weights (when Weights is nil, and the new
	// head) and the dropout masks: the masks of global step i derive from
	// (Seed, i) only, so a resumed run draws the same masks.
	Seed           int64
	Device         string // "cpu" | "cuda" | "cuda:N"
	Threads        int    // intra-op threads of the session's own pool; 0 means runtime.NumCPU()
	InterOpThreads int    // inter-op threads of the session's own pool; 0 means runtime.NumCPU()

	// Weights are the initial tensors in torchvision's canonical layout
	// (see package weights and the Mode constants). nil means
	// weights.InitVGG(Model, ImageSize, NumClasses, Hidden, Seed). New
	// copies them into the graph's variables; the caller keeps ownership.
	Weights []*weights.Tensor
}

// The modes (Config.Mode), as in torchrun.
const (
	// ModeScratch trains every layer from Config.Weights, or from
	// weights.InitVGG(Seed) when Weights is nil.
	ModeScratch = "scratch"
	// ModeFinetune trains every layer starting from Config.Weights. When
	// the weights' last layer (classifier.6) has another number of
	// classes, that layer alone is replaced by a seeded new one
	// (weights.InitHead(Seed)).
	ModeFinetune = "finetune"
	// ModeFeatures uses the convolutional base as a fixed feature
	// extractor: base weights come from Config.Weights (or InitVGG when
	// nil, useful only for timing), never change, get no gradients, and
	// BatchNorm layers in the base stay in evaluation mode; the classifier
	// head is newly initialised (weights.InitHead(Seed)) and trained.
	ModeFeatures = "features"
)

// The optimizers (Config.Optimizer).
const (
	OptimizerSGD  = "sgd"  // torch.optim.SGD: momentum, weight decay, Nesterov
	OptimizerAdam = "adam" // torch.optim.Adam with L2 weight decay (not AdamW)
)

// DefaultConfig returns the study's setting, as torchrun.DefaultConfig:
// VGG16 at 224×224, three classes, torchvision's classifier (hidden 4096,
// dropout 0.5), trained from scratch with SGD (lr 0.01, momentum 0.9),
// Adam's defaults from torch.optim.Adam, seed 1, on the CPU.
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
	if _, err := vgg.ParamsHidden(c.Model, c.ImageSize, c.NumClasses, c.Hidden); err != nil {
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
