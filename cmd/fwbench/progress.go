package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/fwbench/fwbench/compare"
)

// progress turns compare.Progress events into terminal output on stderr: an overall bar
// (framework, repeat, epoch) and a bar per epoch on a terminal, plain lines elsewhere,
// JSON lines for a parent process, or nothing with --quiet.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	mode     string // "bars", "lines", "json", "quiet"
	epochBar *progressbar.ProgressBar
	overall  *progressbar.ProgressBar
	total    int // epochs in the whole job, for the overall bar
	key      string
}

func newProgress(quiet, jsonLines bool) *progress {
	p := &progress{w: os.Stderr, mode: "lines"}
	switch {
	case jsonLines:
		p.mode = "json"
	case quiet:
		p.mode = "quiet"
	case term.IsTerminal(int(os.Stderr.Fd())):
		p.mode = "bars"
	}
	return p
}

// setTotal sets the number of epochs the whole job will run (compare: frameworks×repeats×epochs).
func (p *progress) setTotal(n int) { p.total = n }

func (p *progress) update(e compare.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.mode {
	case "quiet":
	case "json":
		b, _ := json.Marshal(e)
		fmt.Fprintf(p.w, "%s%s\n", compare.ProgressPrefix, b)
	case "lines":
		p.line(e)
	case "bars":
		p.bars(e)
	}
}

func where(e compare.Progress) string {
	s := e.Framework
	if e.Repeats > 0 {
		s += fmt.Sprintf(" run %d/%d", e.Repeat, e.Repeats)
	}
	if e.Epochs > 0 {
		s += fmt.Sprintf(" epoch %d/%d", e.Epoch, e.Epochs)
	}
	return s
}

func (p *progress) line(e compare.Progress) {
	switch e.Phase {
	case "parity":
		fmt.Fprintf(p.w, "%s: first-batch loss %.6f\n", e.Framework, e.Loss)
	case "train":
		// One line per tenth of an epoch keeps logs short.
		if e.Steps < 10 || e.Step%(e.Steps/10) == 0 || e.Step == e.Steps {
			fmt.Fprintf(p.w, "%s step %d/%d: loss %.4f acc %.1f%% %.1f images/s\n", where(e), e.Step, e.Steps, e.Loss, 100*e.Accuracy, e.ImagesPS)
		}
	case "eval":
		fmt.Fprintf(p.w, "%s done: val loss %.4f val acc %.1f%%\n", where(e), e.Loss, 100*e.Accuracy)
	}
}

func (p *progress) bars(e compare.Progress) {
	switch e.Phase {
	case "parity":
		fmt.Fprintf(p.w, "%s: first-batch loss %.6f\n", e.Framework, e.Loss)
	case "train":
		key := where(e)
		if p.epochBar == nil || key != p.key {
			p.finishEpoch()
			p.key = key
			p.epochBar = progressbar.NewOptions(e.Steps,
				progressbar.OptionSetWriter(p.w),
				progressbar.OptionSetDescription(key),
				progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionSetWidth(24),
				progressbar.OptionThrottle(0),
				progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
			)
		}
		p.epochBar.Describe(fmt.Sprintf("%s loss %.4f acc %.1f%% %.1f img/s", key, e.Loss, 100*e.Accuracy, e.ImagesPS))
		p.epochBar.Set(e.Step)
	case "eval":
		p.finishEpoch()
		fmt.Fprintf(p.w, "%s: val loss %.4f val acc %.1f%%\n", where(e), e.Loss, 100*e.Accuracy)
		if p.total > 0 {
			if p.overall == nil {
				p.overall = progressbar.NewOptions(p.total, progressbar.OptionSetWriter(p.w),
					progressbar.OptionSetDescription("overall"), progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true), progressbar.OptionSetWidth(24), progressbar.OptionThrottle(0))
			}
			p.overall.Describe(fmt.Sprintf("overall (%s)", where(e)))
			p.overall.Add(1)
			fmt.Fprintln(p.w)
		}
	}
}

func (p *progress) finishEpoch() {
	if p.epochBar != nil && !p.epochBar.IsFinished() {
		p.epochBar.Finish()
	}
	p.epochBar = nil
}

func (p *progress) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.finishEpoch()
}
