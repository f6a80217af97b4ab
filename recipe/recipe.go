// Package recipe owns the training recipe, stated once: the model (name, head,
// hidden width, image size, classes), the training mode, the optimizer and
// its hyper-parameters, dropout, precision, device, threads and seed. Both
// drivers (torchrun.New, tfrun.New) take a Config; compare.Spec embeds it and
// the CLI fills it; Validate is the only check of it anywhere, so every entry
// point refuses the same bad recipe with the same message.
//
// Beside it live what every part of fwbench must agree on about a recipe: the
// device grammar (ParseDevice), the optimizer's description (OptimizerString,
// written into checkpoints), the checkpoint metadata keys, the flat form a run
// record carries as fairness evidence (Map), and the Info a driver reports.
//
// The package is pure Go and needs no native library.
package recipe

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/model"
)

// The optimizers.
const (
	SGD  = "sgd"  // torch.optim.SGD: momentum (dampening 0), coupled weight decay, Nesterov
	Adam = "adam" // torch.optim.Adam with coupled L2 weight decay (not AdamW)
)

// The precisions (Config.Precision). BF16 and FP16 are mixed precision with
// float32 master weights: the framework computes convolutions and matrix
// products in the 16-bit type (torch autocast; the same casts written into
// tfrun's graph) and keeps every variable, optimizer slot and the loss in
// float32. FP16 adds dynamic loss scaling (torch.amp.GradScaler's
// rule). FP32 turns TF32 off in both frameworks; TF32 turns it on in both.
const (
	FP32 = "fp32"
	TF32 = "tf32" // float32 storage, TF32 tensor-core products: CUDA only
	BF16 = "bf16"
	FP16 = "fp16"
)

// Precisions lists the values Config.Precision accepts.
func Precisions() []string { return []string{FP32, TF32, BF16, FP16} }

// The keys of the settings that decide speed: every driver reports each of
// them in Info.Settings on every device, so that run records line up. Values
// are "true", "false", NotApplicable where the framework has no such switch,
// a precision (SettingPrecision) or a layout (SettingMemoryFormat: torch's
// "contiguous" or "channels_last", TF's "NHWC" or "NCHW").
const (
	SettingPrecision      = "precision"
	SettingTF32           = "tf32"
	SettingMemoryFormat   = "memory_format"
	SettingCUDNNBenchmark = "cudnn_benchmark" // torch's cuDNN autotuner; TF's convolution autotuning
	SettingXLA            = "xla"
	SettingDeterministic  = "deterministic"
)

// Dynamic loss scaling for FP16, torch.amp.GradScaler's defaults, which both
// drivers follow: the loss is multiplied by the scale before the backward
// pass and the gradients divided by it; a step whose gradients hold an inf or
// a NaN is skipped (no parameter nor optimizer slot changes) and the scale
// multiplied by LossScaleBackoff; after LossScaleGrowthInterval finite steps
// in a row it is multiplied by LossScaleGrowth.
const (
	LossScaleInit           = 65536.0 // 2^16
	LossScaleGrowth         = 2.0
	LossScaleBackoff        = 0.5
	LossScaleGrowthInterval = 2000
)

// NotApplicable is a setting's value where the framework has no such switch.
const NotApplicable = "n/a"

// SettingKeys lists the settings every driver reports, in the report's order.
func SettingKeys() []string {
	return []string{SettingPrecision, SettingTF32, SettingMemoryFormat, SettingCUDNNBenchmark, SettingXLA, SettingDeterministic}
}

// ErrInvalid is wrapped by every error of Validate: the recipe is the user's
// mistake, found before any native call (the CLI exits 2).
var ErrInvalid = errors.New("invalid configuration")

// ThreadsPerCPU bounds the thread counts: at most ThreadsPerCPU ×
// runtime.NumCPU() (more only oversubscribes the cores; 100000 started 2300
// threads that made no progress).
const ThreadsPerCPU = 4

// MaxThreads is the largest thread count Validate accepts on this machine.
func MaxThreads() int { return ThreadsPerCPU * runtime.NumCPU() }

