package compare

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of compare's own inputs (issue #17, item 7): repeat, distinct frameworks, the lock on
// the output folder and one checkpoint folder per child.

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name       string
		frameworks []string
		repeat     int
		msg        string // "" means valid; else a word the error must contain
	}{
		{"defaults", nil, 0, ""},
		{"zero repeat is the library default", []string{TensorFlow, Torch}, 0, ""},
		{"one repeat", []string{Torch}, 1, ""},
		{"negative repeat", []string{TensorFlow, Torch}, -1, "repeat must be at least 1, got -1"},
		{"same framework twice", []string{Torch, Torch}, 2, `framework "torch" is named twice`},
		{"same framework apart", []string{TensorFlow, Torch, TensorFlow}, 1, `framework "tensorflow" is named twice`},
	}
	for _, tt := range tests {
		cfg := Config{Spec: testSpec(), Frameworks: tt.frameworks, Repeat: tt.repeat}
		err := cfg.Validate()
		switch {
		case tt.msg == "" && err != nil:
			t.Errorf("%s: got %v, want no error", tt.name, err)
		case tt.msg != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg)):
			t.Errorf("%s: got %v, want ErrInvalid containing %q", tt.name, err, tt.msg)
		}
	}
}

func TestWithDefaultsRepeat(t *testing.T) {
	for _, tt := range []struct{ in, want int }{
		{0, 2},   // the zero value means the documented default, 2
		{1, 1},   // set values are kept
		{5, 5},   //
		{-1, -1}, // left for validate to refuse
	} {
		if got := withDefaults(Config{Repeat: tt.in}).Repeat; got != tt.want {
			t.Errorf("withDefaults(Repeat %d): got %d, want %d", tt.in, got, tt.want)
		}
	}
}

// TestRunRefusesBeforeWork: an invalid Config is refused before Run creates the output folder.
func TestRunRefusesBeforeWork(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"duplicate frameworks", Config{Frameworks: []string{Torch, Torch}}},
		{"negative repeat", Config{Repeat: -3}},
	} {
		out := filepath.Join(t.TempDir(), "report")
		tt.cfg.Spec, tt.cfg.Out, tt.cfg.Exe = testSpec(), out, "/nonexistent/fwbench"
		_, err := Run(context.Background(), tt.cfg, nil)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", tt.name, err)
		}
		if _, serr := os.Stat(out); !os.IsNotExist(serr) {
			t.Errorf("%s: output folder: got %v, want it not created", tt.name, serr)
		}
	}
}

func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	a, err := LockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Stale != 0 {
		t.Errorf("first lock of a new folder: got stale pid %d, want 0", a.Stale)
	}
	// A second hold, even from this process (another open file), is refused.
	_, err = LockDir(dir)
	if !errors.Is(err, ErrLocked) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("second lock: got %v, want ErrLocked and ErrInvalid", err)
	}
	for _, want := range []string{strconv.Quote(dir), fmt.Sprintf("process %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second lock: got %q, want it to contain %q", err, want)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	b, err := LockDir(dir)
	if err != nil {
		t.Fatalf("lock after Close: got %v, want the lock", err)
	}
	defer b.Close()
	if b.Stale != 0 {
		t.Errorf("lock after a clean Close: got stale pid %d, want 0", b.Stale)
	}
}

// TestLockStaleAfterKill: a process that holds the lock is killed with SIGKILL; the kernel
// releases its flock, and the next LockDir takes the lock over and reports the dead PID.
func TestLockStaleAfterKill(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "FWBENCH_TEST_LOCK_HOLDER="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "locked") {
				line <- sc.Text()
				return
			}
		}
		close(line)
	}()
	select {
	case _, ok := <-line:
		if !ok {
			t.Fatal("the holder process ended without taking the lock")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the holder process took no lock within 30 s")
	}
	holder := cmd.Process.Pid
	_, err = LockDir(dir)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", holder)) {
		t.Fatalf("lock while held: got %v, want ErrLocked naming process %d", err, holder)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	l, err := LockDir(dir)
	if err != nil {
		t.Fatalf("lock after the holder was killed: got %v, want the lock", err)
	}
	defer l.Close()
	if l.Stale != holder {
		t.Errorf("stale pid: got %d, want the killed holder's %d", l.Stale, holder)
	}
	b, err := os.ReadFile(filepath.Join(dir, LockFile))
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file: got %q (%v), want this process's pid %d", b, err, os.Getpid())
	}
}

