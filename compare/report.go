package compare

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// ReportSchema names the comparison report format (report.json). docs/report-schema.json
// is its JSON Schema.
const ReportSchema = "fwbench.report/v1"

// Report is one comparison: what was run, how it was kept fair, and what was measured.
type Report struct {
	Schema   string               `json:"schema"`
	Created  string               `json:"created"`
	Partial  bool                 `json:"partial"`
	Config   ReportConfig         `json:"config"`
	Fairness []Condition          `json:"fairness"`
	Parity   Parity               `json:"parity"`
	Order    []string             `json:"order"`
	Runs     []RunRecord          `json:"runs"`
	Failures []Failure            `json:"failures"`
	Summary  map[string]FWSummary `json:"summary"`
	Ratio    *Ratio               `json:"ratio_tensorflow_over_torch,omitempty"`
	// Scaling and ScalingRuns are compare --nproc's: each framework's data-parallel scaling
	// and the N-process runs' records (rank 0's), kept out of Runs and Summary, which are the
	// single-process runs'.
	Scaling     []Scaling              `json:"scaling,omitempty"`
	ScalingRuns []RunRecord            `json:"scaling_runs,omitempty"`
	Study       StudyReference         `json:"study"`
	Machine     map[string]string      `json:"machine"`
	Extra       map[string]any         `json:"extra,omitempty"`
	byFW        map[string][]RunRecord // runs per framework, complete ones only
	parityRuns  []RunRecord            // the parity children's records
}

// ReportConfig is the configuration a report was made with.
type ReportConfig struct {
	Spec                 Spec     `json:"spec"`
	Frameworks           []string `json:"frameworks"`
	Repeat               int      `json:"repeat"`
	Preset               string   `json:"preset,omitempty"`
	SyntheticData        bool     `json:"synthetic_data"`
	InitialWeights       string   `json:"initial_weights"`
	InitialWeightsSHA256 string   `json:"initial_weights_sha256"`
	// InitialWeightsTensorsSHA256 is weights.CanonicalSHA256 of the shared file's tensors:
	// what every run's loaded_weights_sha256 must equal.
	InitialWeightsTensorsSHA256 string `json:"initial_weights_tensors_sha256"`
	// InitialWeightsProvenance says which tensors came from the user's weights file and
	// which were seeded (on purpose, or missing from the file under --allow-partial-weights).
	InitialWeightsProvenance weights.Provenance `json:"initial_weights_provenance"`
	ParityTolerance          float64            `json:"parity_tolerance"`
	// Chosen lists the settings the study left unreported and that fwbench chose.
	Chosen map[string]string `json:"chosen,omitempty"`
}

// Condition is one fairness condition and the evidence that it held.
type Condition struct {
	Name     string `json:"name"`
	Held     bool   `json:"held"`
	Evidence string `json:"evidence"`
}

// Parity is the check made before timing: the first-batch loss and logits of every framework
// from the same weights and batch (dropout off), and, after the runs, the per-step training
// losses of the first run of each framework.
type Parity struct {
	Losses             map[string]float64 `json:"losses"`
	RelativeDifference float64            `json:"relative_difference"`
	Tolerance          float64            `json:"tolerance"`
	// Passed is true when both the losses and the logits agree within Tolerance.
	Passed     bool              `json:"passed"`
	Message    string            `json:"message"`
	Logits     *LogitsParity     `json:"logits,omitempty"`
	Trajectory *TrajectoryParity `json:"trajectory,omitempty"`
	// Differences names what still differs between the frameworks' computations.
	Differences []string `json:"differences"`
}

// LogitsParity compares the full first-batch logits of two frameworks. MaxRelDiff is
// MaxAbsDiff over the largest |logit| of either.
type LogitsParity struct {
	Frameworks []string `json:"frameworks"`
	Count      int      `json:"count"`
	MaxAbsDiff float64  `json:"max_abs_diff"`
	MaxRelDiff float64  `json:"max_rel_diff"`
	Tolerance  float64  `json:"tolerance"`
	Passed     bool     `json:"passed"`
}

// TrajectoryParity compares the per-step training losses (step_losses) of the first complete
// run of each framework: the largest of |a−b|/max(|a|,|b|) over the steps both ran.
type TrajectoryParity struct {
	Frameworks []string `json:"frameworks"`
	Steps      int      `json:"steps"`
	MaxRelDiff float64  `json:"max_rel_diff"`
	Tolerance  float64  `json:"tolerance"`
	Passed     bool     `json:"passed"`
	// FirstStepBeyond is the first step (1-based) whose difference exceeds Tolerance, 0 if none.
	FirstStepBeyond int `json:"first_step_beyond_tolerance"`
}

