package compare

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/vgg"
)

// Frameworks fwbench drives, by the names used in flags and run records.
const (
	Torch      = "torch"
	TensorFlow = "tensorflow"
)

// ErrInvalid marks a configuration error found before any native call; the CLI exits 2.
var ErrInvalid = errors.New("invalid configuration")

// Spec is one training configuration: everything `fwbench train` takes. compare passes the
// same Spec, with only Framework changed, to every child process, which is how
// architecture, loss, optimizer, hyper-parameters, data and thread counts stay the same.
type Spec struct {
	Framework   string  // "torch" or "tensorflow"
	Data        string  // dataset folder; "" means the built-in synthetic set
	Model       string  // "vgg16", "vgg11_bn", ...
	Head        string  // "flatten" (default), "torchvision" or "keras": see vgg.Head
	Mode        string  // "scratch", "finetune", "features"
	Optimizer   string  // "sgd", "adam"
	LR          float64 // learning rate
	Momentum    float64 // SGD momentum
	WeightDecay float64
	Nesterov    bool
	Epochs      int
	BatchSize   int
	ImageSize   int // S: a multiple of 32, at least 32
	Hidden      int // classifier hidden width (4096 in VGG16)
	Dropout     float64
	Seed        int64
	Threads     int    // intra-op and inter-op threads; 0 means all cores
	Device      string // "cpu", "cuda", "cuda:N"
	// Normalize is "rescale", "imagenet", "caffe", or "auto": the weights' origin decides
	// (torch files imagenet, Keras files caffe, none rescale), see ResolveNormalize.
	Normalize string
	Augment   bool // the study's ImageDataGenerator-style augmentation
	ValSplit  float64
	Weights   string // initial weights (safetensors, torch .pth, Keras .h5; by content); "" means seeded init
	// FreezeFC keeps the head layers that come from the weights file (torchvision's fc6
	// and fc7 with --head torchvision) frozen in features mode; by default they train.
	FreezeFC bool
	// AllowPartialWeights seeds the tensors the weights file lacks (or has in another
	// shape) instead of refusing the file; the report lists every one.
	AllowPartialWeights bool
	WarmupSteps         int // steps left out of throughput and step-time figures
	// StepsPerEpoch, when > 0, caps the training batches per epoch (quick runs, tests).
	StepsPerEpoch  int
	TargetAccuracy float64 // when > 0, record the time to reach this validation accuracy
	Checkpoint     string  // folder for checkpoints; "" means none
	Resume         string  // checkpoint folder to continue from
	// MaxPixels is the largest declared width×height of one image file (checked from its
	// header before decoding); 0 means dataset.DefaultMaxPixels. Larger files are skipped.
	MaxPixels int64
	// Strict makes any skipped data file an error instead of a listed skip.
	Strict bool
}

// DefaultSpec is the configuration `fwbench train` and `fwbench compare` start from: sized so
// the built-in synthetic job finishes in minutes on 2 CPU cores and visibly learns.
//
// It is VGG16 with batch normalisation, trained from scratch with Adam: plain VGG16 from
// scratch stayed at chance (val accuracy 33%) for 5 epochs of the built-in set at 32 px with
// SGD 0.01/0.05 and Adam 1e-4..1e-3, while vgg16_bn with Adam 3e-4 reached 72% in 6 epochs
// (1e-3 peaked at 67% and then oscillated; measured on 2 cores with torch 2.11). Use
// --model vgg16 for the study's architecture.
func DefaultSpec() Spec {
	return Spec{
		Framework: Torch, Model: "vgg16_bn", Head: string(vgg.HeadFlatten), Mode: "scratch", Optimizer: "adam",
		LR: 0.0003, Momentum: 0.9, Epochs: 6, BatchSize: 16, ImageSize: 32, Hidden: 256,
		Dropout: 0.5, Seed: 1, Device: "cpu", Normalize: "auto", ValSplit: 0.2, WarmupSteps: 2,
	}
}

