package compare

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// ProgressPrefix starts each machine-readable progress line a child writes on stderr
// (`fwbench train --progress-json`); the rest of the line is one JSON Progress.
const ProgressPrefix = "fwbench-progress "

// Config is one comparison.
type Config struct {
	Spec          Spec     // the training configuration; Framework is set per child
	Frameworks    []string // distinct registered names; default: every registered one, sorted
	Repeat        int      // runs per framework, at least 1; 0 means the default, 2
	Out           string   // report folder; default ./fwbench-report
	Preset        string   // "" or "paper"; recorded in the report
	AllowMismatch bool     // a parity failure warns instead of stopping
	// ParityTolerance is the largest relative difference of the first-batch losses, and of
	// the first-batch logits (relative to the largest |logit|), that passes; default 1e-3
	// (float32 VGG through different kernels agrees to ~1e-6: tfrun's parity test measured
	// 6.6e-7 of the largest logit against PyTorch).
	ParityTolerance float64
	// TrajectoryTolerance is the largest relative difference of the per-step training losses
	// that the trajectory check passes; default 1e-3 (the study-setting issue's goal for fp32
	// on CPU with shared dropout masks).
	TrajectoryTolerance float64
	// Exe is the fwbench binary that runs each child; default os.Executable().
	Exe string
	// Synth sizes the built-in synthetic dataset used when Spec.Data is "".
	SynthClasses, SynthPerClass, SynthSize int
	// Env is added to each child's environment.
	Env []string
	// Nproc, when above 1, adds a data-parallel run of each framework at Nproc local
	// processes after its single-process run in every repeat (`fwbench train --nproc`), and
	// the report's Scaling compares their images/s.
	Nproc int
}

// Run compares the frameworks under one Spec: it prepares the data and one shared initial
// weights file, checks loss parity on the first batch, then runs each framework Repeat times,
// each run in its own child process, alternating the order (A B B A ...). It writes
// report.json, report.csv, report.md and charts to cfg.Out and returns the report. On
// cancellation it writes a partial report and returns it with ErrInterrupted.
func Run(ctx context.Context, cfg Config, onProgress func(Progress)) (*Report, error) {
	if onProgress == nil {
		onProgress = func(Progress) {}
	}
	cfg = withDefaults(cfg)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for _, fw := range cfg.Frameworks { // each child checks too; this refuses before any work
		for r := range cfg.Repeat {
			s := cfg.Spec
			s.Framework, s.Resume = fw, childResume(cfg.Spec, fw, r)
			if err := CheckResume(s); err != nil {
				return nil, err
			}
		}
	}
	if err := CheckWritable(cfg.Out, ReportFiles...); err != nil {
		return nil, err
	}
	// One comparison per output folder: a second Run on it fails here, before any work.
	lock, err := LockDir(cfg.Out)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	rep := newReport(cfg)
	if cfg.Spec.Data == "" {
		dir := filepath.Join(cfg.Out, "data")
		if err := synthesize(dir, cfg); err != nil {
			return nil, err
		}
		cfg.Spec.Data = dir
		rep.Config.Spec.Data = dir
		rep.Config.SyntheticData = true
	}
	// "auto" normalisation follows the user's weights, before the shared file replaces them.
	if cfg.Spec.Normalize, err = ResolveNormalize(cfg.Spec); err != nil {
		return nil, err
	}
	rep.Config.Spec.Normalize = cfg.Spec.Normalize
	wfile, sum, tsum, prov, err := sharedWeights(ctx, cfg)
	if err != nil {
		return nil, err
	}
	cfg.Spec.Weights = wfile
	cfg.Spec.AllowPartialWeights = false // the shared file is complete
	rep.Config.InitialWeights = wfile
	rep.Config.InitialWeightsSHA256 = sum
	rep.Config.InitialWeightsTensorsSHA256 = tsum
	rep.Config.InitialWeightsProvenance = prov

	finish := func(runErr error) (*Report, error) {
		rep.summarise()
		rep.Partial = rep.Partial || runErr != nil
		if err := rep.Write(cfg.Out); err != nil {
			return rep, errors.Join(runErr, err)
		}
		return rep, runErr
	}

	// Parity before timing: same weights, same first batch, dropout off.
	if err := runParity(ctx, cfg, rep, onProgress); err != nil {
		return finish(err)
	}
	if err := checkLoadedWeights(rep); err != nil {
		return finish(err)
	}
	if !rep.Parity.Passed && !cfg.AllowMismatch {
		return finish(fmt.Errorf("compare: parity check failed: %s (use --allow-mismatch to go on)", rep.Parity.Message))
	}

	pairs := map[string]map[int][2]*RunRecord{} // framework → repeat → its runs at 1 and Nproc processes
	for r := 0; r < cfg.Repeat; r++ {
		for _, nproc := range procCounts(cfg.Nproc) {
			for _, fw := range order(cfg.Frameworks, r) {
				if ctx.Err() != nil {
					return finish(ErrInterrupted)
				}
				rec, fail := runChild(ctx, cfg, fw, r, nproc, onProgress)
				if nproc == 1 {
					rep.Order = append(rep.Order, fw)
					if rec != nil {
						rep.Runs = append(rep.Runs, *rec)
					}
				} else if rec != nil {
					rep.ScalingRuns = append(rep.ScalingRuns, *rec)
				}
				if fail != nil {
					rep.Failures = append(rep.Failures, *fail)
				}
				if pairs[fw] == nil {
					pairs[fw] = map[int][2]*RunRecord{}
				}
				p := pairs[fw][r]
				p[min(nproc-1, 1)] = rec
				pairs[fw][r] = p
				if ctx.Err() != nil {
					return finish(ErrInterrupted)
				}
			}
		}
	}
	if cfg.Nproc > 1 {
		rep.Scaling = scaling(cfg.Frameworks, pairs, cfg.Nproc)
	}
	rep.Fairness = fairness(cfg, rep)
	rep.Parity.Trajectory = trajectory(rep.Runs, cfg.Frameworks, cfg.TrajectoryTolerance)
	return finish(unfair(rep.Fairness))
}

