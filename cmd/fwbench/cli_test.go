package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/torchrun"
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
	cmd := exec.Command(fwbench, args...)
	cmd.Env = append(os.Environ(), "FWBENCH_CACHE="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
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
		{"unknown framework", []string{"train", "--framework", "mxnet"}, "unknown framework"},
		{"unknown device", []string{"train", "--device", "tpu"}, "unknown device"},
		{"unknown mode", []string{"train", "--mode", "frozen"}, "unknown mode"},
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
	tf, pt := r.Summary[compare.TensorFlow], r.Summary[compare.Torch]
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
	if len(r.Fairness) < 6 {
		t.Errorf("fairness: got %d conditions, want at least 6", len(r.Fairness))
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
			json.Unmarshal(b, &r)
			if !r.Partial || r.InterruptedAt == nil {
				t.Errorf("record: got partial=%v at=%v, want a partial record with the interruption point", r.Partial, r.InterruptedAt)
			}
			if _, err := os.Stat(filepath.Join(ckpt, "checkpoint.json")); err != nil {
				t.Fatalf("checkpoint after interrupt: %v", err)
			}
			// Resume for one more epoch than the checkpoint holds.
			_, serr, code := runCLI(t, append([]string{"train", "--framework", tc.fw, "--resume", ckpt, "--json", rec},
				tiny("--epochs", fmt.Sprint(r.InterruptedAt.Epoch+1), "--steps-per-epoch", "0")...)...)
			if code != 0 {
				t.Fatalf("resume: exit %d\n%s", code, serr)
			}
		})
	}
}

// TestCompareKeepsResultsWhenAChildCrashes runs a comparison whose torch child aborts (a
// wrapper around the real binary kills it with SIGABRT after printing to stderr): the report
// keeps TensorFlow's runs and gives the tail of torch's stderr.
func TestCompareKeepsResultsWhenAChildCrashes(t *testing.T) {
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "fwbench-crashing")
	script := `#!/bin/sh
case "$*" in
*"--framework torch"*"--epochs 2"*) echo "libtorch: simulated native fault" >&2; kill -ABRT $$ ;;
esac
exec ` + fwbench + ` "$@"
`
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s := compare.DefaultSpec()
	s.Data, s.ImageSize, s.Hidden, s.BatchSize, s.Epochs, s.StepsPerEpoch, s.WarmupSteps = smallDS, 32, 16, 6, 2, 2, 1
	out := filepath.Join(dir, "report")
	rep, err := compare.Run(t.Context(), compare.Config{Spec: s, Repeat: 1, Out: out, Exe: wrapper,
		Env: []string{"FWBENCH_CACHE=" + dir}}, nil)
	if err != nil {
		t.Fatalf("compare.Run: %v", err)
	}
	if len(rep.Runs) != 1 || rep.Runs[0].Framework != compare.TensorFlow {
		t.Errorf("runs: got %d, want TensorFlow's one run kept", len(rep.Runs))
	}
	if len(rep.Failures) != 1 || rep.Failures[0].Signal != "aborted" || !strings.Contains(rep.Failures[0].StderrTail, "simulated native fault") {
		t.Errorf("failures: got %+v, want torch's abort with its stderr tail", rep.Failures)
	}
	if err := compare.ValidateReportFile(filepath.Join(out, "report.json")); err != nil {
		t.Error(err)
	}
}

// TestCompareInterruptWritesPartialReport sends SIGINT to `fwbench compare` during the first
// timed run: it exits 130 and leaves a report marked partial.
func TestCompareInterruptWritesPartialReport(t *testing.T) {
	out := t.TempDir()
	cmd := exec.Command(fwbench, append([]string{"compare", "--repeat", "2", "--out", out}, tiny("--epochs", "30", "--steps-per-epoch", "0")...)...)
	cmd.Env = append(os.Environ(), "FWBENCH_CACHE="+t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Parity runs write runs/parity-*.json; the first timed run starts after both.
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(out, "runs", "parity-torch.json")); err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // into the first timed run
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit: got %v, want 130", err)
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
	if err := compare.ValidateReportFile(filepath.Join(out, "report.json")); err != nil {
		t.Error(err)
	}
}
