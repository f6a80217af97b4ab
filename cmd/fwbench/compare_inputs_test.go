package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/compare"
)

// Tests of compare's own inputs through the real binary (issue #17, item 7).

// TestCompareInputsRefused: a repeat below 1 and a framework named twice, in any spelling, exit
// 2 with one message before anything starts (the --out folder is not even created).
func TestCompareInputsRefused(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string // what the message must contain
	}{
		{"repeat 0", []string{"--repeat", "0"}, "--repeat must be at least 1, got 0"},
		{"negative repeat", []string{"--repeat", "-2"}, "--repeat must be at least 1, got -2"},
		{"torch twice", []string{"--frameworks", "torch,torch"}, "--frameworks names torch twice"},
		{"pytorch and torch", []string{"--frameworks", "pytorch,torch"}, "--frameworks names torch twice (pytorch and torch)"},
		{"tf and tensorflow", []string{"--frameworks", "tf, tensorflow"}, "--frameworks names tensorflow twice (tf and tensorflow)"},
		{"tensorflow, torch, TF", []string{"--frameworks", "tensorflow,torch,TF"}, "names tensorflow twice"},
	}
	for _, tt := range tests {
		out := filepath.Join(t.TempDir(), "report")
		args := append(append([]string{"compare", "--out", out}, tt.args...), tiny()...)
		_, stderr, code := runCLI(t, args...)
		if code != 2 || !strings.Contains(stderr, tt.msg) {
			t.Errorf("%s: got exit %d and stderr %q, want exit 2 and a message containing %q", tt.name, code, stderr, tt.msg)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: --out folder: got %v, want it not created", tt.name, err)
		}
	}
}

// TestCompareOutLocked: while another process holds the lock on --out (here the test process,
// through compare.LockDir), compare exits 2 at once, naming the folder and the holder's PID,
// and writes nothing there.
func TestCompareOutLocked(t *testing.T) {
	out := t.TempDir()
	l, err := compare.LockDir(out)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, stderr, code := runCLI(t, append([]string{"compare", "--out", out}, tiny()...)...)
	for _, want := range []string{strconv.Quote(out), fmt.Sprintf("process %d", os.Getpid()), "is used by"} {
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("got exit %d and stderr %q, want exit 2 and a message containing %q", code, stderr, want)
		}
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		if e.Name() != compare.LockFile {
			t.Errorf("--out: got %s written, want nothing but %s", e.Name(), compare.LockFile)
		}
	}
}

// TestCompareCheckpointHelp: compare's --checkpoint help says that each run has its own subfolder.
func TestCompareCheckpointHelp(t *testing.T) {
	stdout, stderr, code := runCLI(t, "compare", "--help")
	if code != 0 || !strings.Contains(stdout+stderr, "FOLDER/<framework>-<repeat>") {
		t.Errorf("compare --help: got exit %d and output %q, want exit 0 and the per-run subfolder FOLDER/<framework>-<repeat>", code, stdout+stderr)
	}
}

// TestCompareCheckpointPerRun: `compare --checkpoint X` gives each timed run its own folder,
// X/<framework>-<repeat>, and each holds that run's checkpoint (whatever its layout: it is
// the checkpoint package's); nothing is written into X itself.
func TestCompareCheckpointPerRun(t *testing.T) {
	ck := filepath.Join(t.TempDir(), "ck")
	out := t.TempDir()
	args := append([]string{"compare", "--out", out, "--checkpoint", ck, "--repeat", "1"}, tiny("--epochs", "1", "--steps-per-epoch", "1")...)
	_, stderr, code := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("compare: exit %d\n%s", code, stderr)
	}
	for _, run := range []string{"tensorflow-1", "torch-1"} {
		if files, err := os.ReadDir(filepath.Join(ck, run)); err != nil || len(files) == 0 {
			t.Errorf("%s's checkpoint folder: got %d files (%v), want the run's checkpoint", run, len(files), err)
		}
	}
	entries, err := os.ReadDir(ck)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "tensorflow-1 torch-1" {
		t.Errorf("checkpoint folder: got %q, want only the runs' subfolders [tensorflow-1 torch-1]", names)
	}
}
