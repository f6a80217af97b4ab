package compare

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fwbench/fwbench/recipe"
)

// Default tolerances per precision, used where Config leaves them 0. Each is
// the largest relative difference that passes: of the first-batch losses and
// logits (parity), and of the per-step training losses (trajectory).
//
// fp32 and tf32: float32 VGG through different kernels agrees to ~1e-6
// (tfrun's parity test); 1e-3 leaves room for deeper models and more classes.
// TF32 rounds products to a 10-bit significand (unit roundoff 2^-11 ≈ 4.9e-4)
// on both sides: 1e-2 is 20 units, from the equation alone (no GPU has run it
// yet). bf16 and fp16 are about 4× the largest spread measured between the two
// frameworks (docs/benchmarks.md, "Parity per precision": vgg16_bn at 32 px ×
// 8, seeds 1–3, 4 steps): bf16 logits 1.30e-2, step losses 1.81e-3; fp16
// logits 1.08e-3, step losses 1.15e-3.
var defaultTolerances = map[string][2]float64{
	recipe.FP32: {1e-3, 1e-3},
	recipe.TF32: {1e-2, 1e-2},
	recipe.BF16: {5e-2, 1e-2},
	recipe.FP16: {5e-3, 5e-3},
}

// DefaultTolerances returns the parity and trajectory tolerances for a
// precision ("" means fp32); an unknown precision gets fp32's.
func DefaultTolerances(precision string) (parity, trajectory float64) {
	t, ok := defaultTolerances[precision]
	if !ok {
		t = defaultTolerances[recipe.FP32]
	}
	return t[0], t[1]
}

// oneFramework notes the settings only some frameworks have.
var oneFramework = map[string]string{
	recipe.SettingXLA:          "TensorFlow only: libtorch has no C++ counterpart (torch.compile is Python-only)",
	recipe.SettingMemoryFormat: "not compared: torch's layout is a switch (channels_last), TensorFlow's is the layout tfrun builds",
}

// cpuNotes notes the settings that mean nothing on the CPU.
var cpuNotes = map[string]string{
	recipe.SettingCUDNNBenchmark: "not compared on the CPU: no cuDNN there",
	recipe.SettingTF32:           "TF32 exists on CUDA only",
}

// wantSettings is what each compared setting must read in every run of spec:
// the values a framework may report for it.
func wantSettings(spec Spec) map[string][]string {
	r := spec.Config.Resolved()
	b := strconv.FormatBool
	w := map[string][]string{
		recipe.SettingPrecision:      {r.Precision},
		recipe.SettingTF32:           {b(r.Precision == recipe.TF32)},
		recipe.SettingDeterministic:  {b(r.Deterministic)},
		recipe.SettingCUDNNBenchmark: {b(r.CUDNNBenchmark)},
		recipe.SettingXLA:            {b(r.XLA), recipe.NotApplicable},
	}
	if !spec.GPU() {
		// No cuDNN on the CPU: the switch changes nothing there, and TF reports that it
		// autotunes nothing.
		delete(w, recipe.SettingCUDNNBenchmark)
	}
	return w
}

// settingsCondition is the fairness row for the settings that decide speed:
// every run must report each recipe.SettingKeys key, its top-level precision
// must be the recipe's, and each compared setting must read as the recipe
// asks (TF32 on only for tf32; xla may read n/a for a framework without it).
func settingsCondition(spec Spec, runs []RunRecord) Condition {
	want := wantSettings(spec)
	var bad []string
	for _, run := range runs {
		who := fmt.Sprintf("%s run %d", run.Framework, run.PID)
		if run.Precision != spec.Config.Resolved().Precision {
			bad = append(bad, fmt.Sprintf("%s: precision %q, want %q", who, run.Precision, spec.Config.Resolved().Precision))
		}
		for _, k := range recipe.SettingKeys() {
			v, ok := run.Settings[k]
			switch {
			case !ok:
				bad = append(bad, fmt.Sprintf("%s: no %s setting", who, k))
			case want[k] != nil && !slices.Contains(want[k], v):
				bad = append(bad, fmt.Sprintf("%s: %s=%q, want %s", who, k, v, strings.Join(want[k], " or ")))
			}
		}
	}
	ev := "every run reported " + settingsSummary(runs)
	if len(bad) > 0 {
		ev = "runs differ from the recipe's settings: " + strings.Join(bad, "; ")
	}
	return Condition{Name: "same precision and speed settings", Held: len(bad) == 0 && len(runs) > 0, Evidence: ev}
}

// settingsSummary lists each setting's values per framework, from the first run of each.
func settingsSummary(runs []RunRecord) string {
	var parts []string
	for _, k := range recipe.SettingKeys() {
		var vals []string
		seen := map[string]bool{}
		for _, run := range runs {
			if !seen[run.Framework] {
				seen[run.Framework] = true
				vals = append(vals, run.Framework+"="+run.Settings[k])
			}
		}
		parts = append(parts, k+" ("+strings.Join(vals, ", ")+")")
	}
	return strings.Join(parts, "; ")
}

// settingsMarkdown renders the settings that decide speed, one row per key and
// one column per framework, from each framework's first run.
func (r *Report) settingsMarkdown() string {
	fws := r.frameworks()
	first := map[string]RunRecord{}
	for _, run := range append(slices.Clone(r.parityRuns), r.Runs...) {
		if _, ok := first[run.Framework]; !ok {
			first[run.Framework] = run
		}
	}
	var b strings.Builder
	b.WriteString("## Settings that decide speed\n\n| setting | " + strings.Join(fws, " | ") + " | note |\n|---|" + strings.Repeat("---|", len(fws)) + "---|\n")
	for _, k := range recipe.SettingKeys() {
		cells := []string{}
		for _, fw := range fws {
			v, ok := first[fw].Settings[k]
			if !ok {
				v = "(not reported)"
			}
			cells = append(cells, v)
		}
		note := oneFramework[k]
		if n := cpuNotes[k]; n != "" && !r.Config.Spec.GPU() {
			note = n
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", k, strings.Join(cells, " | "), note)
	}
	b.WriteString("\nThe fairness row \"same precision and speed settings\" compares them with the recipe (docs/design.md, \"Settings that decide speed\").\n\n")
	return b.String()
}
