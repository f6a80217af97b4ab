// Command bare times a Go driver alone: torchrun or tfrun trains on the batches that
// scripts/bench/export wrote, read into memory before the clock starts, exactly as the
// Python reference runs do. Against `fwbench train` (loader goroutines, the training loop
// of package compare) it splits the Go-vs-Python difference into what the driver costs and
// what the rest of the pipeline costs.
//
//	go build -o bare ./scripts/bench/bare
//	bare --framework torch --export DIR --steps 8 --warmup-steps 2 --threads 2 --json run.json
//
// It writes a run record with the fields of `fwbench train --json` and "driver": "go-bare",
// plus the Go GC cycles and stop-the-world pause during the timed steps
// (runtime.MemStats). The initial weights are dropped and a GC is forced before the first
// step, so that the timed steps see the small live heap of a long run.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/weights"
)

type manifest struct {
	Data        string   `json:"data"`
	Model       string   `json:"model"`
	Head        string   `json:"head"` // "" (exports before heads were recorded): the model's default
	Mode        string   `json:"mode"`
	ImageSize   int      `json:"image_size"`
	BatchSize   int      `json:"batch_size"`
	Classes     int      `json:"classes"`
	Hidden      int      `json:"hidden"`
	Seed        int64    `json:"seed"`
	Batches     []string `json:"batches"`
	BatchSHA256 []string `json:"batch_sha256"`
	Weights     string   `json:"weights"`
}

// trainer is what bare uses of torchrun.Trainer and tfrun.Trainer.
type trainer interface {
	compare.Trainer
	compare.Syncer
}