// PaperSpec is `--preset paper`: the study's setup (VGG16, 3 classes, features mode,
// ImageDataGenerator augmentation, categorical cross-entropy) with the study's PyTorch head
// in both frameworks: torchvision's AdaptiveAvgPool2d(7×7) and classifier, the weight
// file's fc6 and fc7 kept and only the last layer replaced by a new 3-way one. One head for
// both frameworks is what makes the comparison fair (the study's two heads differed); the
// torchvision one is chosen because the ImageNet files users have (vgg16-397923af.pth) carry
// fc6/fc7 for it. `--head keras` gives the study's Keras side instead. Normalisation follows
// the weights' origin ("auto"). The study did not report image size, epochs, batch size or
// optimizer; the values chosen here are stated in every report.
func PaperSpec() Spec {
	s := DefaultSpec()
	s.Model = "vgg16"
	s.Head = string(vgg.HeadTorchvision)
	s.Mode = "features"
	s.Normalize = "auto"
	s.Augment = true
	s.ImageSize = 64
	s.Hidden = 4096
	s.Epochs = 5
	s.BatchSize = 16
	s.Optimizer = "adam"
	s.LR = 1e-4
	s.Momentum = 0
	return s
}

// Upper bounds of a Spec, checked by Validate before any native call or large allocation.
const (
	// MaxHidden is the widest classifier hidden layer: 4× torchvision's 4096. fc6 at 7×7 is
	// then 25088×16384 = 411 M weights (1.6 GB in fp32).
	MaxHidden = 16384
	// MaxParams bounds the model's tensors (trainable and buffers, with 2 classes): 2^30
	// elements, 4 GiB in fp32 before gradients and optimizer state. VGG16 at 224 px with
	// torchvision's head has 138 M.
	MaxParams = 1 << 30
	// MaxBatchSize and MaxImageSize bound each factor of the batch memory.
	MaxBatchSize = 65536
	MaxImageSize = 4096
	// MaxBatchBytes bounds one float32 input batch, batch·S·S·3·4 bytes: 1 GiB (batch 256
	// at 512 px is 805 MB).
	MaxBatchBytes = 1 << 30
	// MaxPixelsLimit is the largest --max-pixels accepted: 2^31 declared pixels.
	MaxPixelsLimit = 1 << 31
	// ThreadsPerCPU: at most ThreadsPerCPU × runtime.NumCPU() threads (see MaxThreads).
	ThreadsPerCPU = 4
)

// MaxThreads is the largest thread count Validate accepts on this machine: ThreadsPerCPU ×
// runtime.NumCPU(). More only oversubscribes the cores (100000 started 2300 threads that
// made no progress).
func MaxThreads() int { return ThreadsPerCPU * runtime.NumCPU() }