// Failure is a child run that did not finish: its exit and the tail of its stderr.
type Failure struct {
	Framework  string `json:"framework"`
	Repeat     int    `json:"repeat"`
	ExitCode   int    `json:"exit_code"`
	Signal     string `json:"signal,omitempty"`
	Error      string `json:"error"`
	StderrTail string `json:"stderr_tail,omitempty"`
}

// Stat is a figure across repeats: median, min, max and median absolute deviation.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	MAD    float64 `json:"mad"`
	N      int     `json:"n"`
}

// FWSummary is one framework's figures across its complete runs.
type FWSummary struct {
	Runs             int    `json:"runs"`
	Version          string `json:"framework_version"`
	Device           string `json:"device"`
	Threads          int    `json:"threads"`
	TotalSeconds     Stat   `json:"total_seconds"`
	ImagesPerSecond  Stat   `json:"images_per_second"`
	StepP50          Stat   `json:"step_seconds_p50"`
	StepP95          Stat   `json:"step_seconds_p95"`
	EpochSeconds     Stat   `json:"epoch_seconds"`
	DataWaitFraction Stat   `json:"data_wait_fraction"`
	FinalValAccuracy Stat   `json:"final_val_accuracy"`
	FinalValLoss     Stat   `json:"final_val_loss"`
	PeakRSSBytes     Stat   `json:"peak_rss_bytes"`
	TimeToTarget     *Stat  `json:"time_to_target_seconds,omitempty"`
	// TimeBreakdown is each part of the runs' TimeBreakdownSeconds ("total" too), across runs.
	TimeBreakdown map[string]Stat `json:"time_breakdown_seconds,omitempty"`
	// PeakGPUBytes (NVML, every framework) and PeakGPUAllocatorBytes (the framework's
	// allocator, where it has one), across the runs that report them.
	PeakGPUBytes          *Stat `json:"peak_gpu_bytes,omitempty"`
	PeakGPUAllocatorBytes *Stat `json:"peak_gpu_allocator_bytes,omitempty"`
}

// Ratio is the first framework's median total time over the second's, the report's
// frameworks in sorted order (tensorflow over torch, the study's ratio, when those two are
// compared), with the spread of the per-repeat ratios (repeat i of one against repeat i of the
// other). It is in report.json as "ratio_tensorflow_over_torch", the name the schema has
// always given it.
type Ratio struct {
	// Frameworks are the numerator's and the denominator's names.
	Frameworks   []string `json:"frameworks,omitempty"`
	TotalSeconds Stat     `json:"total_seconds"`
	// Median is median(first's total) / median(second's total), the headline figure.
	Median float64 `json:"median"`
}

// StudyReference is the study's result, cited for context.
type StudyReference struct {
	Citation     string  `json:"citation"`
	TFSeconds    float64 `json:"tensorflow_seconds"`
	TorchSeconds float64 `json:"torch_seconds"`
	Ratio        float64 `json:"ratio_tensorflow_over_torch"`
	Note         string  `json:"note"`
}

func newReport(cfg Config) *Report {
	host, _ := os.Hostname()
	return &Report{
		Schema: ReportSchema, Created: time.Now().UTC().Format(time.RFC3339),
		Config: ReportConfig{Spec: cfg.Spec, Frameworks: cfg.Frameworks, Repeat: cfg.Repeat,
			Preset: cfg.Preset, ParityTolerance: cfg.ParityTolerance, Chosen: presetChoices(cfg)},
		Fairness: []Condition{}, Order: []string{}, Runs: []RunRecord{}, Failures: []Failure{},
		Parity:  Parity{Losses: map[string]float64{}, Differences: differences(cfg.Spec)},
		Summary: map[string]FWSummary{},
		Study: StudyReference{
			Citation:  `"A Comparative Analysis of Deep Learning Frameworks for Image Learning" (Dongshin University), Table 2`,
			TFSeconds: 464, TorchSeconds: 374, Ratio: 464.0 / 374.0,
			Note: "VGG16 transfer learning on lion/tiger/cat photos; Windows 10, i5-10400, TF 2.7.0, PyTorch 1.10.0+cu111; one run each, heads differ, image size/epochs/batch not reported",
		},
		Machine: map[string]string{"cpu": CPUModel(), "cores": strconv.Itoa(runtime.NumCPU()),
			"os": runtime.GOOS + "/" + runtime.GOARCH, "go": runtime.Version(), "host": host},
	}
}