// newTrainer builds the named framework's driver.
func newTrainer(ctx context.Context, framework string, c recipe.Config, init []*weights.Tensor) (trainer, error) {
	switch framework {
	case torchrun.Framework:
		t, err := torchrun.New(ctx, c, init)
		if err != nil {
			return nil, err
		}
		return t, nil
	case tfrun.Framework:
		t, err := tfrun.New(ctx, c, init)
		if err != nil {
			return nil, err
		}
		return t, nil
	}
	return nil, fmt.Errorf("unknown framework %q (want %s or %s)", framework, torchrun.Framework, tfrun.Framework)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		framework = flag.String("framework", "torch", "torch|tensorflow")
		export    = flag.String("export", "", "folder written by scripts/bench/export")
		steps     = flag.Int("steps", 4, "training steps, warm-up included")
		warmup    = flag.Int("warmup-steps", 1, "steps left out of the timings")
		threads   = flag.Int("threads", runtime.NumCPU(), "intra- and inter-op threads")
		lr        = flag.Float64("lr", 0.01, "SGD learning rate")
		momentum  = flag.Float64("momentum", 0.9, "SGD momentum")
		dropout   = flag.Float64("dropout", 0.5, "dropout")
		out       = flag.String("json", "", "write the run record here")
		precision = flag.String("precision", recipe.FP32, strings.Join(recipe.Precisions(), "|")+": as fwbench train --precision")
		chLast    = flag.Bool("channels-last", false, "as fwbench train --channels-last")
		cudnnB    = flag.Bool("cudnn-benchmark", false, "as fwbench train --cudnn-benchmark")
		xla       = flag.Bool("xla", false, "as fwbench train --xla")
		determ    = flag.Bool("deterministic", false, "as fwbench train --deterministic")
	)
	flag.Parse()
	start := time.Now()
	raw, err := os.ReadFile(filepath.Join(*export, "manifest.json"))
	if err != nil {
		return err
	}
	var m manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return err
	}
	if *steps > len(m.Batches) {
		return fmt.Errorf("%d steps wanted, the export holds %d batches", *steps, len(m.Batches))
	}
	batches := make([]*dataset.Batch, *steps)
	for i := range batches {
		b, err := dataset.ReadBatch(filepath.Join(*export, m.Batches[i]))
		if err != nil {
			return err
		}
		if h := b.Hash(); h != m.BatchSHA256[i] {
			return fmt.Errorf("batch %d: sha256 %s, want %s", i, h, m.BatchSHA256[i])
		}
		batches[i] = b
	}
	wpath := filepath.Join(*export, m.Weights)
	init, err := weights.Load(wpath)
	if err != nil {
		return err
	}
	wsum, err := compare.FileSHA256(wpath)
	if err != nil {
		return err
	}
	// The recipe of `fwbench train` for the export: SGD without weight decay, the export's
	// model, classes, seed and mode, on the CPU.
	c := recipe.Default()
	c.Model, c.Head, c.ImageSize, c.Classes, c.Hidden = m.Model, m.Head, m.ImageSize, m.Classes, m.Hidden
	c.Mode, c.Optimizer, c.LR, c.Momentum, c.WeightDecay, c.Nesterov = m.Mode, recipe.SGD, *lr, *momentum, 0, false
	c.Dropout, c.Seed, c.Device, c.Threads, c.InterOpThreads = *dropout, m.Seed, "cpu", *threads, *threads
	c.Precision, c.ChannelsLast, c.CUDNNBenchmark, c.XLA, c.Deterministic = *precision, *chLast, *cudnnB, *xla, *determ
	if err := c.Validate(); err != nil {
		return err
	}
	ctx := context.Background()
	tr, err := newTrainer(ctx, *framework, c, init)
	if err != nil {
		return err
	}
	defer tr.Close()
	init = nil
	initialLoss, _, err := tr.Evaluate(ctx, batches[0])
	if err != nil {
		return err
	}
	runtime.GC()

	var ms0, ms1 runtime.MemStats
	var times, losses []float64
	var flt0 int64
	for i, b := range batches {
		if i == *warmup {
			runtime.ReadMemStats(&ms0)
			flt0 = minorFaults()
		}
		t0 := time.Now()
		loss, _, err := tr.TrainStep(ctx, b)
		if err == nil {
			err = tr.Sync()
		}
		if err != nil {
			return err
		}
		d := time.Since(t0).Seconds()
		losses = append(losses, loss)
		if i >= *warmup {
			times = append(times, d)
		}
		fmt.Fprintf(os.Stderr, "%s step %d/%d: loss %.6f %.3f s\n", *framework, i+1, len(batches), loss, d)
	}
	runtime.ReadMemStats(&ms1)
	faults := float64(minorFaults()-flt0) / float64(max(1, len(times)))

	var sum, lsum float64
	for _, t := range times {
		sum += t
	}
	for _, l := range losses {
		lsum += l
	}
	ips := 0.0
	if sum > 0 {
		ips = float64(len(times)*m.BatchSize) / sum
	}
	info := tr.Info()
	// The driver's settings (recipe.SettingKeys among them, as the framework has them), then bare's own.
	settings := map[string]string{}
	for k, v := range info.Settings {
		settings[k] = v
	}
	for k, v := range map[string]string{"threads": fmt.Sprint(*threads), "interop_threads": fmt.Sprint(*threads),
		"go": runtime.Version(), "GOGC": os.Getenv("GOGC"),
		"TF_ENABLE_ONEDNN_OPTS": os.Getenv("TF_ENABLE_ONEDNN_OPTS"), "args": strings.Join(os.Args[1:], " ")} {
		settings[k] = v
	}
	rec := map[string]any{
		"schema": compare.RunSchema, "driver": "go-bare", "framework": info.Framework, "framework_version": info.Version,
		"device": info.Device, "threads": info.Threads, "model": m.Model, "head": c.Resolved().Head, "mode": m.Mode, "image_size": m.ImageSize,
		"batch_size": m.BatchSize, "optimizer": "sgd", "lr": *lr, "precision": c.Resolved().Precision, "seed": m.Seed, "hidden": m.Hidden,
		"dataset":      map[string]any{"path": m.Data, "classes": m.Classes, "train_images": len(batches) * m.BatchSize, "val_images": 0},
		"initial_loss": initialLoss,
		"epochs": []map[string]any{{"epoch": 1, "train_loss": lsum / float64(len(losses)), "train_accuracy": 0,
			"val_loss": 0, "val_accuracy": 0, "seconds": sum, "images_per_second": ips}},
		"total_seconds": time.Since(start).Seconds(), "warmup_steps": *warmup,
		"step_seconds":      map[string]float64{"p50": compare.Quantile(times, 0.5), "p95": compare.Quantile(times, 0.95)},
		"images_per_second": ips, "data_wait_fraction": 0.0, "peak_rss_bytes": compare.PeakRSS(),
		"step_times_seconds": times, "step_losses": losses, "minor_faults_per_step": faults,
		"first_batch_sha256": m.BatchSHA256[0], "initial_weights_sha256": wsum, "pid": os.Getpid(),
		"go_gc": map[string]any{"cycles_in_timed_steps": ms1.NumGC - ms0.NumGC,
			"pause_ms_in_timed_steps": float64(ms1.PauseTotalNs-ms0.PauseTotalNs) / 1e6,
			"gogc":                    os.Getenv("GOGC"), "gomaxprocs": runtime.GOMAXPROCS(0)},
		"settings": settings,
	}
	fmt.Fprintf(os.Stderr, "%s %s (bare Go driver): initial loss %.6f, step p50 %.3f s, %d GC cycles in the timed steps\n",
		info.Framework, info.Version, initialLoss, compare.Quantile(times, 0.5), ms1.NumGC-ms0.NumGC)
	if *out == "" {
		return nil
	}
	j, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(*out, append(j, '\n'), 0o644)
}

// minorFaults is this process's count of minor page faults so far: each is a page of
// memory touched for the first time (fresh allocations from the kernel).
func minorFaults() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Minflt
}
