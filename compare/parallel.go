package compare

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/fwbench/fwbench/recipe"
)

// Group is what a rank of a data-parallel run needs of its group (the CLI adapts
// dist.Group to it): its place, the placement its driver joins with, an equality check across
// ranks and the per-step exchange that keeps the ranks in lock-step.
type Group interface {
	Rank() int
	WorldSize() int
	// Parallel is the placement handed to Framework.NewParallel.
	Parallel() recipe.Parallel
	// Check fails unless every rank passed the same value under name.
	Check(ctx context.Context, name, value string) error
	// Step sums v over the ranks (Stop: any rank's); it returns when every rank called it.
	Step(ctx context.Context, v StepValues) (StepValues, error)
}

// StepValues is one rank's share of a training step (Group.Step): the sum of its images'
// losses, its top-1 hits and its image count; Stop asks every rank to stop before the next
// step.
type StepValues struct {
	LossSum float64
	Correct int
	Images  int
	Stop    bool
}

// Communicator is implemented by drivers that measure how long their training steps waited
// for the gradient all-reduce of a data-parallel run (the part not overlapped with the
// backward pass), in seconds since they were built.
type Communicator interface {
	CommSeconds() float64
}

// Abandoner is implemented by drivers whose Close waits for the other ranks of a
// data-parallel run: Abandon says the run failed, so Close must not wait (TrainOne calls it
// when a rank's run ends in an error).
type Abandoner interface {
	Abandon()
}

// RecipeHash is the hash every rank of a data-parallel run sends at rendezvous: the
// framework and the recipe it trains with (Spec.Recipe, threads as given), so that ranks
// started with different recipes are refused before any work. Paths are left out: the
// weights are compared by their read-back hash instead (Group.Check).
func RecipeHash(s Spec) string {
	m := s.Recipe(s.threads())
	m["framework"] = s.Framework
	b, _ := json.Marshal(m) // map keys are sorted: the same recipe, the same bytes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// CheckParallel refuses a Spec that cannot run on n data-parallel ranks, before any rank
// starts: the global batch must split evenly (each rank trains on an equal share of it, so
// that averaging the ranks' gradients is the gradient of the whole batch).
func CheckParallel(s Spec, n int) error {
	if n < 1 {
		return fmt.Errorf("compare: %w: --nproc %d: at least 1 process", ErrInvalid, n)
	}
	if n > 1 && s.BatchSize%n != 0 {
		return fmt.Errorf("compare: %w: --batch-size %d is the global batch and must split evenly over %d processes", ErrInvalid, s.BatchSize, n)
	}
	return nil
}

// Scaling is one framework's data-parallel scaling in a comparison: images/s of the runs at
// WorldSize processes against the single-process runs of the same repeats. Efficiency is
// images/s at N divided by N × images/s at 1, per repeat.
type Scaling struct {
	Framework  string `json:"framework"`
	WorldSize  int    `json:"world_size"`
	Backend    string `json:"backend"`
	Pairs      int    `json:"pairs"`
	ImagesPS1  Stat   `json:"images_per_second_1"`
	ImagesPSN  Stat   `json:"images_per_second_n"`
	Efficiency Stat   `json:"efficiency"`
	// CommSecondsPerStep is the median over the N-process runs of their mean all-reduce wait
	// per step, where the driver measures it.
	CommSecondsPerStep *float64 `json:"comm_seconds_per_step,omitempty"`
}

// scaling pairs each framework's complete single-process run of a repeat with its complete
// N-process run of the same repeat (runs[fw][repeat][0] and [1]).
func scaling(fws []string, runs map[string]map[int][2]*RunRecord, n int) []Scaling {
	var out []Scaling
	for _, fw := range fws {
		var ips1, ipsN, eff, comm []float64
		var backend string
		for _, rep := range slices.Sorted(maps.Keys(runs[fw])) {
			a, b := runs[fw][rep][0], runs[fw][rep][1]
			if a == nil || b == nil || a.Partial || b.Partial || a.ImagesPerSecond <= 0 {
				continue
			}
			backend = b.Backend
			ips1 = append(ips1, a.ImagesPerSecond)
			ipsN = append(ipsN, b.ImagesPerSecond)
			eff = append(eff, b.ImagesPerSecond/(float64(n)*a.ImagesPerSecond))
			if b.CommSecondsPerStep != nil {
				comm = append(comm, *b.CommSecondsPerStep)
			}
		}
		if len(eff) == 0 {
			continue
		}
		s := Scaling{Framework: fw, WorldSize: n, Backend: backend, Pairs: len(eff),
			ImagesPS1: stat(ips1), ImagesPSN: stat(ipsN), Efficiency: stat(eff)}
		if len(comm) > 0 {
			m := Quantile(comm, 0.5)
			s.CommSecondsPerStep = &m
		}
		out = append(out, s)
	}
	return out
}