// Config is one training recipe. Start from Default.
type Config struct {
	Model string // a model.Names entry: "vgg16_bn", "resnet50", "mobilenet_v2", ...
	// Head is one of model.Heads(Model); "" means the model's default
	// (model.HeadFlatten for VGG, model.HeadTorchvision otherwise).
	Head string
	// Hidden is the width of VGG's hidden classifier layers; 0 means
	// model.DefaultHidden. Models without hidden layers ignore it.
	Hidden    int
	ImageSize int // S: images are S×S×3, S a multiple of 32 of at least 32
	// Classes is the number of outputs; 0 while the data is not open yet
	// (Validate then checks the rest, Net refuses it).
	Classes int
	Mode    string // model.ModeScratch, model.ModeFinetune or model.ModeFeatures
	// FreezeLoadedHead keeps, in features mode, the head layers that come from
	// the weights file (torchvision's fc6 and fc7) frozen; other modes ignore it.
	FreezeLoadedHead bool

	Optimizer                 string  // SGD or Adam
	LR, Momentum, WeightDecay float64 // WeightDecay is torch's coupled L2 term: wd·w added to the gradient
	Nesterov                  bool    // SGD only; needs Momentum > 0
	Beta1, Beta2, Eps         float64 // Adam

	// Dropout is the drop probability of every Dropout layer of the head, in
	// [0, 1). The masks are drawn in Go (model.DropoutMask(Seed, step,
	// layer)), so both frameworks drop the same units.
	Dropout   float64
	Precision string // one of Precisions(); "" means FP32

	// The settings that decide speed (see SettingKeys). ChannelsLast trains
	// torch in the channels_last memory format (TF is NHWC already).
	// CUDNNBenchmark turns on torch's cuDNN autotuner and TF's convolution
	// autotuning; off, neither autotunes. XLA compiles TF's step with XLA (a
	// one-framework option: libtorch has no C++ counterpart, torch.compile is
	// Python-only). Deterministic asks both frameworks for deterministic
	// algorithms; an op without one is an error in both (torch's
	// use_deterministic_algorithms without warn_only, TF's op determinism).
	ChannelsLast, CUDNNBenchmark, XLA, Deterministic bool

	Device         string // "cpu", "cuda" or "cuda:N" ("" means cpu)
	Threads        int    // intra-op threads; 0 means runtime.NumCPU()
	InterOpThreads int    // inter-op threads; 0 means runtime.NumCPU()
	// Seed fixes the seeded initial tensors and the dropout masks.
	Seed int64
}

// Default returns the study's model and a plain recipe: VGG16 at 224 px with
// three classes and its default head (flatten; hidden 4096, dropout 0.5),
// trained from scratch with SGD (lr 0.01, momentum 0.9, torchvision's
// reference recipe), Adam's defaults from torch.optim.Adam, fp32, seed 1, on
// the CPU with every core.
func Default() Config {
	return Config{
		Model: "vgg16", ImageSize: 224, Classes: 3, Mode: model.ModeScratch,
		Optimizer: SGD, LR: 0.01, Momentum: 0.9, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8,
		Dropout: 0.5, Precision: FP32, Device: "cpu", Seed: 1,
	}
}