// TestRunLockedOut: Run on a folder that another comparison holds fails with ErrLocked before
// any work (no synthetic data is written).
func TestRunLockedOut(t *testing.T) {
	out := t.TempDir()
	l, err := LockDir(out)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = Run(context.Background(), Config{Spec: testSpec(), Out: out, Exe: "/nonexistent/fwbench"}, nil)
	if !errors.Is(err, ErrLocked) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrLocked and ErrInvalid", err)
	}
	if _, err := os.Stat(filepath.Join(out, "data")); !os.IsNotExist(err) {
		t.Errorf("synthetic data: got %v, want none written", err)
	}
}

func TestChildCheckpoint(t *testing.T) {
	cfg := Config{Out: "rep"}
	tests := []struct {
		name       string
		checkpoint string
		epochs     int
		fw         string
		repeat     int // 0-based, as Run counts
		nproc      int
		want       string
	}{
		{"default folder", "", 2, Torch, 0, 1, filepath.Join("rep", "checkpoints", "torch-1")},
		{"user folder", "ck", 2, Torch, 0, 1, filepath.Join("ck", "torch-1")},
		{"user folder, other framework", "ck", 2, TensorFlow, 0, 1, filepath.Join("ck", "tensorflow-1")},
		{"user folder, second repeat", "ck", 2, Torch, 1, 1, filepath.Join("ck", "torch-2")},
		{"data-parallel run", "ck", 2, Torch, 1, 2, filepath.Join("ck", "torch-2-n2")},
		{"no epoch to train (parity run)", "ck", 0, Torch, 0, 1, ""},
	}
	for _, tt := range tests {
		s := Spec{Checkpoint: tt.checkpoint, Epochs: tt.epochs}
		if got := childCheckpoint(cfg, s, tt.fw, tt.repeat, tt.nproc); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestChildrenGetOwnCheckpoint runs runChild with a stand-in for the fwbench binary that
// records its arguments: with --checkpoint X, every (framework, repeat) child is told its own
// folder X/<framework>-<repeat>.
func TestChildrenGetOwnCheckpoint(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "fake-fwbench")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$FAKE_ARGS\"\nexit 1\n"
	if err := os.WriteFile(exe, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ck := filepath.Join(dir, "ck")
	spec := testSpec()
	spec.Checkpoint = ck
	var got []string
	for r := 0; r < 2; r++ {
		for _, fw := range []string{TensorFlow, Torch} {
			argsFile := filepath.Join(dir, fmt.Sprintf("args-%s-%d", fw, r))
			cfg := Config{Spec: spec, Out: filepath.Join(dir, "out"), Exe: exe, Repeat: 2, Env: []string{"FAKE_ARGS=" + argsFile}}
			if _, fail := runChild(context.Background(), cfg, fw, r, 1, func(Progress) {}); fail == nil {
				t.Fatalf("%s %d: the stand-in exits 1, want a Failure", fw, r+1)
			}
			b, err := os.ReadFile(argsFile)
			if err != nil {
				t.Fatal(err)
			}
			args := strings.Split(strings.TrimSpace(string(b)), "\n")
			i := slices.Index(args, "--checkpoint")
			if i < 0 || i+1 >= len(args) {
				t.Fatalf("%s %d: got args %q, want a --checkpoint", fw, r+1, args)
			}
			want := filepath.Join(ck, fmt.Sprintf("%s-%d", fw, r+1))
			if args[i+1] != want {
				t.Errorf("%s %d: got --checkpoint %q, want %q", fw, r+1, args[i+1], want)
			}
			got = append(got, args[i+1])
		}
	}
	slices.Sort(got)
	if len(slices.Compact(got)) != 4 {
		t.Errorf("checkpoint folders: got %q, want 4 distinct", got)
	}
}

// TestMain runs this test binary as the lock holder of TestLockStaleAfterKill when
// FWBENCH_TEST_LOCK_HOLDER names a folder: it takes the lock, says so and waits to be killed.
func TestMain(m *testing.M) {
	if dir := os.Getenv("FWBENCH_TEST_LOCK_HOLDER"); dir != "" {
		if _, err := LockDir(dir); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		time.Sleep(time.Minute) // killed by the parent long before
		os.Exit(1)
	}
	os.Exit(m.Run())
}