// Validate checks cfg, with its zero fields set to their defaults, as Run does before any
// work: each framework's Spec, distinct frameworks, repeat ≥ 1 and positive tolerances. A
// failure wraps ErrInvalid.
func (cfg Config) Validate() error {
	return withDefaults(cfg).validate()
}

func (cfg Config) validate() error {
	seen := map[string]bool{}
	for _, fw := range cfg.Frameworks {
		if seen[fw] {
			return fmt.Errorf("compare: %w: framework %q is named twice (frameworks %s); each framework runs once per repeat",
				ErrInvalid, fw, strings.Join(cfg.Frameworks, ","))
		}
		seen[fw] = true
		s := cfg.Spec
		s.Framework = fw
		if err := s.Validate(); err != nil {
			return err
		}
	}
	for name, tol := range map[string]float64{"parity": cfg.ParityTolerance, "trajectory": cfg.TrajectoryTolerance} {
		if !(tol > 0) || math.IsInf(tol, 0) {
			return fmt.Errorf("compare: %w: %s tolerance must be a positive number, got %v", ErrInvalid, name, tol)
		}
	}
	if cfg.Repeat < 1 {
		return fmt.Errorf("compare: %w: repeat must be at least 1, got %d", ErrInvalid, cfg.Repeat)
	}
	return CheckParallel(cfg.Spec, max(cfg.Nproc, 1))
}

// withDefaults fills cfg's zero fields. A zero Repeat means the default, 2 (the CLI refuses
// an explicit --repeat 0 itself); a negative one is left for validate to refuse.
func withDefaults(cfg Config) Config {
	if len(cfg.Frameworks) == 0 {
		cfg.Frameworks = Frameworks()
	}
	if cfg.Repeat == 0 {
		cfg.Repeat = 2
	}
	if cfg.Out == "" {
		cfg.Out = "fwbench-report"
	}
	parity, trajectory := DefaultTolerances(cfg.Spec.Config.Resolved().Precision)
	if cfg.ParityTolerance == 0 {
		cfg.ParityTolerance = parity
	}
	if cfg.TrajectoryTolerance == 0 {
		cfg.TrajectoryTolerance = trajectory
	}
	if cfg.SynthClasses == 0 {
		cfg.SynthClasses = 3
	}
	if cfg.SynthPerClass == 0 {
		cfg.SynthPerClass = 60
	}
	if cfg.SynthSize == 0 {
		cfg.SynthSize = 64
	}
	return cfg
}

