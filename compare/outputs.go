package compare

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/fwbench/fwbench/weights"
)

// ReportFiles are the files Report.Write replaces in the report folder.
var ReportFiles = []string{"report.json", "report.csv", "report.md",
	"loss.png", "loss.svg", "accuracy.png", "accuracy.svg", "throughput.png", "throughput.svg", "steptime.png", "steptime.svg"}

// CheckOutput checks, before any training, that an output file (--json, --save-weights,
// an export) can be written where the user asked: weights.CheckOutputFile's rules (a missing
// path or a regular file, in an existing folder; never a symbolic link, directory, FIFO or
// device node, and the folder is never created). A refusal wraps ErrInvalid (exit 2).
func CheckOutput(path string) error {
	if err := weights.CheckOutputFile(path); err != nil {
		return fmt.Errorf("compare: %w: %v", ErrInvalid, err)
	}
	return nil
}

// ResumeRecipe is what a checkpoint records of the run that wrote it and what --resume
// compares: Spec.Recipe with the threads resolved, the normalisation resolved and without "epochs" (a
// resumed run may train to another count).
func ResumeRecipe(s Spec) (map[string]string, error) {
	norm, err := ResolveNormalize(s)
	if err != nil {
		return nil, err
	}
	s.Normalize = norm
	r := s.Recipe(s.threads())
	delete(r, "epochs")
	return r, nil
}

// CheckResume refuses, with ErrInvalid, a --resume checkpoint made under another recipe
// (seed, mode, learning rate, model, head, ...: ResumeRecipe), naming each differing key,
// and a checkpoint that records no recipe (written before fwbench recorded one).
func CheckResume(s Spec) error {
	if s.Resume == "" {
		return nil
	}
	meta, err := weights.ReadCheckpointMeta(s.Resume)
	if err != nil {
		return fmt.Errorf("compare: %w: --resume %s: %v", ErrInvalid, s.Resume, err)
	}
	if meta.Recipe == nil {
		return fmt.Errorf("compare: %w: --resume %s: the checkpoint records no recipe, so it cannot be checked against this run's (it was written by an older fwbench)", ErrInvalid, s.Resume)
	}
	want, err := ResumeRecipe(s)
	if err != nil {
		return err
	}
	if meta.RecipeSHA256 == weights.RecipeSHA256(want) {
		return nil
	}
	var diffs []string
	for _, k := range unionKeys(meta.Recipe, want) {
		got, ok1 := meta.Recipe[k]
		now, ok2 := want[k]
		if got != now || ok1 != ok2 {
			diffs = append(diffs, fmt.Sprintf("%s (checkpoint %q, this run %q)", k, got, now))
		}
	}
	if len(diffs) == 0 { // the hash differs but not the map: the file was edited
		return fmt.Errorf("compare: %w: --resume %s: the recipe's hash %s does not match its recipe", ErrInvalid, s.Resume, meta.RecipeSHA256)
	}
	return fmt.Errorf("compare: %w: --resume %s was made with another recipe: %s", ErrInvalid, s.Resume, strings.Join(diffs, ", "))
}

func unionKeys(a, b map[string]string) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// PrepareOutputs is everything a training run checks before it starts: each output file
// (CheckOutput; "" is skipped), the --resume recipe (CheckResume), and the checkpoint folder,
// which it creates (checkpoint folders are fwbench's own, made with their parents) and in
// which it records this run's recipe for every checkpoint saved there. Errors wrap ErrInvalid
// except a failure to write the recipe.
func PrepareOutputs(s Spec, files ...string) error {
	for _, f := range files {
		if f == "" {
			continue
		}
		if err := CheckOutput(f); err != nil {
			return err
		}
	}
	if err := CheckResume(s); err != nil {
		return err
	}
	if s.Checkpoint == "" {
		return nil
	}
	if err := CheckWritable(s.Checkpoint); err != nil {
		return err
	}
	r, err := ResumeRecipe(s)
	if err != nil {
		return err
	}
	if err := weights.WriteCheckpointRecipe(s.Checkpoint, r); err != nil {
		if errors.Is(err, weights.ErrDestination) {
			return fmt.Errorf("compare: %w: --checkpoint %s: %v", ErrInvalid, s.Checkpoint, err)
		}
		return fmt.Errorf("compare: %w", err)
	}
	return nil
}