func presetChoices(cfg Config) map[string]string {
	if cfg.Preset != "paper" {
		return nil
	}
	s := cfg.Spec
	return map[string]string{
		"image_size": strconv.Itoa(s.ImageSize) + " (study: not reported; small for 2-core machines, use --image-size 224 for the study's scale)",
		"epochs":     strconv.Itoa(s.Epochs) + " (study: not reported)",
		"batch_size": strconv.Itoa(s.BatchSize) + " (study: not reported)",
		"optimizer":  s.Optimizer + ", lr " + strconv.FormatFloat(s.LR, 'g', -1, 64) + " (study: not reported)",
		"head": fmt.Sprintf("%s in both frameworks, hidden width %d, a new output layer with one unit per class (the study's two sides used different heads: Keras Flatten-Dense-Dropout-Dense, torchvision's classifier with fc6/fc7 kept; fwbench uses one head for both, torchvision's by default because the ImageNet .pth files carry its fc6/fc7; --head keras gives the Keras side)",
			s.Config.Resolved().Head, s.Config.Resolved().Hidden),
		"normalize": s.Normalize + " (follows the weights' origin: torch files imagenet, Keras files caffe, none rescale; the study used rescale 1/255 on the Keras side)",
	}
}

// CPUModel reads the CPU model name from /proc/cpuinfo.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func stat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	med := Quantile(xs, 0.5)
	dev := make([]float64, len(xs))
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, x := range xs {
		dev[i] = math.Abs(x - med)
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	return Stat{Median: med, Min: lo, Max: hi, MAD: Quantile(dev, 0.5), N: len(xs)}
}

func (r *Report) summarise() {
	r.byFW = map[string][]RunRecord{}
	for _, run := range r.Runs {
		if !run.Partial {
			r.byFW[run.Framework] = append(r.byFW[run.Framework], run)
		}
	}
	for fw, runs := range r.byFW {
		get := func(f func(RunRecord) float64) Stat {
			xs := make([]float64, len(runs))
			for i, run := range runs {
				xs[i] = f(run)
			}
			return stat(xs)
		}
		s := FWSummary{Runs: len(runs), Version: runs[0].FrameworkVersion, Device: runs[0].Device, Threads: runs[0].Threads,
			TotalSeconds:     get(func(x RunRecord) float64 { return x.TotalSeconds }),
			ImagesPerSecond:  get(func(x RunRecord) float64 { return x.ImagesPerSecond }),
			StepP50:          get(func(x RunRecord) float64 { return x.StepSeconds.P50 }),
			StepP95:          get(func(x RunRecord) float64 { return x.StepSeconds.P95 }),
			DataWaitFraction: get(func(x RunRecord) float64 { return x.DataWaitFraction }),
			PeakRSSBytes:     get(func(x RunRecord) float64 { return float64(x.PeakRSSBytes) }),
			EpochSeconds:     get(func(x RunRecord) float64 { return meanEpoch(x, func(e EpochRecord) float64 { return e.Seconds }) }),
			FinalValAccuracy: get(func(x RunRecord) float64 { return lastEpoch(x).ValAccuracy }),
			FinalValLoss:     get(func(x RunRecord) float64 { return lastEpoch(x).ValLoss }),
		}
		var ttt []float64
		for _, run := range runs {
			if run.TimeToTargetSeconds != nil {
				ttt = append(ttt, *run.TimeToTargetSeconds)
			}
		}
		if len(ttt) > 0 {
			st := stat(ttt)
			s.TimeToTarget = &st
		}
		s.TimeBreakdown = breakdownStats(runs)
		s.PeakGPUBytes = optionalStat(runs, func(x RunRecord) *int64 { return x.PeakGPUBytes })
		s.PeakGPUAllocatorBytes = optionalStat(runs, func(x RunRecord) *int64 { return x.PeakGPUAllocatorBytes })
		r.Summary[fw] = s
	}
	r.Ratio = nil
	if fws := r.frameworks(); len(fws) == 2 {
		a, b := r.byFW[fws[0]], r.byFW[fws[1]]
		if len(a) > 0 && len(b) > 0 {
			var ratios []float64
			for i := 0; i < len(a) && i < len(b); i++ {
				ratios = append(ratios, a[i].TotalSeconds/b[i].TotalSeconds)
			}
			r.Ratio = &Ratio{Frameworks: fws, TotalSeconds: stat(ratios),
				Median: r.Summary[fws[0]].TotalSeconds.Median / r.Summary[fws[1]].TotalSeconds.Median}
		}
	}
}

