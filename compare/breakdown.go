package compare

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// TimeBreakdown is where a run's wall time went, from the process's start to the run record:
// RunRecord.TimeBreakdownSeconds. Every part is measured by one clock that is read once at
// each boundary and attributes the interval since the previous reading to exactly one part,
// so the parts (start-up aside, which the kernel's process start time gives) sum to Total.
// TotalSeconds, the study's metric (training time), is WarmupSteps + TimedSteps + Evaluation
// + Checkpoints, within the resolution of the clock reads.
type TimeBreakdown struct {
	// Startup is the process's start (the kernel's start time, 10 ms resolution) to the run's
	// first statement: the dynamic loader mapping libtorch or libtensorflow, the libraries'
	// static initialisers, Go's init and the command line.
	Startup float64 `json:"startup"`
	// Setup is validating the recipe, checking the GPU and the outputs, opening the data
	// (making the built-in set the first time) and decoding its images into the loaders'
	// caches (DatasetInfo.CacheSeconds).
	Setup float64 `json:"setup"`
	// LibraryLoad is the first call into the native library (its version; libtorch loads
	// libtorch_cuda.so here).
	LibraryLoad float64 `json:"library_load"`
	// WeightLoad is composing the initial tensors: reading and checking the weights file and
	// hashing it, or seeding them.
	WeightLoad float64 `json:"weight_load"`
	// Build is the driver's New: the model or graph, the session, and the initial weights
	// copied into the framework.
	Build float64 `json:"build"`
	// Parity is reading the weights back for their hash and the first batch's loss and logits
	// before any update (untimed by the study's metric).
	Parity      float64 `json:"parity"`
	WarmupSteps float64 `json:"warmup_steps"` // the steps left out of throughput, data waits included
	TimedSteps  float64 `json:"timed_steps"`  // the timed steps, data waits included
	Evaluation  float64 `json:"evaluation"`   // the validation passes
	Checkpoints float64 `json:"checkpoints"`  // checkpoint writes
	// Report is exporting the trained weights and completing the record (its file is written
	// right after).
	Report float64 `json:"report"`
	Total  float64 `json:"total"`
}

// Parts lists the parts in order with their JSON names, Total left out.
func (b TimeBreakdown) Parts() []struct {
	Name    string
	Seconds float64
} {
	type part = struct {
		Name    string
		Seconds float64
	}
	return []part{{"startup", b.Startup}, {"setup", b.Setup}, {"library_load", b.LibraryLoad},
		{"weight_load", b.WeightLoad}, {"build", b.Build}, {"parity", b.Parity},
		{"warmup_steps", b.WarmupSteps}, {"timed_steps", b.TimedSteps}, {"evaluation", b.Evaluation},
		{"checkpoints", b.Checkpoints}, {"report", b.Report}}
}

// lapClock attributes wall time to the parts of a TimeBreakdown: each lap adds the time since
// the previous lap to one part. A nil clock does nothing.
type lapClock struct {
	b    *TimeBreakdown
	last time.Time
	t0   time.Time
}

func newLapClock(startup float64) *lapClock {
	now := time.Now()
	return &lapClock{b: &TimeBreakdown{Startup: startup}, last: now, t0: now}
}

// lap adds the time since the previous lap to *part.
func (c *lapClock) lap(part func(*TimeBreakdown) *float64) {
	if c == nil {
		return
	}
	now := time.Now()
	*part(c.b) += now.Sub(c.last).Seconds()
	c.last = now
}

// done laps the rest into part and returns the breakdown with its Total.
func (c *lapClock) done(part func(*TimeBreakdown) *float64) *TimeBreakdown {
	if c == nil {
		return nil
	}
	c.lap(part)
	b := *c.b
	b.Total = b.Startup + c.last.Sub(c.t0).Seconds()
	return &b
}

// Part selectors, for lap.
var (
	partSetup       = func(b *TimeBreakdown) *float64 { return &b.Setup }
	partLibraryLoad = func(b *TimeBreakdown) *float64 { return &b.LibraryLoad }
	partWeightLoad  = func(b *TimeBreakdown) *float64 { return &b.WeightLoad }
	partBuild       = func(b *TimeBreakdown) *float64 { return &b.Build }
	partParity      = func(b *TimeBreakdown) *float64 { return &b.Parity }
	partWarmup      = func(b *TimeBreakdown) *float64 { return &b.WarmupSteps }
	partTimed       = func(b *TimeBreakdown) *float64 { return &b.TimedSteps }
	partEvaluation  = func(b *TimeBreakdown) *float64 { return &b.Evaluation }
	partCheckpoints = func(b *TimeBreakdown) *float64 { return &b.Checkpoints }
	partReport      = func(b *TimeBreakdown) *float64 { return &b.Report }
)