// Validate checks c in pure Go, before any native call: every problem is
// named, joined into one error that wraps ErrInvalid. It does not check
// whether a GPU exists nor the initial weights (the driver does, against Net).
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	classes := c.Classes
	if classes == 0 {
		classes = 1 // not known yet: check the rest of the model
	}
	if _, err := model.Resolve(c.modelSpec(classes)); err != nil {
		errs = append(errs, errors.New(strings.TrimPrefix(err.Error(), "model: ")))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"lr", c.LR}, {"momentum", c.Momentum}, {"weight decay", c.WeightDecay}, {"beta1", c.Beta1},
		{"beta2", c.Beta2}, {"eps", c.Eps}, {"dropout", c.Dropout}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			bad("%s %v: want a finite number", f.name, f.v)
		}
	}
	if !slices.Contains(model.Modes(), c.Mode) {
		bad("mode %q: want %s", c.Mode, strings.Join(model.Modes(), ", "))
	}
	if !(c.LR > 0) {
		bad("learning rate %v: want a positive number", c.LR)
	}
	if c.WeightDecay < 0 {
		bad("weight decay %v: want 0 or more", c.WeightDecay)
	}
	switch c.Optimizer {
	case SGD:
		if c.Momentum < 0 || c.Momentum >= 1 {
			bad("momentum %v: want 0 <= momentum < 1", c.Momentum)
		}
		if c.Nesterov && !(c.Momentum > 0) {
			bad("nesterov needs a positive momentum, got %v", c.Momentum)
		}
	case Adam:
		if c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 {
			bad("adam betas (%v, %v): want each in [0, 1)", c.Beta1, c.Beta2)
		}
		if !(c.Eps > 0) {
			bad("adam eps %v: want a positive number", c.Eps)
		}
		if c.Nesterov {
			bad("nesterov applies to sgd only")
		}
	default:
		bad("optimizer %q: want %s or %s", c.Optimizer, SGD, Adam)
	}
	if c.Dropout < 0 || c.Dropout >= 1 {
		bad("dropout %v: want 0 <= p < 1", c.Dropout)
	}
	dev, devErr := ParseDevice(c.Device)
	if devErr != nil {
		errs = append(errs, devErr)
	}
	switch {
	case c.Precision != "" && !slices.Contains(Precisions(), c.Precision):
		bad("precision %q: want %s", c.Precision, strings.Join(Precisions(), ", "))
	case c.Precision == TF32 && devErr == nil && !dev.GPU:
		bad("precision %s needs a CUDA device (TF32 is a tensor-core format); on the cpu use %s, %s or %s", TF32, FP32, BF16, FP16)
	}
	if c.Threads < 0 || c.Threads > MaxThreads() || c.InterOpThreads < 0 || c.InterOpThreads > MaxThreads() {
		bad("threads %d, inter-op threads %d: want each in [0, %d] (%d× the %d cores; 0: all cores)",
			c.Threads, c.InterOpThreads, MaxThreads(), ThreadsPerCPU, runtime.NumCPU())
	}
	if c.Classes < 0 {
		bad("%d classes: want at least 1", c.Classes)
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("recipe: %w: %w", ErrInvalid, errors.Join(errs...))
}

func (c Config) modelSpec(classes int) model.Spec {
	return model.Spec{Name: c.Model, Head: c.Head, ImageSize: c.ImageSize, Classes: classes, Hidden: c.Hidden}
}

// Net builds the model the recipe trains (model.Build), for c.Classes outputs.
func (c Config) Net() (*model.Net, error) {
	n, err := model.Build(c.modelSpec(c.Classes))
	if err != nil {
		return nil, fmt.Errorf("recipe: %w: %w", ErrInvalid, err)
	}
	return n, nil
}

// Resolved returns c with its defaults made explicit: the model's name,
// head and hidden width as model.Resolve gives them, precision FP32, the
// device in its canonical form and zero thread counts as runtime.NumCPU().
// Two recipes that train the same way resolve equal. c must be valid.
func (c Config) Resolved() Config {
	classes := max(c.Classes, 1)
	if s, err := model.Resolve(c.modelSpec(classes)); err == nil {
		c.Model, c.Head, c.Hidden = s.Name, s.Head, s.Hidden
	}
	if c.Precision == "" {
		c.Precision = FP32
	}
	if d, err := ParseDevice(c.Device); err == nil {
		c.Device = d.String()
	}
	if c.Threads == 0 {
		c.Threads = runtime.NumCPU()
	}
	if c.InterOpThreads == 0 {
		c.InterOpThreads = runtime.NumCPU()
	}
	return c
}

// OptimizerString describes the optimizer and its hyper-parameters, as
// checkpoints record it: "sgd(lr=0.01,momentum=0.9,weight_decay=0,nesterov=false)"
// or "adam(lr=0.001,betas=(0.9,0.999),eps=1e-08,weight_decay=0)".
func (c Config) OptimizerString() string {
	if c.Optimizer == Adam {
		return fmt.Sprintf("adam(lr=%g,betas=(%g,%g),eps=%g,weight_decay=%g)", c.LR, c.Beta1, c.Beta2, c.Eps, c.WeightDecay)
	}
	return fmt.Sprintf("sgd(lr=%g,momentum=%g,weight_decay=%g,nesterov=%t)", c.LR, c.Momentum, c.WeightDecay, c.Nesterov)
}