// CheckWritable makes the folder dir, with its parents (only folders fwbench owns and
// documents: compare's --out, checkpoint folders), proves a file can be written in it, and
// checks that each of files (names in dir) may be replaced (CheckOutput: a regular file or
// nothing, never a symbolic link, directory, FIFO or device). A failure wraps ErrInvalid.
func CheckWritable(dir string, files ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("compare: %w: output folder %q: %v", ErrInvalid, dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("compare: %w: output folder %q is not writable: %v", ErrInvalid, dir, err)
	}
	f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return fmt.Errorf("compare: output folder %q: %w", dir, err)
	}
	for _, name := range files {
		if err := CheckOutput(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// synthesize writes the built-in dataset once; an existing complete one is reused.
func synthesize(dir string, cfg Config) error {
	stamp := filepath.Join(dir, ".complete")
	want := fmt.Sprintf("classes=%d per-class=%d size=%d seed=%d\n", cfg.SynthClasses, cfg.SynthPerClass, cfg.SynthSize, cfg.Spec.Seed)
	if b, err := os.ReadFile(stamp); err == nil && string(b) == want {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("compare: synthetic data: %w", err)
	}
	if err := dataset.Synthesize(dir, cfg.SynthClasses, cfg.SynthPerClass, cfg.SynthSize, cfg.Spec.Seed, "png"); err != nil {
		return fmt.Errorf("compare: synthetic data: %w", err)
	}
	return os.WriteFile(stamp, []byte(want), 0o644)
}

// sharedWeights writes the one initial-weights file every framework loads, composed by
// weights.Initial from the user's weights (strictly, unless AllowPartialWeights) and the seed.
// It returns the file's path, its sha256, the canonical hash of its tensors and where each
// tensor came from.
func sharedWeights(ctx context.Context, cfg Config) (path, sum, tensorsSum string, prov weights.Provenance, err error) {
	s := cfg.Spec
	ds, err := dataset.Open(ctx, s.Data, dataset.OpenOptions{ValSplit: s.ValSplit, Seed: s.Seed, MaxPixels: s.MaxPixels, Strict: s.Strict})
	if err != nil {
		return "", "", "", prov, fmt.Errorf("compare: %w", err)
	}
	net, err := s.netFor(len(ds.Classes()))
	if err != nil {
		return "", "", "", prov, err
	}
	init, prov, err := initialWeights(s, net)
	if err != nil {
		return "", "", "", prov, err
	}
	path = filepath.Join(cfg.Out, "initial_weights.safetensors")
	if err := weights.WriteSafetensors(path, init, map[string]string{"fwbench": "shared initial weights", "model": net.Name, "head": net.Head}); err != nil {
		return "", "", "", prov, fmt.Errorf("compare: %w", err)
	}
	sum, err = FileSHA256(path)
	return path, sum, weights.CanonicalSHA256(init), prov, err
}

// FileSHA256 is the hex sha256 of a file's bytes.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// order alternates the framework order across repeats: A B, B A, A B, ...
func order(fws []string, repeat int) []string {
	o := append([]string(nil), fws...)
	if repeat%2 == 1 {
		for i, j := 0, len(o)-1; i < j; i, j = i+1, j-1 {
			o[i], o[j] = o[j], o[i]
		}
	}
	return o
}

func runParity(ctx context.Context, cfg Config, rep *Report, onProgress func(Progress)) error {
	rep.Parity = Parity{Losses: map[string]float64{}, Tolerance: cfg.ParityTolerance, Differences: differences(cfg.Spec)}
	logits := map[string][]float32{}
	for _, fw := range cfg.Frameworks {
		s := cfg.Spec
		s.Epochs = 0
		rec, fail := runSpec(ctx, cfg, s, fw, 0, 1, filepath.Join(cfg.Out, "runs", "parity-"+fw+".json"), onProgress)
		if fail != nil {
			rep.Failures = append(rep.Failures, *fail)
			return fmt.Errorf("compare: parity run of %s failed: %s", fw, fail.Error)
		}
		rep.Parity.Losses[fw] = rec.InitialLoss
		logits[fw] = rec.FirstBatchLogits
		rep.parityRuns = append(rep.parityRuns, *rec)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, l := range rep.Parity.Losses {
		lo, hi = math.Min(lo, l), math.Max(hi, l)
	}
	rep.Parity.RelativeDifference = (hi - lo) / math.Max(math.Abs(hi), math.Abs(lo))
	lossOK := rep.Parity.RelativeDifference <= cfg.ParityTolerance
	rep.Parity.Logits = compareLogits(cfg.Frameworks, logits, cfg.ParityTolerance)
	rep.Parity.Passed = lossOK && (rep.Parity.Logits == nil || rep.Parity.Logits.Passed)
	rep.Parity.Message = fmt.Sprintf("first-batch losses %s differ by %.3g relative (tolerance %.3g)",
		fmtLosses(rep.Parity.Losses), rep.Parity.RelativeDifference, cfg.ParityTolerance)
	if l := rep.Parity.Logits; l != nil {
		rep.Parity.Message += fmt.Sprintf("; logits (%d values) differ by at most %.3g (%.3g of the largest |logit|, %s)",
			l.Count, l.MaxAbsDiff, l.MaxRelDiff, passFail(l.Passed))
	}
	return nil
}

// compareLogits compares the first two frameworks' logits; nil when either has none.
func compareLogits(fws []string, logits map[string][]float32, tol float64) *LogitsParity {
	if len(fws) < 2 || len(logits[fws[0]]) == 0 || len(logits[fws[1]]) == 0 {
		return nil
	}
	a, b := logits[fws[0]], logits[fws[1]]
	lp := &LogitsParity{Frameworks: fws[:2], Count: len(a), Tolerance: tol}
	if len(a) != len(b) {
		lp.MaxAbsDiff, lp.MaxRelDiff = math.Inf(1), math.Inf(1)
		return lp
	}
	var big float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		lp.MaxAbsDiff = math.Max(lp.MaxAbsDiff, math.Abs(x-y))
		big = math.Max(big, math.Max(math.Abs(x), math.Abs(y)))
	}
	if big > 0 {
		lp.MaxRelDiff = lp.MaxAbsDiff / big
	}
	lp.Passed = lp.MaxRelDiff <= tol && !math.IsNaN(lp.MaxAbsDiff)
	return lp
}

// checkLoadedWeights stops the comparison when a framework's parameters, read back right after
// loading, differ from the shared file's tensors.
func checkLoadedWeights(rep *Report) error {
	for _, run := range rep.parityRuns {
		if run.LoadedWeightsSHA256 != rep.Config.InitialWeightsTensorsSHA256 {
			return fmt.Errorf("%w: %s read back weights with canonical sha256 %q after loading, want the shared file's %s",
				ErrUnfair, run.Framework, run.LoadedWeightsSHA256, rep.Config.InitialWeightsTensorsSHA256)
		}
	}
	return nil
}

// trajectory compares the step_losses of the first complete run of the first two frameworks.
func trajectory(runs []RunRecord, fws []string, tol float64) *TrajectoryParity {
	if len(fws) < 2 {
		return nil
	}
	first := map[string][]float64{}
	for _, r := range runs {
		if _, ok := first[r.Framework]; !ok && !r.Partial && r.ResumedFrom == nil {
			first[r.Framework] = r.StepLosses
		}
	}
	a, b := first[fws[0]], first[fws[1]]
	if len(a) == 0 || len(b) == 0 {
		return nil
	}
	tp := &TrajectoryParity{Frameworks: fws[:2], Steps: min(len(a), len(b)), Tolerance: tol, Passed: true}
	for i := range tp.Steps {
		d := math.Abs(a[i]-b[i]) / math.Max(math.Abs(a[i]), math.Abs(b[i]))
		if math.IsNaN(d) {
			d = 0 // both zero
		}
		tp.MaxRelDiff = math.Max(tp.MaxRelDiff, d)
		if d > tol && tp.FirstStepBeyond == 0 {
			tp.FirstStepBeyond, tp.Passed = i+1, false
		}
	}
	return tp
}

// differences names the sources of difference that remain between the two frameworks'
// computations under s, once data, weights, recipe and dropout masks are the same. The texts
// describe the kernels of the drivers fwbench ships (torchrun, tfrun); which apply is decided
// from the model's layers and the recipe, never from a framework's name.
func differences(s Spec) []string {
	d := []string{
		"float32 rounding: the convolution and GEMM kernels (oneDNN/Eigen in TensorFlow, oneDNN/MKL in libtorch) sum in different orders; the differences start near 1e-7 relative and can grow over training steps",
	}
	var bn, depthwise bool
	if n, err := s.net(1); err == nil {
		for _, l := range n.Layers {
			bn = bn || l.Op == model.BatchNorm
			depthwise = depthwise || l.Depthwise()
		}
	}
	if bn {
		d = append(d, "BatchNorm: TensorFlow's FusedBatchNormV3 and torch's batch_norm compute batch statistics in different summation orders, and the running variance update uses the unbiased estimate in both")
	}
	if depthwise {
		d = append(d, "depthwise convolutions: TensorFlow's DepthwiseConv2dNative and torch's grouped convolution are different kernels with different summation orders")
	}
	switch s.Config.Resolved().Precision {
	case recipe.BF16, recipe.FP16:
		d = append(d, "mixed precision ("+s.Config.Resolved().Precision+"): both frameworks round the inputs, weights and outputs of convolutions and matrix products to the 16-bit type (torch autocast; tfrun's explicit casts) and keep float32 master weights; their 16-bit kernels accumulate in different orders, so the differences start near the 16-bit type's rounding (bf16 2^-9 ≈ 2e-3, fp16 2^-12 ≈ 2.4e-4 relative) instead of float32's")
	case recipe.TF32:
		d = append(d, "TF32: cuBLAS and cuDNN round products' inputs to a 10-bit significand (2^-11 ≈ 4.9e-4 relative) in both frameworks")
	}
	if s.Optimizer == recipe.Adam {
		d = append(d, "Adam: TensorFlow's ApplyAdam folds the bias correction into the step size (ε̂ = ε·√(1−β2^t), fed per step); equal to torch's Adam in exact arithmetic, not bit for bit in float32")
	}
	if s.GPU() {
		d = append(d, "CUDA: cuDNN's algorithm choice and non-deterministic atomic reductions differ between runs and frameworks")
	}
	if s.Dropout > 0 {
		d = append(d, "none from dropout: both frameworks multiply by the same masks, drawn in Go by model.DropoutMask(seed, step, layer)")
	}
	return d
}

// fmtLosses lists the losses by framework name, sorted.
func fmtLosses(m map[string]float64) string {
	var parts []string
	for _, fw := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%.7g", fw, m[fw]))
	}
	return strings.Join(parts, ", ")
}

// procCounts lists the process counts each framework runs at in a repeat: 1, and nproc when
// it is above 1.
func procCounts(nproc int) []int {
	if nproc > 1 {
		return []int{1, nproc}
	}
	return []int{1}
}

// runChild runs one repeat of fw at nproc processes; the data-parallel runs' records and
// checkpoints go beside the single-process ones with a "-nN" suffix.
func runChild(ctx context.Context, cfg Config, fw string, repeat, nproc int, onProgress func(Progress)) (*RunRecord, *Failure) {
	name := fmt.Sprintf("%s-%d", fw, repeat+1)
	if nproc > 1 {
		name += fmt.Sprintf("-n%d", nproc)
	}
	return runSpec(ctx, cfg, cfg.Spec, fw, repeat, nproc, filepath.Join(cfg.Out, "runs", name+".json"), onProgress)
}

// perRank shares the threads of a single-process run out over nproc local processes (at
// least one each), so that the data-parallel run uses the cores the single-process run uses
// and the scaling efficiency compares like with like.
func perRank(s Spec, nproc int) (intra, inter int) {
	r := s.Config.Resolved()
	return max(1, r.Threads/nproc), max(1, r.InterOpThreads/nproc)
}

// childCheckpoint is the checkpoint folder of one training child: <base>/<framework>-<repeat>,
// base being the Spec's Checkpoint or else <Out>/checkpoints, so that no two children write
// into one folder. A run that trains no epoch (the parity run) writes no checkpoint.
func childCheckpoint(cfg Config, s Spec, fw string, repeat, nproc int) string {
	if s.Epochs <= 0 {
		return ""
	}
	base := s.Checkpoint
	if base == "" {
		base = filepath.Join(cfg.Out, "checkpoints")
	}
	name := fmt.Sprintf("%s-%d", fw, repeat+1)
	if nproc > 1 {
		name += fmt.Sprintf("-n%d", nproc)
	}
	return filepath.Join(base, name)
}

// childResume is the checkpoint a training child resumes from under `compare --resume X`:
// X/<framework>-<repeat>, the folder an earlier comparison's child wrote (childCheckpoint),
// when it holds a checkpoint; a child without one starts afresh, and a run that trains no
// epoch (the parity run) never resumes.
func childResume(s Spec, fw string, repeat int) string {
	if s.Resume == "" || s.Epochs <= 0 {
		return ""
	}
	dir := filepath.Join(s.Resume, fmt.Sprintf("%s-%d", fw, repeat+1))
	if _, err := weights.ReadCheckpointMeta(dir); err != nil {
		return ""
	}
	return dir
}

// runSpec runs `fwbench train` for one framework in a child process and reads its record.
// On Ctrl-C the child gets SIGINT, finishes its step, checkpoints and writes a partial record.
func runSpec(ctx context.Context, cfg Config, s Spec, fw string, repeat, nproc int, jsonPath string, onProgress func(Progress)) (*RunRecord, *Failure) {
	s.Framework = fw
	s.Checkpoint = childCheckpoint(cfg, s, fw, repeat, nproc)
	s.Resume = childResume(s, fw, repeat)
	if nproc > 1 {
		s.Resume = "" // a comparison resumes its single-process runs only
		s.Threads, s.InterOpThreads = perRank(s, nproc)
	}
	if err := os.MkdirAll(filepath.Dir(jsonPath), 0o755); err != nil {
		return nil, &Failure{Framework: fw, Repeat: repeat + 1, Error: err.Error()}
	}
	os.Remove(jsonPath)
	args := append([]string{"train"}, s.Args()...)
	args = append(args, "--json", jsonPath, "--progress-json", "--quiet")
	if nproc > 1 {
		args = append(args, "--nproc", strconv.Itoa(nproc))
	}
	cmd := exec.Command(cfg.Exe, args...)
	cmd.Env = append(os.Environ(), cfg.Env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, &Failure{Framework: fw, Repeat: repeat + 1, Error: err.Error()}
	}
	if err := cmd.Start(); err != nil {
		return nil, &Failure{Framework: fw, Repeat: repeat + 1, Error: fmt.Sprintf("starting %s: %v", cfg.Exe, err)}
	}
	// Forward a cancellation as SIGINT: the child checkpoints and writes a partial record.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGINT)
		case <-done:
		}
	}()
	tail := &tailBuffer{max: 8 << 10}
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, ProgressPrefix); ok {
			var p Progress
			if json.Unmarshal([]byte(rest), &p) == nil {
				p.Repeat, p.Repeats = repeat+1, cfg.Repeat
				if nproc > 1 {
					p.Framework += fmt.Sprintf(" ×%d", nproc)
				}
				onProgress(p)
				continue
			}
		}
		tail.Write([]byte(line + "\n"))
	}
	waitErr := cmd.Wait()
	close(done)
	wg.Wait()

	var rec *RunRecord
	if b, err := os.ReadFile(jsonPath); err == nil {
		var r RunRecord
		if err := json.Unmarshal(b, &r); err == nil {
			rec = &r
		}
	}
	if waitErr == nil && rec != nil {
		return rec, nil
	}
	f := &Failure{Framework: fw, Repeat: repeat + 1, StderrTail: tail.String()}
	if ee, ok := waitErr.(*exec.ExitError); ok {
		f.ExitCode = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			f.Signal = ws.Signal().String()
		}
	}
	switch {
	case waitErr != nil:
		f.Error = fmt.Sprintf("%s child exited: %v", fw, waitErr)
	default:
		f.Error = fmt.Sprintf("%s child wrote no readable run record at %s", fw, jsonPath)
	}
	return rec, f
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