// Validate checks the Spec without touching a native library. Every error wraps ErrInvalid.
func (s Spec) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("compare: %w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"lr", s.LR}, {"momentum", s.Momentum}, {"weight-decay", s.WeightDecay}, {"dropout", s.Dropout},
		{"val-split", s.ValSplit}, {"target-accuracy", s.TargetAccuracy}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return bad("--%s must be a finite number, got %v", f.name, f.v)
		}
	}
	switch s.Framework {
	case Torch, TensorFlow:
	default:
		return bad("unknown framework %q (want torch or tensorflow)", s.Framework)
	}
	if _, err := vgg.Parse(s.Model); err != nil {
		return bad("unknown model %q", s.Model)
	}
	if _, err := vgg.ParseHead(s.Head); err != nil {
		return bad("unknown head %q (want flatten, torchvision or keras)", s.Head)
	}
	switch s.Mode {
	case "scratch", "finetune", "features":
	default:
		return bad("unknown mode %q (want scratch, finetune or features)", s.Mode)
	}
	if s.Mode == "finetune" && s.Weights == "" {
		return bad("mode finetune needs --weights")
	}
	switch s.Optimizer {
	case "sgd", "adam":
	default:
		return bad("unknown optimizer %q (want sgd or adam)", s.Optimizer)
	}
	if !(s.LR > 0) {
		return bad("learning rate must be positive, got %v", s.LR)
	}
	if s.Momentum < 0 || s.WeightDecay < 0 {
		return bad("momentum and weight decay must not be negative")
	}
	if s.Epochs < 0 {
		return bad("epochs must not be negative, got %d", s.Epochs)
	}
	if s.BatchSize < 1 || s.BatchSize > MaxBatchSize {
		return bad("batch size must be in [1, %d], got %d", MaxBatchSize, s.BatchSize)
	}
	if s.ImageSize < 32 || s.ImageSize%32 != 0 || s.ImageSize > MaxImageSize {
		return bad("image size must be a multiple of 32 in [32, %d], got %d", MaxImageSize, s.ImageSize)
	}
	if b := int64(s.BatchSize) * int64(s.ImageSize) * int64(s.ImageSize) * 3 * 4; b > MaxBatchBytes {
		return bad("a batch of %d images of %d×%d is %d bytes of float32 input, over the limit of %d: lower --batch-size or --image-size",
			s.BatchSize, s.ImageSize, s.ImageSize, b, MaxBatchBytes)
	}
	if s.Hidden < 1 || s.Hidden > MaxHidden {
		return bad("hidden width must be in [1, %d], got %d", MaxHidden, s.Hidden)
	}
	if m, err := vgg.Parse(s.Model); err == nil {
		h, _ := vgg.ParseHead(s.Head)
		if ps, err := vgg.ParamsFor(m, h, s.ImageSize, 2, s.Hidden); err == nil {
			if tr, buf := vgg.Count(ps); tr+buf > MaxParams {
				return bad("%s with head %s, hidden %d at %d px has %d parameters, over the limit of %d: lower --hidden or --image-size",
					s.Model, s.Head, s.Hidden, s.ImageSize, tr+buf, MaxParams)
			}
		}
	}
	if s.StepsPerEpoch < 0 {
		return bad("steps per epoch must not be negative, got %d", s.StepsPerEpoch)
	}
	if s.WarmupSteps < 0 {
		return bad("warm-up steps must not be negative, got %d", s.WarmupSteps)
	}
	if s.TargetAccuracy < 0 || s.TargetAccuracy > 1 {
		return bad("target accuracy must be in [0, 1] (0: off), got %v", s.TargetAccuracy)
	}
	if s.MaxPixels < 0 || s.MaxPixels > MaxPixelsLimit {
		return bad("max pixels must be in [1, %d] (0: the default), got %d", int64(MaxPixelsLimit), s.MaxPixels)
	}
	if s.Dropout < 0 || s.Dropout >= 1 {
		return bad("dropout must be in [0, 1), got %v", s.Dropout)
	}
	if s.Threads < 0 || s.Threads > MaxThreads() {
		return bad("threads must be in [0, %d] (%d× the %d cores; 0: all cores), got %d", MaxThreads(), ThreadsPerCPU, runtime.NumCPU(), s.Threads)
	}
	if err := checkDevice(s.Device); err != nil {
		return bad("%v", err)
	}
	switch s.Normalize {
	case "auto", "rescale", "imagenet", "caffe":
	default:
		return bad("unknown normalisation %q (want auto, rescale, imagenet or caffe)", s.Normalize)
	}
	if s.ValSplit <= 0 || s.ValSplit >= 1 {
		return bad("val split must be in (0, 1), got %v", s.ValSplit)
	}
	if s.Data != "" {
		if st, err := os.Stat(s.Data); err != nil || !st.IsDir() {
			return bad("data folder %q does not exist or is not a folder", s.Data)
		}
	}
	for _, f := range []string{s.Weights} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return bad("weights file %q: %v", f, err)
		}
	}
	return nil
}

func checkDevice(d string) error {
	if d == "cpu" || d == "cuda" {
		return nil
	}
	if n, ok := strings.CutPrefix(d, "cuda:"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 {
			return nil
		}
	}
	return fmt.Errorf("unknown device %q (want cpu, cuda or cuda:N)", d)
}

// GPU reports whether the Spec asks for a CUDA device.
func (s Spec) GPU() bool { return strings.HasPrefix(s.Device, "cuda") }

