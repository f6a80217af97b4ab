package compare

import (
	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/weights"
)

// RunSchema names the run record format written by `fwbench train --json`.
const RunSchema = "fwbench.run/v1"

// RunRecord is one training run of one framework: what `fwbench train --json` writes and what
// a comparison collects from each child process. Field names are part of the schema.
type RunRecord struct {
	Schema           string  `json:"schema"`
	Framework        string  `json:"framework"`
	FrameworkVersion string  `json:"framework_version"`
	Device           string  `json:"device"`
	Threads          int     `json:"threads"`
	Model            string  `json:"model"`
	Head             string  `json:"head,omitempty"` // the model's head, resolved
	Mode             string  `json:"mode"`
	ImageSize        int     `json:"image_size"`
	BatchSize        int     `json:"batch_size"`
	Optimizer        string  `json:"optimizer"`
	LR               float64 `json:"lr"`
	// Precision is the recipe's precision, resolved (recipe.Precisions): fp32, tf32, bf16 or fp16.
	Precision    string        `json:"precision"`
	Seed         int64         `json:"seed"`
	Hidden       int           `json:"hidden"`
	Dataset      DatasetInfo   `json:"dataset"`
	InitialLoss  float64       `json:"initial_loss"`
	Epochs       []EpochRecord `json:"epochs"`
	TotalSeconds float64       `json:"total_seconds"`
	// TimeBreakdownSeconds is where the process's time went, from its start to the record
	// (TimeBreakdown); its parts sum to its total.
	TimeBreakdownSeconds *TimeBreakdown `json:"time_breakdown_seconds,omitempty"`
	WarmupSteps          int            `json:"warmup_steps"`
	StepSeconds          Quantiles      `json:"step_seconds"`
	// ImagesPerSecond is training throughput over all steps after warm-up, data waits included.
	ImagesPerSecond  float64 `json:"images_per_second"`
	DataWaitFraction float64 `json:"data_wait_fraction"`
	PeakRSSBytes     int64   `json:"peak_rss_bytes"`
	// PeakGPUBytes is the process's peak device memory as NVML reports it (sampled during the
	// run), measured the same way for every framework; PeakGPUAllocatorBytes is the framework's
	// own allocator figure where it has one (libtorch's CUDA caching allocator: peak allocated).
	PeakGPUBytes          *int64    `json:"peak_gpu_bytes,omitempty"`
	PeakGPUAllocatorBytes *int64    `json:"peak_gpu_allocator_bytes,omitempty"`
	TimeToTargetSeconds   *float64  `json:"time_to_target_seconds,omitempty"`
	StepTimesSeconds      []float64 `json:"step_times_seconds"`
	Partial               bool      `json:"partial,omitempty"`
	InterruptedAt         *Position `json:"interrupted_at,omitempty"`
	ResumedFrom           *Position `json:"resumed_from,omitempty"`
	// Error is why the run failed, when it did (the record is then Partial too).
	Error string `json:"error,omitempty"`
	// Evidence for the fairness conditions of a comparison.
	FirstBatchSHA256     string `json:"first_batch_sha256,omitempty"`     // dataset.Batch.Hash of epoch 0, batch 0
	InitialWeightsSHA256 string `json:"initial_weights_sha256,omitempty"` // sha256 of the weights file loaded, if any
	PID                  int    `json:"pid,omitempty"`
	// LoadedWeightsSHA256 is weights.CanonicalSHA256 of the parameters read back out of the
	// framework right after loading, in torchvision's layout: what the framework really holds.
	LoadedWeightsSHA256 string `json:"loaded_weights_sha256,omitempty"`
	// WeightsProvenance says which initial tensors came from the weights file and which
	// were seeded (on purpose, or because the file lacked them under --allow-partial-weights).
	WeightsProvenance *weights.Provenance `json:"weights_provenance,omitempty"`
	// Recipe is the configuration this run really used, as the child read it: the evidence
	// the fairness check compares across runs (see Spec.Recipe).
	Recipe map[string]string `json:"recipe,omitempty"`
	// FirstBatchLogits are the logits of epoch 0's first batch before any update (dropout
	// off), row-major [batch, classes]: the logits parity evidence.
	FirstBatchLogits []float32 `json:"first_batch_logits,omitempty"`
	// StepLosses is the training loss of every step, in order (warm-up included).
	StepLosses []float64 `json:"step_losses"`
	// TimedSteps counts the steps whose time is in StepTimesSeconds (all steps after warm-up);
	// SyncedTimerReads counts the timer reads that followed a successful Trainer.Sync.
	TimedSteps       int `json:"timed_steps"`
	SyncedTimerReads int `json:"synced_timer_reads"`
	// WeightsSHA256 is the hash of the final weights file, when the run saved one.
	WeightsSHA256 string `json:"weights_sha256,omitempty"`
	// Settings are the framework's settings that decide speed, as the driver reports them:
	// every recipe.SettingKeys key, on every device, and the driver's others (threads, oneDNN...).
	Settings map[string]string `json:"settings,omitempty"`
	// WorldSize is the number of data-parallel processes that trained the run (1: one
	// process); Rank is the process that wrote the record (rank 0's record is the run's
	// summary: its losses, accuracy and images/s are the global batch's). Backend names the
	// framework's distributed runtime (recipe.BackendGloo, BackendNCCL, BackendGRPC), empty
	// for one process. CommSecondsPerStep is the mean time a training step waited for the
	// gradient all-reduce (the part not overlapped with the backward pass), where the driver
	// measures it (Communicator).
	WorldSize          int      `json:"world_size"`
	Rank               int      `json:"rank"`
	Backend            string   `json:"backend,omitempty"`
	CommSecondsPerStep *float64 `json:"comm_seconds_per_step,omitempty"`
}

// DatasetInfo says what a run trained on.
type DatasetInfo struct {
	Path        string `json:"path"`
	Classes     int    `json:"classes"`
	TrainImages int    `json:"train_images"`
	ValImages   int    `json:"val_images"`
	// SkippedCount counts the data files the run left out (dataset.Dataset.Skipped) and
	// Skipped lists them with the reason, the first MaxSkippedListed in path order: a file
	// is never dropped silently. Under --strict a skip fails the run instead.
	// Cached counts the images decoded and resized once before training (dataset.Loader.Warm,
	// training and validation sets), CacheSeconds how long that took (in the time breakdown's
	// setup); images past the cache's budget are decoded each time they are used.
	Cached       int               `json:"cached_images"`
	CacheSeconds float64           `json:"cache_seconds"`
	SkippedCount int               `json:"skipped_count"`
	Skipped      []dataset.Skipped `json:"skipped"`
}

// MaxSkippedListed bounds DatasetInfo.Skipped; SkippedCount is always the full count.
const MaxSkippedListed = 1000

// EpochRecord holds one epoch's figures. Seconds is the epoch's wall time, validation included.
type EpochRecord struct {
	Epoch           int     `json:"epoch"`
	TrainLoss       float64 `json:"train_loss"`
	TrainAccuracy   float64 `json:"train_accuracy"`
	ValLoss         float64 `json:"val_loss"`
	ValAccuracy     float64 `json:"val_accuracy"`
	Seconds         float64 `json:"seconds"`
	ImagesPerSecond float64 `json:"images_per_second"`
}

// Quantiles of step time in seconds, after warm-up.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
}

// Position is a place in training: the epoch (0-based) and the step within it.
type Position struct {
	Epoch int `json:"epoch"`
	Step  int `json:"step"`
}