func lastEpoch(r RunRecord) EpochRecord {
	if len(r.Epochs) == 0 {
		return EpochRecord{}
	}
	return r.Epochs[len(r.Epochs)-1]
}

func meanEpoch(r RunRecord, f func(EpochRecord) float64) float64 {
	if len(r.Epochs) == 0 {
		return 0
	}
	var s float64
	for _, e := range r.Epochs {
		s += f(e)
	}
	return s / float64(len(r.Epochs))
}

// fairness checks each fairness condition against the evidence the runs carry: every row is
// computed from the run records (and the parent's own configuration as the reference), so a
// run that deviated makes its row fail. A failed row makes Run return ErrUnfair.
func fairness(cfg Config, r *Report) []Condition {
	runs := r.Runs
	var cs []Condition
	add := func(name string, held bool, evidence string) {
		cs = append(cs, Condition{Name: name, Held: held && len(runs) > 0, Evidence: evidence})
	}
	// distinct lists the distinct values of f over the runs, sorted.
	distinct := func(f func(RunRecord) string) []string {
		vals := map[string]bool{}
		for _, run := range runs {
			vals[f(run)] = true
		}
		list := make([]string, 0, len(vals))
		for v := range vals {
			list = append(list, v)
		}
		sort.Strings(list)
		return list
	}
	one := func(vals []string) bool { return len(vals) == 1 && vals[0] != "" }

	v := distinct(func(x RunRecord) string { return x.FirstBatchSHA256 })
	add("same data split, batch order and augmentation", one(v),
		"every run's first batch (dataset.Batch.Hash, after augmentation and normalisation) has sha256 "+strings.Join(v, " | ")+
			"; split, order and augmentation derive from the recipe's seed, which the recipe row compares")

	files := distinct(func(x RunRecord) string { return x.InitialWeightsSHA256 })
	loaded := distinct(func(x RunRecord) string { return x.LoadedWeightsSHA256 })
	want := r.Config.InitialWeightsTensorsSHA256
	add("same initial weights", one(files) && files[0] == r.Config.InitialWeightsSHA256 && one(loaded) && loaded[0] == want,
		fmt.Sprintf("shared file %s (sha256 %s, tensors %s); runs loaded files %s and read back from the framework tensors %s",
			filepath.Base(r.Config.InitialWeights), r.Config.InitialWeightsSHA256, want, strings.Join(files, " | "), strings.Join(loaded, " | ")))

	ref := cfg.Spec.Recipe(cfg.Spec.threads())
	var diffs []string
	for _, run := range runs {
		for _, k := range sortedKeys(ref, run.Recipe) {
			if run.Recipe[k] != ref[k] {
				diffs = append(diffs, fmt.Sprintf("%s run %d: %s=%q, want %q", run.Framework, run.PID, k, run.Recipe[k], ref[k]))
			}
		}
	}
	ev := "every run reported the recipe " + recipeString(ref)
	if len(diffs) > 0 {
		ev = "runs differ from the recipe: " + strings.Join(diffs, "; ")
	}
	add("same architecture, loss, optimizer, hyper-parameters and threads", len(diffs) == 0, ev)

	pids := map[int]bool{}
	for _, run := range runs {
		pids[run.PID] = true
	}
	add("each run in its own process", len(pids) == len(runs) && !pids[0] && !pids[os.Getpid()],
		fmt.Sprintf("%d runs reported %d distinct process IDs, none of them the parent's", len(runs), len(pids)))

	// The runs that finished, in the order they finished, must follow the alternation; a child
	// that failed without a record leaves a gap, one per failure.
	var got, exp []string
	for _, run := range runs {
		got = append(got, run.Framework)
	}
	for rep := 0; len(exp) < len(got)+len(r.Failures); rep++ {
		exp = append(exp, order(cfg.Frameworks, rep)...)
	}
	gaps, j := 0, 0
	for _, fw := range got {
		for j < len(exp) && exp[j] != fw {
			j, gaps = j+1, gaps+1
		}
		j++
	}
	ordered := j <= len(exp) && gaps <= len(r.Failures)
	add("order alternates across repeats", ordered, fmt.Sprintf("runs finished in the order %s; alternation wants %s (%d failed run(s) may leave gaps)",
		strings.Join(got, " "), strings.Join(exp[:min(len(exp), len(got)+len(r.Failures))], " "), len(r.Failures)))

	var warm []string
	warmOK := true
	for _, run := range runs {
		timed := run.TimedSteps == len(run.StepTimesSeconds)
		if run.ResumedFrom == nil {
			timed = timed && run.TimedSteps == max(0, len(run.StepLosses)-cfg.Spec.WarmupSteps)
		}
		warmOK = warmOK && run.WarmupSteps == cfg.Spec.WarmupSteps && timed
		warm = append(warm, fmt.Sprintf("%s: %d warm-up, %d of %d steps timed", run.Framework, run.WarmupSteps, len(run.StepTimesSeconds), len(run.StepLosses)))
	}
	add("warm-up left out of throughput", warmOK, fmt.Sprintf("want the first %d steps untimed; %s", cfg.Spec.WarmupSteps, strings.Join(warm, "; ")))

	var syncs []string
	syncOK := true
	for _, run := range runs {
		syncOK = syncOK && run.SyncedTimerReads == len(run.StepLosses)
		syncs = append(syncs, fmt.Sprintf("%s: %d of %d", run.Framework, run.SyncedTimerReads, len(run.StepLosses)))
	}
	what := "CPU run (Trainer.Sync is a no-op there, and is still called)"
	if cfg.Spec.GPU() {
		what = "CUDA run (torch: torch::cuda::synchronize; TF: Session.Run returns after the device work)"
	}
	add("GPU synchronised before every timer read", syncOK, what+"; timer reads after a successful Trainer.Sync, per run: "+strings.Join(syncs, "; "))
	return append(cs, settingsCondition(cfg.Spec, runs))
}