// Args renders the Spec as `fwbench train` flags, the way compare starts its children.
func (s Spec) Args() []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	a := []string{
		"--framework", s.Framework, "--model", s.Model, "--head", s.Head, "--mode", s.Mode,
		"--optimizer", s.Optimizer, "--lr", f(s.LR), "--momentum", f(s.Momentum),
		"--weight-decay", f(s.WeightDecay), "--nesterov=" + strconv.FormatBool(s.Nesterov),
		"--epochs", strconv.Itoa(s.Epochs), "--batch-size", strconv.Itoa(s.BatchSize),
		"--image-size", strconv.Itoa(s.ImageSize), "--hidden", strconv.Itoa(s.Hidden),
		"--dropout", f(s.Dropout), "--seed", strconv.FormatInt(s.Seed, 10),
		"--threads", strconv.Itoa(s.Threads), "--device", s.Device,
		"--normalize", s.Normalize, "--augment=" + strconv.FormatBool(s.Augment),
		"--val-split", f(s.ValSplit), "--warmup-steps", strconv.Itoa(s.WarmupSteps),
		"--steps-per-epoch", strconv.Itoa(s.StepsPerEpoch),
		"--target-accuracy", f(s.TargetAccuracy),
		"--freeze-fc=" + strconv.FormatBool(s.FreezeFC),
		"--allow-partial-weights=" + strconv.FormatBool(s.AllowPartialWeights),
	}
	if s.MaxPixels > 0 {
		a = append(a, "--max-pixels", strconv.FormatInt(s.MaxPixels, 10))
	}
	if s.Strict {
		a = append(a, "--strict")
	}
	for _, kv := range [][2]string{{"--data", s.Data}, {"--weights", s.Weights}, {"--checkpoint", s.Checkpoint}, {"--resume", s.Resume}} {
		if kv[1] != "" {
			a = append(a, kv[0], kv[1])
		}
	}
	return a
}

// ResolveNormalize returns the normalisation a run uses: s.Normalize, or for "auto" the one
// that follows the weights' origin: torchvision weights (torch .pth, safetensors) were trained
// on "imagenet"-normalised RGB, Keras' VGG16 weights on "caffe" (BGR, mean subtraction), and
// without a file "rescale" (x/255, the study's ImageDataGenerator). The origin is read from
// the file's first bytes (HDF5's signature means Keras).
func ResolveNormalize(s Spec) (string, error) {
	if s.Normalize != "auto" {
		return s.Normalize, nil
	}
	if s.Weights == "" {
		return "rescale", nil
	}
	f, err := os.Open(s.Weights)
	if err != nil {
		return "", fmt.Errorf("compare: %w: weights file: %v", ErrInvalid, err)
	}
	defer f.Close()
	head := make([]byte, 8)
	n, _ := io.ReadFull(f, head)
	if string(head[:n]) == "\x89HDF\r\n\x1a\n" {
		return "caffe", nil
	}
	return "imagenet", nil
}

// Recipe renders the configuration a run really trains with as flat strings, threads as the
// driver reports them: the evidence that compare's fairness check compares across runs. Paths
// (data, weights, checkpoints) are left out: they are checked by content hashes instead.
func (s Spec) Recipe(threads int) map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	device := "cpu"
	if s.GPU() {
		device = "cuda"
	}
	return map[string]string{
		"model": s.Model, "head": s.Head, "mode": s.Mode, "freeze_fc": strconv.FormatBool(s.FreezeFC),
		"loss": "cross_entropy", "optimizer": s.Optimizer, "lr": f(s.LR), "momentum": f(s.Momentum),
		"weight_decay": f(s.WeightDecay), "nesterov": strconv.FormatBool(s.Nesterov),
		"epochs": strconv.Itoa(s.Epochs), "batch_size": strconv.Itoa(s.BatchSize),
		"image_size": strconv.Itoa(s.ImageSize), "hidden": strconv.Itoa(s.Hidden), "dropout": f(s.Dropout),
		"dropout_masks": "vgg.DropoutMask(seed, step, layer)", "seed": strconv.FormatInt(s.Seed, 10),
		"threads": strconv.Itoa(threads), "device": device, "normalize": s.Normalize,
		"augment": strconv.FormatBool(s.Augment), "val_split": f(s.ValSplit),
		"warmup_steps": strconv.Itoa(s.WarmupSteps), "steps_per_epoch": strconv.Itoa(s.StepsPerEpoch),
		"precision": "fp32",
	}
}

// Params lists the model's tensors for this Spec and classes outputs (vgg.ParamsFor), with
// the parsed head.
func (s Spec) Params(classes int) ([]vgg.Param, vgg.Head, error) {
	model, err := vgg.Parse(s.Model)
	if err != nil {
		return nil, "", fmt.Errorf("compare: %w: %v", ErrInvalid, err)
	}
	head, err := vgg.ParseHead(s.Head)
	if err != nil {
		return nil, "", fmt.Errorf("compare: %w: %v", ErrInvalid, err)
	}
	ps, err := vgg.ParamsFor(model, head, s.ImageSize, classes, s.Hidden)
	if err != nil {
		return nil, "", fmt.Errorf("compare: %w: %v", ErrInvalid, err)
	}
	return ps, head, nil
}
