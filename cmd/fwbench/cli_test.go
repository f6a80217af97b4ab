package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/torchrun"
)

// The frameworks' registered names.
const (
	fwTF    = tfrun.Framework
	fwTorch = torchrun.Framework
)

// These tests run the real fwbench binary, built once by TestMain, against the real
// libtensorflow and libtorch.

var (
	fwbench string // the binary under test
	smallDS string // a small synthetic dataset, 3 classes × 12 images at 32 px
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fwbench-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fwbench = filepath.Join(dir, "fwbench")
	if out, err := exec.Command("go", "build", "-o", fwbench, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building fwbench: %v\n%s", err, out)
		os.Exit(1)
	}
	smallDS = filepath.Join(dir, "data")
	if out, err := exec.Command(fwbench, "dataset", "synth", "--out", smallDS, "--classes", "3", "--per-class", "12", "--size", "32", "--seed", "3").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "dataset synth: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runCLI runs fwbench and returns stdout, stderr and the exit status.
func runCLI(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLIWith(t, cliRun{}, args...)
}

// cliRun says how runCLIWith runs fwbench.
type cliRun struct {
	env     []string      // added to the environment
	unset   []string      // variables removed from it (before env is added)
	timeout time.Duration // the process is killed after it and the test fails; 0: no deadline
}

// runCLIWith runs fwbench with a fresh FWBENCH_CACHE and returns stdout, stderr and the exit
// status.
func runCLIWith(t *testing.T, o cliRun, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	if o.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
	}
	defer cancel()
	cmd := exec.CommandContext(ctx, fwbench, args...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return slices.ContainsFunc(o.unset, func(k string) bool { return strings.HasPrefix(kv, k+"=") })
	})
	cmd.Env = append(append(cmd.Env, "FWBENCH_CACHE="+t.TempDir()), o.env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("fwbench %v did not finish within %v\nstderr:\n%s", args, o.timeout, errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running fwbench %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// tiny is a training configuration small enough for 2 cores: VGG16 at 32 px with a 16-wide head.
func tiny(extra ...string) []string {
	return append([]string{"--data", smallDS, "--image-size", "32", "--hidden", "16", "--batch-size", "6",
		"--epochs", "2", "--steps-per-epoch", "3", "--warmup-steps", "1", "--quiet"}, extra...)
}

func TestInvalidInputExitsTwo(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string // a word the one-line message must contain
	}{
		{"image size not a multiple of 32", []string{"train", "--image-size", "100"}, "multiple of 32"},
		{"batch size 0", []string{"train", "--batch-size", "0"}, "batch size"},
		{"negative learning rate", []string{"train", "--lr", "-0.1"}, "learning rate"},
		{"unknown framework", []string{"train", "--framework", "mxnet"}, `framework "mxnet" is not built into this fwbench`},
		{"unknown device", []string{"train", "--device", "tpu"}, `device "tpu"`},
		{"unknown mode", []string{"train", "--mode", "frozen"}, `mode "frozen"`},
		{"missing data folder", []string{"train", "--data", "/nonexistent/fwbench-data"}, "data folder"},
		{"output folder not writable", []string{"train", "--json", "/proc/fwbench/run.json"}, "output folder"},
		{"unknown flag", []string{"train", "--no-such-flag"}, "flag provided but not defined"},
		{"unknown preset", []string{"compare", "--preset", "fast"}, "unknown preset"},
		{"corrupt weights file", []string{"train", "--weights", writeFile(t, "bad.safetensors", "\xff\xff\xff\xff\xff\xff\xff\x7fjunk")}, "weights"},
	}
	if devs, err := torchrun.CUDADevices(); err != nil || len(devs) == 0 {
		tests = append(tests, struct {
			name string
			args []string
			msg  string
		}{"--gpu with no GPU", []string{"train", "--framework", "torch", "--gpu"}, "GPU"})
	}
	for _, tt := range tests {
		args := append(tt.args, "--quiet")
		if !strings.Contains(strings.Join(tt.args, " "), "--data") {
			args = append(args, "--data", smallDS)
		}
		_, stderr, code := runCLI(t, args...)
		if code != 2 || !strings.Contains(stderr, tt.msg) {
			t.Errorf("%s: got exit %d and stderr %q, want exit 2 and a message containing %q", tt.name, code, stderr, tt.msg)
		}
		if strings.Contains(stderr, "panic") || strings.Contains(stderr, "SIGSEGV") {
			t.Errorf("%s: stderr shows a crash:\n%s", tt.name, stderr)
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDoctorJSON(t *testing.T) {
	out, stderr, code := runCLI(t, "doctor", "--json")
	if code != 0 {
		t.Fatalf("doctor --json: exit %d\n%s", code, stderr)
	}
	var r struct {
		TensorFlow struct {
			Version   string   `json:"version"`
			Libraries []string `json:"libraries"`
		} `json:"tensorflow"`
		Torch struct {
			Version   string   `json:"version"`
			Libraries []string `json:"libraries"`
		} `json:"torch"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	// The pinned versions (scripts/versions.sh), read from the loaded libraries.
	if r.TensorFlow.Version != "2.21.0" || !strings.HasPrefix(r.Torch.Version, "2.11") {
		t.Errorf("versions: got tensorflow %q torch %q, want 2.21.0 and 2.11.x", r.TensorFlow.Version, r.Torch.Version)
	}
	if len(r.TensorFlow.Libraries) == 0 || len(r.Torch.Libraries) == 0 {
		t.Errorf("library paths: got %v and %v, want the loaded libraries", r.TensorFlow.Libraries, r.Torch.Libraries)
	}
}

// TestCompareEndToEnd runs the main job with both real frameworks on a tiny synthetic set and
// checks the report's invariants.
func TestCompareEndToEnd(t *testing.T) {
	out := t.TempDir()
	stdout, stderr, code := runCLI(t, append([]string{"compare", "--repeat", "2", "--out", out}, tiny()...)...)
	if code != 0 {
		t.Fatalf("compare: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if err := compare.ValidateReportFile(filepath.Join(out, "report.json")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(out, "report.json"))
	var r compare.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	tf, pt := r.Summary[fwTF], r.Summary[fwTorch]
	if tf.Runs != 2 || pt.Runs != 2 || len(r.Runs) != 4 {
		t.Errorf("runs: got tensorflow %d torch %d total %d, want 2, 2, 4", tf.Runs, pt.Runs, len(r.Runs))
	}
	if !r.Parity.Passed || len(r.Parity.Losses) != 2 {
		t.Errorf("parity: got %+v, want passed with both losses", r.Parity)
	}
	if r.Ratio == nil || math.Abs(r.Ratio.Median-tf.TotalSeconds.Median/pt.TotalSeconds.Median) > 1e-12 {
		t.Errorf("ratio: got %+v, want median tf total / median torch total = %v", r.Ratio, tf.TotalSeconds.Median/pt.TotalSeconds.Median)
	}
	if got := strings.Join(r.Order, " "); got != "tensorflow torch torch tensorflow" {
		t.Errorf("order: got %s, want tensorflow torch torch tensorflow", got)
	}
	if len(r.Fairness) < 8 {
		t.Errorf("fairness: got %d conditions, want at least 8", len(r.Fairness))
	}
	// Each real run's time breakdown: no part negative, the parts sum to the total within 1%
	// (the precision issue's bound), and the study's training time fits inside the total.
	for _, run := range r.Runs {
		b := run.TimeBreakdownSeconds
		if b == nil {
			t.Errorf("%s run %d: no time_breakdown_seconds", run.Framework, run.PID)
			continue
		}
		var sum float64
		for _, p := range b.Parts() {
			if p.Seconds < 0 {
				t.Errorf("%s run %d: %s = %g s", run.Framework, run.PID, p.Name, p.Seconds)
			}
			sum += p.Seconds
		}
		if math.Abs(sum-b.Total) > 0.01*b.Total || b.Total < run.TotalSeconds || !(b.Build > 0) || !(b.Startup > 0) {
			t.Errorf("%s run %d: parts sum to %g s, total %g s, training time %g s, build %g s, start-up %g s", run.Framework, run.PID, sum, b.Total, run.TotalSeconds, b.Build, b.Startup)
		}
	}
	for _, c := range r.Fairness {
		if !c.Held {
			t.Errorf("fairness condition %q did not hold: %s", c.Name, c.Evidence)
		}
	}
	for _, f := range []string{"report.csv", "report.md", "loss.png", "accuracy.svg", "throughput.png", "steptime.png"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !strings.Contains(stdout, "training time (study's Table 2)") {
		t.Errorf("terminal table missing:\n%s", stdout)
	}
}

// TestInterruptCheckpointsAndResumes sends SIGINT and SIGTERM to `fwbench train` and checks the
// exit status, the checkpoint and the partial record, then resumes.
func TestInterruptCheckpointsAndResumes(t *testing.T) {
	for _, tc := range []struct {
		fw   string
		sig  syscall.Signal
		want int
	}{{"torch", syscall.SIGINT, 130}, {"tensorflow", syscall.SIGTERM, 143}} {
		t.Run(tc.fw, func(t *testing.T) {
			dir := t.TempDir()
			ckpt, rec := filepath.Join(dir, "ckpt"), filepath.Join(dir, "run.json")
			args := append([]string{"train", "--framework", tc.fw, "--checkpoint", ckpt, "--json", rec, "--progress-json"},
				tiny("--epochs", "50", "--steps-per-epoch", "0")...)
			cmd := exec.Command(fwbench, args...)
			cmd.Env = append(os.Environ(), "FWBENCH_CACHE="+dir)
			stderr, _ := cmd.StderrPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait for the first training step, then interrupt.
			buf := make([]byte, 1<<16)
			var seen strings.Builder
			deadline := time.Now().Add(3 * time.Minute)
			for !strings.Contains(seen.String(), `"Phase":"train"`) && time.Now().Before(deadline) {
				n, err := stderr.Read(buf)
				seen.Write(buf[:n])
				if err != nil {
					break
				}
			}
			cmd.Process.Signal(tc.sig)
			go func() { // keep draining stderr
				for {
					if _, err := stderr.Read(buf); err != nil {
						return
					}
				}
			}()
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.want {
				t.Fatalf("exit: got %v, want %d", err, tc.want)
			}
			b, err := os.ReadFile(rec)
			if err != nil {
				t.Fatalf("run record after interrupt: %v", err)
			}
			var r compare.RunRecord
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("run record after interrupt: %v\n%s", err, b)
			}
			if !r.Partial || r.InterruptedAt == nil {
				t.Fatalf("record: got partial=%v interrupted_at=%v (error %q), want a partial record with the interruption point", r.Partial, r.InterruptedAt, r.Error)
			}
			if _, err := os.Stat(filepath.Join(ckpt, "checkpoint.json")); err != nil {
				t.Fatalf("checkpoint after interrupt: %v", err)
			}
			// Resume: the rest of the interrupted epoch, then one more.
			at := *r.InterruptedAt
			resumed := filepath.Join(dir, "resumed.json")
			_, serr, code := runCLI(t, append([]string{"train", "--framework", tc.fw, "--resume", ckpt, "--json", resumed},
				tiny("--epochs", fmt.Sprint(at.Epoch+2), "--steps-per-epoch", "0")...)...)
			if code != 0 {
				t.Fatalf("resume: exit %d\n%s", code, serr)
			}
			b, err = os.ReadFile(resumed)
			if err != nil {
				t.Fatalf("run record after resume: %v", err)
			}
			var r2 compare.RunRecord
			if err := json.Unmarshal(b, &r2); err != nil {
				t.Fatalf("run record after resume: %v\n%s", err, b)
			}
			if r2.ResumedFrom == nil || *r2.ResumedFrom != at {
				t.Errorf("resumed_from: got %v, want the first run's interrupted_at %+v", r2.ResumedFrom, at)
			}
			if r2.Partial || r2.InterruptedAt != nil {
				t.Errorf("resumed record: got partial=%v interrupted_at=%v, want a complete record", r2.Partial, r2.InterruptedAt)
			}
			// Position.Epoch counts from 0, EpochRecord.Epoch from 1: the resumed run finishes
			// epoch at.Epoch+1 (interrupted) and trains epoch at.Epoch+2, and nothing before.
			var got []int
			for _, e := range r2.Epochs {
				got = append(got, e.Epoch)
			}
			if want := []int{at.Epoch + 1, at.Epoch + 2}; !slices.Equal(got, want) {
				t.Errorf("resumed epochs: got %v, want %v (interrupted at epoch %d step %d, counting from 0)", got, want, at.Epoch, at.Step)
			}
		})
	}
}

// TestCompareKeepsResultsWhenAChildCrashes runs `fwbench compare --repeat 2` (order tensorflow,
// torch, torch, tensorflow) and crashes both torch children from outside. The first gets
// SIGSEGV on its main thread once its Go runtime handles that signal: the runtime prints
// "SIGSEGV: segmentation violation" and the goroutines' traces and exits 2, as it does for a
// segmentation fault in native code. The second is killed with SIGKILL, as the OOM killer
// does. docs/reliability.md promises: the report keeps TensorFlow's runs, lists each failure
// with its exit status or signal and the tail of the child's stderr, and fwbench exits 1.
func TestCompareKeepsResultsWhenAChildCrashes(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command(fwbench, append([]string{"compare", "--repeat", "2", "--out", out}, tiny()...)...)
	cmd.Env = append(os.Environ(), "FWBENCH_CACHE="+t.TempDir())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Minute)
	for _, k := range []struct {
		record string // the child's --json, which names it
		sig    syscall.Signal
	}{{"torch-1.json", syscall.SIGSEGV}, {"torch-2.json", syscall.SIGKILL}} {
		pid, err := waitForChild(cmd.Process.Pid, filepath.Join("runs", k.record), k.sig, deadline, exited)
		if err == nil {
			err = syscall.Tgkill(pid, pid, k.sig)
		}
		if err != nil {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("crashing the child that writes %s: %v\nstderr:\n%s", k.record, err, stderr.String())
		}
	}
	err := <-exited
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit: got %v, want exit status 1\nstderr:\n%s", err, stderr.String())
	}
	if !regexp.MustCompile(`(?m)^fwbench: `).MatchString(stderr.String()) {
		t.Errorf("stderr: got %q, want a line from fwbench saying why it failed", stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep compare.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, r := range rep.Runs {
		kept = append(kept, r.Framework)
	}
	if want := []string{fwTF, fwTF}; !slices.Equal(kept, want) {
		t.Errorf("runs: got %v, want TensorFlow's two runs kept", kept)
	}
	if len(rep.Failures) != 2 {
		t.Fatalf("failures: got %+v, want torch's two", rep.Failures)
	}
	for i, want := range []struct {
		exit   int
		signal string
		tail   string
	}{
		// The Go runtime's fatal-signal path (runtime/signal_unix.go): it prints the signal's
		// name and every goroutine's trace (the report keeps the last 8 KiB, which may begin
		// after the name), then exits 2.
		{2, "", "goroutine "},
		// -1: os.ProcessState.ExitCode for a process killed by a signal.
		{-1, "killed", ""},
	} {
		f := rep.Failures[i]
		if f.Framework != fwTorch || f.Repeat != i+1 || f.ExitCode != want.exit || f.Signal != want.signal || !strings.Contains(f.StderrTail, want.tail) {
			t.Errorf("failure %d: got %s repeat %d exit %d signal %q stderr tail %q; want torch repeat %d exit %d signal %q, tail containing %q",
				i, f.Framework, f.Repeat, f.ExitCode, f.Signal, f.StderrTail, i+1, want.exit, want.signal, want.tail)
		}
	}
	if err := compare.ValidateReportFile(filepath.Join(out, "report.json")); err != nil {
		t.Error(err)
	}
}

// waitForChild waits until a child process of parent has an argument ending in arg and, unless
// sig is SIGKILL, has its handler for sig installed (SigCgt in /proc/PID/status), so that the
// signal reaches the program rather than the default action; it returns the child's pid. It
// gives up at the deadline or when the parent exits (a value on exited, which it puts back).
func waitForChild(parent int, arg string, sig syscall.Signal, deadline time.Time, exited chan error) (int, error) {
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return 0, fmt.Errorf("fwbench exited (%v) before a child with an argument ending in %s ran", err, arg)
		default:
		}
		for _, pid := range childrenOf(parent) {
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || !slices.ContainsFunc(strings.Split(string(cmdline), "\x00"), func(a string) bool { return strings.HasSuffix(a, arg) }) {
				continue
			}
			if sig == syscall.SIGKILL || catches(pid, sig) {
				return pid, nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, fmt.Errorf("no child of %d with an argument ending in %s (and a handler for %v) before the deadline", parent, arg, sig)
}

// childrenOf lists the processes whose parent is pid, from /proc/*/stat.
func childrenOf(pid int) []int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var kids []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
		var child, ppid int
		var state string
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		if _, err := fmt.Sscanf(string(b[i+1:]), " %s %d", &state, &ppid); err != nil || ppid != pid {
			continue
		}
		if _, err := fmt.Sscanf(string(b), "%d", &child); err == nil {
			kids = append(kids, child)
		}
	}
	return kids
}

// catches reports whether process pid has a handler installed for sig.
func catches(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && mask&(1<<(sig-1)) != 0
		}
	}
	return false
}

// TestCompareInterruptWritesPartialReport sends SIGINT to `fwbench compare` once the first
// timed run (TensorFlow's) is training: the parent forwards it to that child, which finishes
// its step, checkpoints and writes a partial record; the parent exits 130 and leaves a report
// marked partial.
func TestCompareInterruptWritesPartialReport(t *testing.T) {
	out := t.TempDir()
	// Without --quiet, so that the progress lines on stderr say when the timed run trains.
	args := slices.DeleteFunc(tiny("--epochs", "30", "--steps-per-epoch", "0"), func(a string) bool { return a == "--quiet" })
	cmd := exec.Command(fwbench, append([]string{"compare", "--repeat", "2", "--out", out}, args...)...)
	cmd.Env = append(os.Environ(), "FWBENCH_CACHE="+t.TempDir())
	stderr := newLineWatch("tensorflow run 1/2 epoch 1/30 step ") // progress.line
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-stderr.seen:
	case err := <-exited:
		t.Fatalf("fwbench compare exited (%v) before the first timed run trained; stderr:\n%s", err, stderr)
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		<-exited
		t.Fatalf("no training step of the first timed run within 3 minutes; stderr:\n%s", stderr)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err := <-exited
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit: got %v, want 130; stderr:\n%s", err, stderr)
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatalf("report after interrupt: %v", err)
	}
	var r compare.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if !r.Partial {
		t.Errorf("report: got partial=false, want a report marked partial")
	}
	// The first timed run is TensorFlow's (order tensorflow, torch, torch, tensorflow): the
	// parent forwarded SIGINT to it, and it checkpointed and wrote its partial record.
	if len(r.Runs) != 1 || r.Runs[0].Framework != fwTF || !r.Runs[0].Partial || r.Runs[0].InterruptedAt == nil {
		t.Errorf("runs: got %d (%+v), want TensorFlow's one partial run with its interruption point", len(r.Runs), r.Runs)
	}
	if _, err := os.Stat(filepath.Join(out, "checkpoints", "tensorflow-1", "checkpoint.json")); err != nil {
		t.Errorf("the interrupted child's checkpoint: %v", err)
	}
	if err := compare.ValidateReportFile(filepath.Join(out, "report.json")); err != nil {
		t.Error(err)
	}
}

// lineWatch keeps what a process writes and closes seen once the output contains want.
type lineWatch struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want []byte
	seen chan struct{}
}

func newLineWatch(want string) *lineWatch {
	return &lineWatch{want: []byte(want), seen: make(chan struct{})}
}

func (w *lineWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	found := bytes.Contains(w.buf.Bytes(), w.want)
	w.buf.Write(p)
	if !found && bytes.Contains(w.buf.Bytes(), w.want) {
		close(w.seen)
	}
	return len(p), nil
}

func (w *lineWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