// ErrUnfair is returned by Run when a fairness condition did not hold; the report is written.
var ErrUnfair = errors.New("compare: a fairness condition did not hold")

// unfair returns an error naming every failed condition, or nil.
func unfair(cs []Condition) error {
	var bad []string
	for _, c := range cs {
		if !c.Held {
			bad = append(bad, fmt.Sprintf("%q (%s)", c.Name, c.Evidence))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrUnfair, strings.Join(bad, "; "))
}

func sortedKeys(ms ...map[string]string) []string {
	seen := map[string]bool{}
	var keys []string
	for _, m := range ms {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

func recipeString(m map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, " ")
}

// Write writes report.json, report.csv, report.md and the charts (PNG and SVG) to dir.
func (r *Report) Write(dir string) error {
	if r.byFW == nil {
		r.summarise()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("compare: report: %w", err)
	}
	files := map[string]func(io.Writer) error{
		"report.json": func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(r)
		},
		"report.csv": r.writeCSV,
		"report.md": func(w io.Writer) error {
			_, err := io.WriteString(w, r.Markdown())
			return err
		},
	}
	for name, write := range files {
		if err := weights.WriteFileAtomic(filepath.Join(dir, name), write); err != nil {
			return fmt.Errorf("compare: report: %w", err)
		}
	}
	if err := r.writeCharts(dir); err != nil {
		return fmt.Errorf("compare: charts: %w", err)
	}
	return nil
}

func (r *Report) writeCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write([]string{"framework", "repeat_index", "framework_version", "device", "threads", "total_seconds",
		"images_per_second", "step_p50_seconds", "step_p95_seconds", "data_wait_fraction", "peak_rss_bytes",
		"initial_loss", "final_train_loss", "final_val_loss", "final_val_accuracy", "partial"})
	count := map[string]int{}
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', 8, 64) }
	for _, run := range r.Runs {
		count[run.Framework]++
		last := lastEpoch(run)
		cw.Write([]string{run.Framework, strconv.Itoa(count[run.Framework]), run.FrameworkVersion, run.Device,
			strconv.Itoa(run.Threads), f(run.TotalSeconds), f(run.ImagesPerSecond), f(run.StepSeconds.P50),
			f(run.StepSeconds.P95), f(run.DataWaitFraction), strconv.FormatInt(run.PeakRSSBytes, 10),
			f(run.InitialLoss), f(last.TrainLoss), f(last.ValLoss), f(last.ValAccuracy), strconv.FormatBool(run.Partial)})
	}
	cw.Flush()
	return cw.Error()
}

