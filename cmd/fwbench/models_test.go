package main

import (
	"path/filepath"
	"testing"
)

// TestCompareResNet18 runs `fwbench compare --model resnet18` on the built-in set at 32 px
// (the acceptance run, cut to one repeat of two steps): both frameworks train the
// residual network from the same weights, and parity (first-batch loss and logits within
// 1e-3) passes. The other models (resnet50, mobilenet_v2) take the same path; the drivers'
// model tests check their parity against torchvision.
func TestCompareResNet18(t *testing.T) {
	out := t.TempDir()
	stdout, stderr, code := runCLI(t, "compare", "--model", "resnet18", "--image-size", "32", "--batch-size", "8",
		"--epochs", "1", "--steps-per-epoch", "2", "--repeat", "1", "--out", out, "--quiet")
	if code != 0 {
		t.Fatalf("compare --model resnet18: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	r := readReport(t, out)
	if !r.Parity.Passed || r.Parity.Logits == nil || !r.Parity.Logits.Passed {
		t.Errorf("parity: got %+v, want passed (losses and logits)", r.Parity)
	}
	if len(r.Runs) != 2 {
		t.Fatalf("runs: got %d, want one per framework", len(r.Runs))
	}
	for _, run := range r.Runs {
		if run.Model != "resnet18" || run.Head != "torchvision" || run.Recipe["model"] != "resnet18" || run.Recipe["hidden"] != "0" {
			t.Errorf("%s run: got model %q head %q recipe model %q hidden %q, want resnet18, torchvision, resnet18, 0",
				run.Framework, run.Model, run.Head, run.Recipe["model"], run.Recipe["hidden"])
		}
	}
	if !r.Config.SyntheticData || filepath.Base(r.Config.InitialWeights) != "initial_weights.safetensors" {
		t.Errorf("config: got synthetic %v, weights %q, want the built-in set and the shared file", r.Config.SyntheticData, r.Config.InitialWeights)
	}
	for _, c := range r.Fairness {
		if !c.Held {
			t.Errorf("fairness condition %q did not hold: %s", c.Name, c.Evidence)
		}
	}
}
