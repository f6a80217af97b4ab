package compare

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
)

// ErrInvalid marks a configuration error found before any native call; the CLI exits 2. It
// is recipe.ErrInvalid, so a recipe refused by recipe.Config.Validate and a Spec refused by
// Spec.Validate are the same kind of error.
var ErrInvalid = recipe.ErrInvalid

// Spec is one training run: the recipe (recipe.Config: model, head, mode, optimizer,
// hyper-parameters, dropout, precision, device, threads, seed) and what is not the recipe
// (the framework, the data and its preprocessing, epochs and batch size, files and limits).
// compare passes the same Spec, with only Framework changed, to every child process, which is
// how the recipe, the data and thread counts stay the same.
type Spec struct {
	recipe.Config
	// Framework is a registered framework's name (Frameworks, LookupFramework).
	Framework string
	Data      string // dataset folder; "" means the built-in synthetic set
	Epochs    int
	BatchSize int
	// Normalize is "rescale", "imagenet", "caffe", or "auto": the weights' origin decides
	// (torch files imagenet, Keras files caffe, none rescale), see ResolveNormalize.
	Normalize string
	Augment   bool // the study's ImageDataGenerator-style augmentation
	ValSplit  float64
	Weights   string // initial weights (safetensors, torch .pth, Keras .h5; by content); "" means seeded init
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
// the built-in synthetic job finishes in minutes on 2 CPU cores and visibly learns. Its
// Framework is empty: the caller names one.
//
// It is VGG16 with batch normalisation (its default head, flatten, with hidden width 256),
// trained from scratch with Adam: plain VGG16 from scratch stayed at chance (val accuracy
// 33%) for 5 epochs of the built-in set at 32 px with SGD 0.01/0.05 and Adam 1e-4..1e-3,
// while vgg16_bn with Adam 3e-4 reached 72% in 6 epochs (1e-3 peaked at 67% and then
// oscillated; measured on 2 cores with torch 2.11). Use --model vgg16 for the study's
// architecture. Classes is 0: the data decides.
func DefaultSpec() Spec {
	c := recipe.Default()
	c.Model, c.Head, c.Hidden, c.ImageSize, c.Classes = "vgg16_bn", "", 256, 32, 0
	c.Mode, c.Optimizer, c.LR, c.Momentum, c.Dropout = model.ModeScratch, recipe.Adam, 0.0003, 0.9, 0.5
	c.Seed, c.Device = 1, "cpu"
	return Spec{Config: c, Epochs: 6, BatchSize: 16, Normalize: "auto", ValSplit: 0.2, WarmupSteps: 2}
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
	s.Head = model.HeadTorchvision
	s.Mode = model.ModeFeatures
	s.Normalize = "auto"
	s.Augment = true
	s.ImageSize = 64
	s.Hidden = 4096
	s.Epochs = 5
	s.BatchSize = 16
	s.Optimizer = recipe.Adam
	s.LR = 1e-4
	s.Momentum = 0
	return s
}

// Upper bounds of what a Spec adds to its recipe, checked by Validate before any native call
// or large allocation.
const (
	// MaxParams bounds the model's tensors (trainable and buffers, with 2 classes): 2^30
	// elements, 4 GiB in fp32 before gradients and optimizer state. VGG16 at 224 px with
	// torchvision's head has 138 M.
	MaxParams = 1 << 30
	// MaxBatchSize bounds the batch; MaxBatchBytes bounds one float32 input batch,
	// batch·S·S·3·4 bytes: 1 GiB (batch 256 at 512 px is 805 MB).
	MaxBatchSize  = 65536
	MaxBatchBytes = 1 << 30
	// MaxPixelsLimit is the largest --max-pixels accepted: 2^31 declared pixels.
	MaxPixelsLimit = 1 << 31
)

// Validate checks the Spec without touching a native library: first the recipe, with
// recipe.Config.Validate (whose error it returns as it is), then what the Spec adds. Every
// error wraps ErrInvalid. The framework must be registered (Register).
func (s Spec) Validate() error {
	if err := s.Config.Validate(); err != nil {
		return err
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("compare: %w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"val-split", s.ValSplit}, {"target-accuracy", s.TargetAccuracy}} {
		if math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return bad("--%s must be a finite number, got %v", f.name, f.v)
		}
	}
	if _, err := lookup(s.Framework); err != nil {
		return err
	}
	if s.Mode == model.ModeFinetune && s.Weights == "" {
		return bad("mode finetune needs --weights")
	}
	if s.Epochs < 0 {
		return bad("epochs must not be negative, got %d", s.Epochs)
	}
	if s.BatchSize < 1 || s.BatchSize > MaxBatchSize {
		return bad("batch size must be in [1, %d], got %d", MaxBatchSize, s.BatchSize)
	}
	if b := int64(s.BatchSize) * int64(s.ImageSize) * int64(s.ImageSize) * 3 * 4; b > MaxBatchBytes {
		return bad("a batch of %d images of %d×%d is %d bytes of float32 input, over the limit of %d: lower --batch-size or --image-size",
			s.BatchSize, s.ImageSize, s.ImageSize, b, MaxBatchBytes)
	}
	if n, err := s.net(2); err == nil {
		if tr, buf := model.Count(n.Params); tr+buf > MaxParams {
			return bad("%s with head %s, hidden %d at %d px has %d parameters, over the limit of %d: lower --hidden or --image-size",
				n.Name, n.Head, n.Hidden, n.ImageSize, tr+buf, MaxParams)
		}
	} else {
		return err
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

// net builds the recipe's model for classes outputs when the recipe has no class count yet
// (s.Classes 0: the data is not open).
func (s Spec) net(classes int) (*model.Net, error) {
	c := s.Config
	if c.Classes == 0 {
		c.Classes = classes
	}
	return c.Net()
}

// GPU reports whether the Spec asks for a CUDA device.
func (s Spec) GPU() bool {
	d, err := recipe.ParseDevice(s.Device)
	return err == nil && d.GPU
}

// Args renders the Spec as `fwbench train` flags, the way compare starts its children: every
// recipe field but Classes (the data decides), and what the Spec adds.
func (s Spec) Args() []string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	a := []string{
		"--framework", s.Framework, "--model", s.Model, "--head", s.Head, "--mode", s.Mode,
		"--optimizer", s.Optimizer, "--lr", f(s.LR), "--momentum", f(s.Momentum),
		"--weight-decay", f(s.WeightDecay), "--nesterov=" + strconv.FormatBool(s.Nesterov),
		"--beta1", f(s.Beta1), "--beta2", f(s.Beta2), "--eps", f(s.Eps),
		"--epochs", strconv.Itoa(s.Epochs), "--batch-size", strconv.Itoa(s.BatchSize),
		"--image-size", strconv.Itoa(s.ImageSize), "--hidden", strconv.Itoa(s.Hidden),
		"--dropout", f(s.Dropout), "--precision", s.Precision, "--seed", strconv.FormatInt(s.Seed, 10),
		"--threads", strconv.Itoa(s.Threads), "--inter-op-threads", strconv.Itoa(s.InterOpThreads),
		"--device", s.Device,
		"--normalize", s.Normalize, "--augment=" + strconv.FormatBool(s.Augment),
		"--val-split", f(s.ValSplit), "--warmup-steps", strconv.Itoa(s.WarmupSteps),
		"--steps-per-epoch", strconv.Itoa(s.StepsPerEpoch),
		"--target-accuracy", f(s.TargetAccuracy),
		"--freeze-fc=" + strconv.FormatBool(s.FreezeLoadedHead),
		"--allow-partial-weights=" + strconv.FormatBool(s.AllowPartialWeights),
		"--channels-last=" + strconv.FormatBool(s.ChannelsLast), "--cudnn-benchmark=" + strconv.FormatBool(s.CUDNNBenchmark),
		"--xla=" + strconv.FormatBool(s.XLA), "--deterministic=" + strconv.FormatBool(s.Deterministic),
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

// Recipe renders the configuration a run really trains with as flat strings: the recipe's
// own (recipe.Config.Map, resolved) with threads as the driver reports them, and what the
// Spec adds (epochs, batch_size, normalize, augment, val_split, warmup_steps,
// steps_per_epoch). It is the evidence that compare's fairness check compares across runs.
// Paths (data, weights, checkpoints) are left out: they are checked by content hashes
// instead.
func (s Spec) Recipe(threads int) map[string]string {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	m := s.Config.Map()
	m["threads"] = strconv.Itoa(threads)
	m["epochs"] = strconv.Itoa(s.Epochs)
	m["batch_size"] = strconv.Itoa(s.BatchSize)
	m["normalize"] = s.Normalize
	m["augment"] = strconv.FormatBool(s.Augment)
	m["val_split"] = f(s.ValSplit)
	m["warmup_steps"] = strconv.Itoa(s.WarmupSteps)
	m["steps_per_epoch"] = strconv.Itoa(s.StepsPerEpoch)
	return m
}

// threads is the intra-op thread count the recipe resolves to (0 means every core).
func (s Spec) threads() int { return s.Config.Resolved().Threads }