// Table is the terminal table: the study's Table 2 (total training time per framework)
// followed by everything else that was measured.
func (r *Report) Table() string {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fws := r.frameworks()
	fmt.Fprintf(tw, "\t%s\t\n", strings.Join(fws, "\t"))
	rowFW := func(name string, f func(fw string, s FWSummary) string) {
		cells := []string{}
		for _, fw := range fws {
			cells = append(cells, f(fw, r.Summary[fw]))
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", name, strings.Join(cells, "\t"))
	}
	row := func(name string, f func(FWSummary) string) {
		rowFW(name, func(_ string, s FWSummary) string { return f(s) })
	}
	spread := func(s Stat, unit string, scale float64, prec int) string {
		if s.N == 0 {
			return "-"
		}
		return fmt.Sprintf("%.*f%s [%.*f–%.*f]", prec, s.Median*scale, unit, prec, s.Min*scale, prec, s.Max*scale)
	}
	row("training time (study's Table 2)", func(s FWSummary) string { return fmtDuration(s.TotalSeconds.Median) })
	row("total seconds, median [min–max]", func(s FWSummary) string { return spread(s.TotalSeconds, "", 1, 1) })
	row("seconds per epoch", func(s FWSummary) string { return spread(s.EpochSeconds, "", 1, 2) })
	row("images/s after warm-up", func(s FWSummary) string { return spread(s.ImagesPerSecond, "", 1, 1) })
	row("step p50 (ms)", func(s FWSummary) string { return spread(s.StepP50, "", 1000, 1) })
	row("step p95 (ms)", func(s FWSummary) string { return spread(s.StepP95, "", 1000, 1) })
	row("data wait share of step", func(s FWSummary) string { return spread(s.DataWaitFraction, "%", 100, 2) })
	row("final val accuracy", func(s FWSummary) string { return spread(s.FinalValAccuracy, "%", 100, 1) })
	row("final val loss", func(s FWSummary) string { return spread(s.FinalValLoss, "", 1, 4) })
	row("peak RSS (MiB)", func(s FWSummary) string { return spread(s.PeakRSSBytes, "", 1.0/(1<<20), 0) })
	if r.anySummary(func(s FWSummary) bool { return s.PeakGPUBytes != nil || s.PeakGPUAllocatorBytes != nil }) {
		opt := func(st *Stat) string {
			if st == nil {
				return "-"
			}
			return spread(*st, "", 1.0/(1<<20), 0)
		}
		row("peak GPU, NVML (MiB)", func(s FWSummary) string { return opt(s.PeakGPUBytes) })
		row("peak GPU, allocator (MiB)", func(s FWSummary) string { return opt(s.PeakGPUAllocatorBytes) })
	}
	if r.anySummary(func(s FWSummary) bool { return len(s.TimeBreakdown) > 0 }) {
		for _, g := range breakdownRows {
			row(g.label, func(s FWSummary) string { return g.cell(s.TimeBreakdown) })
		}
	}
	rowFW("precision / memory format", func(fw string, _ FWSummary) string {
		if runs := r.byFW[fw]; len(runs) > 0 {
			return runs[0].Settings[recipe.SettingPrecision] + " / " + runs[0].Settings[recipe.SettingMemoryFormat]
		}
		return "-"
	})
	rowFW("first-batch loss (parity)", func(fw string, _ FWSummary) string { return fmt.Sprintf("%.6f", r.Parity.Losses[fw]) })
	row("version", func(s FWSummary) string { return s.Version })
	row("device / threads", func(s FWSummary) string { return fmt.Sprintf("%s / %d", s.Device, s.Threads) })
	row("complete runs", func(s FWSummary) string { return strconv.Itoa(s.Runs) })
	if len(r.Scaling) > 0 {
		n := r.Scaling[0].WorldSize
		sc := func(fw string) *Scaling {
			for i := range r.Scaling {
				if r.Scaling[i].Framework == fw {
					return &r.Scaling[i]
				}
			}
			return nil
		}
		rowFW(fmt.Sprintf("images/s at %d processes", n), func(fw string, _ FWSummary) string {
			if x := sc(fw); x != nil {
				return spread(x.ImagesPSN, "", 1, 1)
			}
			return "-"
		})
		rowFW(fmt.Sprintf("scaling efficiency at %d processes", n), func(fw string, _ FWSummary) string {
			if x := sc(fw); x != nil {
				return spread(x.Efficiency, "%", 100, 1) + " " + x.Backend
			}
			return "-"
		})
	}
	tw.Flush()
	out := b.String()
	var tail strings.Builder
	fmt.Fprintf(&tail, "\nparity: %s — %s\n", passFail(r.Parity.Passed), r.Parity.Message)
	if tp := r.Parity.Trajectory; tp != nil {
		fmt.Fprintf(&tail, "trajectory: %s — step losses of %s over %d steps differ by at most %.3g relative (tolerance %.3g)",
			passFail(tp.Passed), strings.Join(tp.Frameworks, " and "), tp.Steps, tp.MaxRelDiff, tp.Tolerance)
		if !tp.Passed {
			fmt.Fprintf(&tail, "; first beyond it at step %d (rounding differences grow over training; this does not stop the comparison, and report.md names what still differs)", tp.FirstStepBeyond)
		}
		tail.WriteString("\n")
	}
	if miss := r.Config.InitialWeightsProvenance.NotFromFile(); len(miss) > 0 {
		fmt.Fprintf(&tail, "WARNING: %d tensor(s) did not come from the weights file and were seeded (--allow-partial-weights): %s\n", len(miss), strings.Join(miss, ", "))
	}
	for _, c := range r.Fairness {
		if !c.Held {
			fmt.Fprintf(&tail, "FAIRNESS FAILED: %s — %s\n", c.Name, c.Evidence)
		}
	}
	if r.Ratio != nil {
		fmt.Fprintf(&tail, "%s / %s total time: %.3f (per-repeat ratios %.3f–%.3f, n=%d); the study reported %.2f (464 s / 374 s TensorFlow / PyTorch)\n",
			r.Ratio.Frameworks[0], r.Ratio.Frameworks[1], r.Ratio.Median, r.Ratio.TotalSeconds.Min, r.Ratio.TotalSeconds.Max, r.Ratio.TotalSeconds.N, r.Study.Ratio)
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&tail, "FAILED: %s repeat %d: %s\n", f.Framework, f.Repeat, f.Error)
	}
	if r.Partial {
		tail.WriteString("PARTIAL REPORT: the comparison did not finish\n")
	}
	return out + tail.String()
}

