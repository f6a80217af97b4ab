//go:build !nohdf5

package main

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fwbench/fwbench/internal/testfixture"
	"github.com/fwbench/fwbench/keras"
	"github.com/fwbench/fwbench/weights"
)

// crashRecipe is one byte changed in keras2_vgg16_full_s32.h5 (a Keras 2 file of
// scripts/reference/make_keras_fixtures.py) that crashes Debian 12's libhdf5 1.10.8 in-process:
// byte 3257 (0xcb9) lies in the global heap that holds the weight_names strings, the second
// byte of the 8-byte size of the heap object "block3_conv3_b_1:0" (18 bytes); 0x00 -> 0x5c makes
// it 0x5c12 bytes, and H5Aread -> H5T__conv_vlen -> H5HG_read then reads through a bad pointer
// (SIGSEGV at address 0x10, the same in every run; gdb's backtrace). It was found by a
// throw-away program: 100 variants, each with 4 bytes of the first 8 KiB set to random values
// (math/rand/v2, rand.NewPCG(1, 0): offset IntN(8192), then value IntN(256)), each read by
// keras.Read in a child process; 17 crashed (exit 2, "SIGSEGV: segmentation violation ...
// signal arrived during cgo execution"), 62 gave an error, 21 read fine. Each crashing patch
// was reduced by dropping bytes while the child still crashed: all 17 need one byte. This one
// was kept because its faulting address does not depend on the memory layout.
var crashRecipe = struct {
	fixture  string
	offset   int64
	was, val byte
}{"../../keras/testdata/keras2_vgg16_full_s32.h5.gz", 3257, 0x00, 0x5c}

// damagedKeras returns a copy of the crash recipe's fixture with its byte patched.
func damagedKeras(t *testing.T) string {
	t.Helper()
	path := testfixture.Path(t, crashRecipe.fixture)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, crashRecipe.offset); err != nil || b[0] != crashRecipe.was {
		t.Fatalf("%s: byte %d: got %#x (%v), want %#x: the fixture changed, find a new recipe", crashRecipe.fixture, crashRecipe.offset, b[0], err, crashRecipe.was)
	}
	if _, err := f.WriteAt([]byte{crashRecipe.val}, crashRecipe.offset); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKerasReadInChild reads good Keras fixtures through the child (the real fwbench binary,
// and weights.Load in this test binary, which is a fwbench too) and compares with keras.Read
// in-process: the same names in the same order, shapes and bit-identical values.
func TestKerasReadInChild(t *testing.T) {
	for _, fixture := range []string{"keras2_vgg16_full_s32.h5.gz", "keras3_vgg16_keras_s64.weights.h5.gz"} {
		path := testfixture.Path(t, filepath.Join("../../keras/testdata", fixture))
		want, err := keras.Read(path)
		if err != nil {
			t.Fatalf("%s: keras.Read: %v", fixture, err)
		}
		start := time.Now()
		got, err := readKerasInChild(fwbench, path, time.Minute)
		if err != nil {
			t.Fatalf("%s: through the fwbench binary: %v", fixture, err)
		}
		t.Logf("%s: read in a child in %v", fixture, time.Since(start).Round(time.Millisecond))
		sameTensors(t, fixture+" (fwbench binary)", got, want)
		got, err = weights.Load(path)
		if err != nil {
			t.Fatalf("%s: weights.Load: %v", fixture, err)
		}
		sameTensors(t, fixture+" (weights.Load)", got, want)
	}
}

func sameTensors(t *testing.T, what string, got, want []*weights.Tensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d tensors, want %d", what, len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || !slices.Equal(g.Shape, w.Shape) || len(g.Data) != len(w.Data) {
			t.Fatalf("%s: tensor %d: got %s %v (%d values), want %s %v (%d values)", what, i, g.Name, g.Shape, len(g.Data), w.Name, w.Shape, len(w.Data))
		}
		for j := range w.Data {
			if math.Float32bits(g.Data[j]) != math.Float32bits(w.Data[j]) {
				t.Fatalf("%s: %s[%d]: got %v, want %v", what, w.Name, j, g.Data[j], w.Data[j])
			}
		}
	}
}

// TestKerasCrashIsInvalidInput: a file that crashes libhdf5 in-process makes weights.Load
// return an error in this test process (it would die otherwise), and `fwbench train` and
// `fwbench compare` exit 2 with one message.
func TestKerasCrashIsInvalidInput(t *testing.T) {
	damaged := damagedKeras(t)
	const want = "crashed the HDF5 library (SIGSEGV: segmentation violation): the file is damaged or not a Keras weight file"
	if _, err := weights.Load(damaged); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("weights.Load: got %v, want an error containing %q", err, want)
	}
	for _, args := range [][]string{
		append([]string{"train", "-f", "torch", "--weights", damaged}, tiny()...),
		append([]string{"compare", "--weights", damaged, "--out", t.TempDir()}, tiny()...),
	} {
		start := time.Now()
		stdout, stderr, code := runCLI(t, args...)
		t.Logf("fwbench %s: %v", args[0], time.Since(start).Round(time.Millisecond))
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("fwbench %s: got exit %d and stderr %q, want exit 2 and %q", args[0], code, stderr, want)
		}
		if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines != 1 || strings.Contains(stderr, "goroutine ") {
			t.Errorf("fwbench %s: stderr has %d lines, want one message:\n%s", args[0], lines, stderr)
		}
		if stdout != "" {
			t.Errorf("fwbench %s: stdout %q, want nothing", args[0], stdout)
		}
	}
}