// ProcessAge is how long this process has run: /proc/uptime less the process's start time
// from /proc/self/stat (clock ticks, USER_HZ = 100 on Linux). 0 where /proc is missing.
func ProcessAge() float64 {
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(up))
	// The command name (field 2) may hold spaces: count fields after its closing parenthesis.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if len(f) == 0 || i < 0 {
		return 0
	}
	rest := strings.Fields(s[i+1:]) // rest[0] is field 3 (state); starttime is field 22
	if len(rest) < 20 {
		return 0
	}
	uptime, err1 := strconv.ParseFloat(f[0], 64)
	ticks, err2 := strconv.ParseFloat(rest[19], 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const userHZ = 100
	return max(0, uptime-ticks/userHZ)
}

// breakdownStats is each part's Stat across runs, "total" included; nil when no run has a
// breakdown.
func breakdownStats(runs []RunRecord) map[string]Stat {
	parts := map[string][]float64{}
	for _, run := range runs {
		b := run.TimeBreakdownSeconds
		if b == nil {
			continue
		}
		for _, p := range b.Parts() {
			parts[p.Name] = append(parts[p.Name], p.Seconds)
		}
		parts["total"] = append(parts["total"], b.Total)
	}
	if len(parts) == 0 {
		return nil
	}
	m := map[string]Stat{}
	for k, xs := range parts {
		m[k] = stat(xs)
	}
	return m
}

// optionalStat is the Stat of the runs whose f is set; nil when none is.
func optionalStat(runs []RunRecord, f func(RunRecord) *int64) *Stat {
	var xs []float64
	for _, run := range runs {
		if v := f(run); v != nil {
			xs = append(xs, float64(*v))
		}
	}
	if len(xs) == 0 {
		return nil
	}
	st := stat(xs)
	return &st
}

// breakdownRows are the terminal table's rows for the time breakdown: medians in seconds,
// parts grouped so that the table stays narrow.
var breakdownRows = []struct {
	label string
	cell  func(map[string]Stat) string
}{
	{"start-up / library / build (s)", medians("startup", "library_load", "build")},
	{"setup / weights / parity (s)", medians("setup", "weight_load", "parity")},
	{"warm-up / timed steps (s)", medians("warmup_steps", "timed_steps")},
	{"evaluation / checkpoints / report (s)", medians("evaluation", "checkpoints", "report")},
	{"process total (s)", medians("total")},
}

func medians(names ...string) func(map[string]Stat) string {
	return func(m map[string]Stat) string {
		if len(m) == 0 {
			return "-"
		}
		cells := make([]string, len(names))
		for i, n := range names {
			cells[i] = strconv.FormatFloat(m[n].Median, 'f', 2, 64)
		}
		return strings.Join(cells, " / ")
	}
}

// anySummary reports whether any framework's summary satisfies f.
func (r *Report) anySummary(f func(FWSummary) bool) bool {
	for _, s := range r.Summary {
		if f(s) {
			return true
		}
	}
	return false
}

// breakdownMarkdown renders where each framework's process time went: the median of each part
// and its share of the median total.
func (r *Report) breakdownMarkdown() string {
	if !r.anySummary(func(s FWSummary) bool { return len(s.TimeBreakdown) > 0 }) {
		return ""
	}
	fws := r.frameworks()
	var b strings.Builder
	b.WriteString("## Where the time went\n\nMedian seconds of each part of a run's process, from its start to its record (`time_breakdown_seconds`), and the share of the total. The study's training time (`total_seconds`) spans the first batch's parity evaluation, the steps, the evaluation and the checkpoints.\n\n")
	b.WriteString("| part | " + strings.Join(fws, " | ") + " |\n|---|" + strings.Repeat("---|", len(fws)) + "\n")
	names := []string{}
	for _, p := range (TimeBreakdown{}).Parts() {
		names = append(names, p.Name)
	}
	for _, n := range append(names, "total") {
		cells := []string{}
		for _, fw := range fws {
			m := r.Summary[fw].TimeBreakdown
			if len(m) == 0 {
				cells = append(cells, "-")
				continue
			}
			share := 0.0
			if t := m["total"].Median; t > 0 {
				share = 100 * m[n].Median / t
			}
			cells = append(cells, fmt.Sprintf("%.2f (%.1f%%)", m[n].Median, share))
		}
		fmt.Fprintf(&b, "| %s | %s |\n", n, strings.Join(cells, " | "))
	}
	b.WriteString("\n")
	return b.String()
}