func passFail(ok bool) string {
	if ok {
		return "passed"
	}
	return "FAILED"
}

func fmtDuration(sec float64) string {
	if sec == 0 {
		return "-"
	}
	d := time.Duration(sec * float64(time.Second)).Round(100 * time.Millisecond)
	m := int(d.Minutes())
	return fmt.Sprintf("%d min %04.1f s", m, (d - time.Duration(m)*time.Minute).Seconds())
}

// frameworks returns the report's frameworks, sorted: the order of the table's columns, the
// charts' colours and the ratio.
func (r *Report) frameworks() []string {
	fws := slices.Clone(r.Config.Frameworks)
	slices.Sort(fws)
	return slices.Compact(fws)
}

// Markdown renders the report for people: configuration, fairness, parity, the table.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# fwbench comparison\n\n")
	if r.Partial {
		b.WriteString("**PARTIAL REPORT: the comparison did not finish.**\n\n")
	}
	s := r.Config.Spec
	fmt.Fprintf(&b, "Created %s on %s (%s cores). Model %s (head %s), mode %s, image size %d, batch %d, %s lr %g, %d epochs, %d repeats per framework, seed %d, data `%s`%s.\n\n",
		r.Created, r.Machine["cpu"], r.Machine["cores"], s.Config.Resolved().Model, s.Config.Resolved().Head, s.Mode, s.ImageSize, s.BatchSize, s.Optimizer, s.LR,
		s.Epochs, r.Config.Repeat, s.Seed, s.Data, map[bool]string{true: " (built-in synthetic set)", false: ""}[r.Config.SyntheticData])
	b.WriteString("## Results\n\n```\n" + r.Table() + "```\n\n")
	b.WriteString("![loss](loss.png) ![accuracy](accuracy.png) ![images/s](throughput.png) ![step time](steptime.png)\n\n")
	b.WriteString("## Fairness\n\n| condition | held | evidence |\n|---|---|---|\n")
	for _, c := range r.Fairness {
		fmt.Fprintf(&b, "| %s | %v | %s |\n", c.Name, c.Held, strings.ReplaceAll(c.Evidence, "|", "/"))
	}
	b.WriteString("\n" + r.settingsMarkdown())
	b.WriteString(r.breakdownMarkdown())
	b.WriteString(r.scalingMarkdown())
	fmt.Fprintf(&b, "## Parity\n\n%s: %s\n\n", passFail(r.Parity.Passed), r.Parity.Message)
	if tp := r.Parity.Trajectory; tp != nil {
		fmt.Fprintf(&b, "Trajectory %s: the per-step training losses of %s over %d steps differ by at most %.3g relative (tolerance %.3g, first step beyond it: %d).\n\n",
			passFail(tp.Passed), strings.Join(tp.Frameworks, " and "), tp.Steps, tp.MaxRelDiff, tp.Tolerance, tp.FirstStepBeyond)
	}
	if len(r.Parity.Differences) > 0 {
		b.WriteString("What still differs between the two computations:\n\n")
		for _, d := range r.Parity.Differences {
			fmt.Fprintf(&b, "- %s\n", d)
		}
		b.WriteString("\n")
	}
	p := r.Config.InitialWeightsProvenance
	fmt.Fprintf(&b, "## Initial weights\n\nHead `%s`, normalisation `%s`. From the weights file (`%s`): %d tensors. ", s.Config.Resolved().Head, s.Normalize, s.Weights, len(p.FromFile))
	if s.Weights == "" {
		fmt.Fprintf(&b, "No weights file: %d tensors seeded (seed %d). ", len(p.Seeded), s.Seed)
	}
	if len(p.Reinitialised) > 0 {
		fmt.Fprintf(&b, "Replaced on purpose by the mode (seeded): %s. ", strings.Join(p.Reinitialised, ", "))
	}
	if len(p.Ignored) > 0 {
		fmt.Fprintf(&b, "Ignored from the file (a head the mode replaces): %s. ", strings.Join(p.Ignored, ", "))
	}
	if miss := p.NotFromFile(); len(miss) > 0 {
		fmt.Fprintf(&b, "**Not from the file, seeded instead (--allow-partial-weights): %s.** ", strings.Join(miss, ", "))
	}
	if len(p.Unexpected) > 0 {
		fmt.Fprintf(&b, "**In the file but not in the model (ignored): %s.** ", strings.Join(p.Unexpected, ", "))
	}
	b.WriteString("\n\n")
	if len(r.Config.Chosen) > 0 {
		b.WriteString("## Settings the study did not report (chosen by fwbench)\n\n")
		keys := make([]string, 0, len(r.Config.Chosen))
		for k := range r.Config.Chosen {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "- %s: %s\n", k, r.Config.Chosen[k])
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "## The study, for context\n\n%s: TensorFlow %.0f s, PyTorch %.0f s (ratio %.2f). %s.\n",
		r.Study.Citation, r.Study.TFSeconds, r.Study.TorchSeconds, r.Study.Ratio, r.Study.Note)
	header := false
	for _, run := range r.Runs {
		if n := run.Dataset.SkippedCount; n > 0 {
			if !header {
				b.WriteString("\n## Skipped data files\n\n")
				header = true
			}
			fmt.Fprintf(&b, "- %s run (pid %d): skipped %d data file(s) (paths and reasons in its run record)\n", run.Framework, run.PID, n)
		}
	}
	if len(r.Failures) > 0 {
		b.WriteString("\n## Failures\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "### %s, repeat %d\n\n%s (exit %d %s)\n\n```\n%s```\n\n", f.Framework, f.Repeat, f.Error, f.ExitCode, f.Signal, f.StderrTail)
		}
	}
	return b.String()
}