// SameOptimizerState reports whether a checkpoint written with the optimizer
// description got (OptimizerString) holds state this recipe can continue
// from: the same optimizer, whatever its hyper-parameters.
func (c Config) SameOptimizerState(got string) bool {
	return strings.HasPrefix(got, c.Optimizer+"(")
}

// Map renders the recipe, resolved, as flat strings: what a run record
// carries and compare's fairness check compares across frameworks.
func (c Config) Map() map[string]string {
	r := c.Resolved()
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	device := "cpu"
	if d, err := ParseDevice(r.Device); err == nil && d.GPU {
		device = "cuda"
	}
	m := map[string]string{
		"model": r.Model, "head": r.Head, "hidden": strconv.Itoa(r.Hidden), "image_size": strconv.Itoa(r.ImageSize),
		"mode": r.Mode, "freeze_fc": strconv.FormatBool(r.FreezeLoadedHead), "loss": "cross_entropy",
		"optimizer": r.Optimizer, "lr": f(r.LR), "weight_decay": f(r.WeightDecay),
		"dropout": f(r.Dropout), "dropout_masks": "model.DropoutMask(seed, step, layer)",
		"precision": r.Precision, "device": device, "threads": strconv.Itoa(r.Threads),
		"seed":          strconv.FormatInt(r.Seed, 10),
		"channels_last": strconv.FormatBool(r.ChannelsLast), "cudnn_benchmark": strconv.FormatBool(r.CUDNNBenchmark),
		"xla": strconv.FormatBool(r.XLA), "deterministic": strconv.FormatBool(r.Deterministic),
	}
	if r.Optimizer == Adam {
		m["betas"], m["eps"] = f(r.Beta1)+","+f(r.Beta2), f(r.Eps)
	} else {
		m["momentum"], m["nesterov"] = f(r.Momentum), strconv.FormatBool(r.Nesterov)
	}
	return m
}

// Checkpoint metadata keys (weights.CheckpointMeta.Extra) that both drivers write.
const (
	MetaStep     = "step"      // the driver's global step counter: the dropout mask index
	MetaAdamStep = "adam_step" // Adam's step count t (torch's per-parameter "step")
	MetaModel    = "model"
	MetaHead     = "head"
	MetaMode     = "mode"
	// FP16's loss scale and the count of finite steps since it last changed
	// (GradScaler's growth tracker), so that a resumed run scales as the
	// uninterrupted one would.
	MetaLossScale        = "loss_scale"
	MetaLossScaleTracker = "loss_scale_growth_tracker"
)

// Info is what a driver reports about itself and its run.
type Info struct {
	Framework string // the registered name: "torch", "tensorflow"
	Version   string // of the loaded native library
	Device    string // "cpu" or "cuda:N"
	Threads   int    // intra-op threads the framework uses
	// Settings are framework settings that affect speed, recorded in every
	// run record: every SettingKeys key (as the framework really set it), and
	// any others the driver knows of (oneDNN, ...).
	Settings map[string]string
}

// Device is a parsed Config.Device.
type Device struct {
	GPU   bool
	Index int // the CUDA device; 0 on the CPU
}

// MaxDeviceIndex bounds N in "cuda:N".
const MaxDeviceIndex = 1 << 15

// ParseDevice reads "cpu", "cuda" (cuda:0) or "cuda:N", case and surrounding
// space ignored; "" means cpu.
func ParseDevice(s string) (Device, error) {
	d := strings.ToLower(strings.TrimSpace(s))
	switch d {
	case "", "cpu":
		return Device{}, nil
	case "cuda":
		return Device{GPU: true}, nil
	}
	if rest, ok := strings.CutPrefix(d, "cuda:"); ok {
		if n, err := strconv.Atoi(rest); err == nil && n >= 0 && n < MaxDeviceIndex {
			return Device{GPU: true, Index: n}, nil
		}
	}
	return Device{}, fmt.Errorf("device %q: want cpu, cuda or cuda:N", s)
}

// String is the canonical form: "cpu" or "cuda:N".
func (d Device) String() string {
	if !d.GPU {
		return "cpu"
	}
	return "cuda:" + strconv.Itoa(d.Index)
}