// TestKerasChildLeavesNoCore runs fwbench's child side on the damaged file in a fresh folder
// with GOTRACEBACK=crash (the Go runtime then ends a crash with SIGABRT, which dumps core) and
// this process's core-size limit raised to its hard limit: the child lowers its own limit to 0,
// so no core file appears, and the reader reports the signal.
func TestKerasChildLeavesNoCore(t *testing.T) {
	damaged := damagedKeras(t)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &lim); err != nil {
		t.Fatal(err)
	}
	raised := lim
	raised.Cur = raised.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_CORE, &raised); err != nil {
		t.Fatal(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_CORE, &lim)
	dir := t.TempDir()
	cmd := exec.Command(fwbench)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), readWeightsEnv+"="+damaged, "GOTRACEBACK=crash")
	out, err := cmd.Output()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: got %v (%d bytes on stdout), want a crash", err, len(out))
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGABRT {
		t.Errorf("child: got %v, want killed by SIGABRT (runtime.crash after the SIGSEGV)", ee)
	}
	if got, want := childError(damaged, err, string(ee.Stderr)).Error(), "crashed the HDF5 library (signal: aborted)"; !strings.Contains(got, want) {
		t.Errorf("error: got %q, want it to contain %q", got, want)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("the child left %s in its folder, want nothing (core-size limit: %d)", e.Name(), raised.Cur)
	}
}

// TestReadKerasInChildErrors gives readKerasInChild small shell scripts in place of fwbench, one
// per way a child can end.
func TestReadKerasInChildErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ten.h5")
	if err := os.WriteFile(file, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, script string
		timeout      time.Duration
		want         string // the whole message, or "~" and a part of it
	}{
		{"keras error (exit 3)", `echo "keras: ten.h5: not a VGG" >&2; exit 3`, time.Minute,
			"keras: ten.h5: not a VGG"},
		{"killed by a signal", `kill -KILL $$`, time.Minute,
			"keras: reading " + file + " crashed the HDF5 library (signal: killed): the file is damaged or not a Keras weight file"},
		{"Go runtime's fatal signal in cgo (exit 2)", `printf 'SIGSEGV: segmentation violation\nPC=0x7f m=0 sigcode=1 addr=0x10\nsignal arrived during cgo execution\n' >&2; exit 2`, time.Minute,
			"keras: reading " + file + " crashed the HDF5 library (SIGSEGV: segmentation violation): the file is damaged or not a Keras weight file"},
		{"Go runtime's fatal signal in Go (exit 2)", `printf 'fatal error: unexpected signal during runtime execution\n[signal SIGBUS: bus error code=0x2 addr=0x0 pc=0x0]\n' >&2; exit 2`, time.Minute,
			"~crashed the HDF5 library (SIGBUS: bus error)"},
		{"interrupted", `kill -INT $$`, time.Minute,
			"keras: reading " + file + ": interrupted (signal: interrupt)"},
		{"other exit status", `echo "something else" >&2; exit 1`, time.Minute,
			"keras: reading " + file + " in a child process: exit status 1: something else"},
		// The bound: 4 bytes per byte of the 10-byte file, and 1 MiB: 1048616 bytes.
		{"too much output", `head -c 1048617 /dev/zero`, time.Minute,
			"keras: reading " + file + " gave more than 1048616 bytes of tensors (4 per byte of the file, and 1 MiB): the file is damaged or not a Keras weight file"},
		{"too slow", `exec sleep 30`, 300 * time.Millisecond,
			"keras: reading " + file + " took longer than 300ms: the file is damaged or not a Keras weight file"},
		{"not safetensors", `echo hello`, time.Minute,
			"~keras: reading " + file + " in a child process: weights: safetensors"},
	}
	for i, tt := range tests {
		exe := filepath.Join(dir, "child"+string(rune('a'+i)))
		if err := os.WriteFile(exe, []byte("#!/bin/sh\n"+tt.script+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ts, err := readKerasInChild(exe, file, tt.timeout)
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("%s: took %v, want the child stopped at once", tt.name, took)
		}
		switch part, ok := strings.CutPrefix(tt.want, "~"); {
		case err == nil:
			t.Errorf("%s: got %d tensors, want error %q", tt.name, len(ts), tt.want)
		case ok && !strings.Contains(err.Error(), part):
			t.Errorf("%s: got %q, want it to contain %q", tt.name, err, part)
		case !ok && err.Error() != tt.want:
			t.Errorf("%s: got %q, want %q", tt.name, err, tt.want)
		}
	}
}