// scalingMarkdown is report.md's data-parallel section (compare --nproc), empty without one.
func (r *Report) scalingMarkdown() string {
	if len(r.Scaling) == 0 {
		return ""
	}
	var b strings.Builder
	n := r.Scaling[0].WorldSize
	fmt.Fprintf(&b, "## Data-parallel scaling\n\nEach repeat ran every framework in one process and then in %d local processes on the same global batch "+
		"(%d images; each process trains on %d of them, with the single-process run's threads shared out among the processes, and the gradients are averaged every step by the framework's own distributed runtime). "+
		"Scaling efficiency is images/s at %d processes over %d × images/s in one process, per repeat. "+
		"The processes of a comparison share one machine's cores, so perfect scaling here is 1/N (%.0f%%: the same cores do the same work, in N processes); "+
		"the figure then measures what the data-parallel machinery costs, and across machines or GPUs the same definition measures scaling. "+
		"BatchNorm uses each process's own batch statistics (torch DDP's default), so a model with BatchNorm does not compute exactly the single-process step.\n\n",
		n, r.Config.Spec.BatchSize, r.Config.Spec.BatchSize/max(n, 1), n, n, 100/float64(max(n, 1)))
	b.WriteString("| framework | backend | pairs | images/s, 1 process | images/s, N processes | efficiency | all-reduce wait per step |\n|---|---|---|---|---|---|---|\n")
	for _, x := range r.Scaling {
		comm := "not measured"
		if x.CommSecondsPerStep != nil {
			comm = fmt.Sprintf("%.1f ms", 1000**x.CommSecondsPerStep)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %.1f [%.1f–%.1f] | %.1f [%.1f–%.1f] | %.1f%% [%.1f–%.1f] | %s |\n", x.Framework, x.Backend, x.Pairs,
			x.ImagesPS1.Median, x.ImagesPS1.Min, x.ImagesPS1.Max, x.ImagesPSN.Median, x.ImagesPSN.Min, x.ImagesPSN.Max,
			100*x.Efficiency.Median, 100*x.Efficiency.Min, 100*x.Efficiency.Max, comm)
	}
	b.WriteString("\n")
	return b.String()
}
