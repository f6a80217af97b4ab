package compare

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/weights"
)

// TestCheckResumeRecipe: a checkpoint saved under one recipe resumes under the same one
// (another epoch count included) and is refused, naming the keys, under any other.
func TestCheckResumeRecipe(t *testing.T) {
	base := testSpec()
	base.Threads = 2
	dir := filepath.Join(t.TempDir(), "ckpt")
	base.Checkpoint = dir
	if err := PrepareOutputs(base); err != nil {
		t.Fatal(err)
	}
	if err := weights.SaveCheckpoint(dir, []*weights.Tensor{{Name: "w", Shape: []int{1}, Data: []float32{1}}}, nil,
		weights.CheckpointMeta{Framework: Torch}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(s *Spec)
		want []string // differing keys named in the error; none means accepted
	}{
		{"same recipe", func(s *Spec) {}, nil},
		{"more epochs", func(s *Spec) { s.Epochs = 40 }, nil},
		{"seed", func(s *Spec) { s.Seed = 2 }, []string{`seed (checkpoint "1", this run "2")`}},
		{"mode", func(s *Spec) { s.Mode = "features" }, []string{"mode"}},
		{"lr", func(s *Spec) { s.LR = 0.1 }, []string{`lr (checkpoint "0.0003", this run "0.1")`}},
		{"model", func(s *Spec) { s.Model = "vgg11" }, []string{"model"}},
		{"head", func(s *Spec) { s.Head = "keras" }, []string{"head"}},
		{"seed and lr", func(s *Spec) { s.Seed, s.LR = 3, 0.5 }, []string{"lr (", "seed ("}},
	}
	for _, tt := range tests {
		s := base
		s.Checkpoint = ""
		s.Resume = dir
		tt.edit(&s)
		err := CheckResume(s)
		if len(tt.want) == 0 {
			if err != nil {
				t.Errorf("%s: got %v, want nil", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", tt.name, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: got %q, want it to name %q", tt.name, err, w)
			}
		}
		if n := strings.Count(err.Error(), "(checkpoint "); n != len(tt.want) {
			t.Errorf("%s: got %d differing keys in %q, want %d", tt.name, n, err, len(tt.want))
		}
	}
}

// TestCheckResumeNoRecipe: a checkpoint without a recipe, or no checkpoint, is refused.
func TestCheckResumeNoRecipe(t *testing.T) {
	dir := t.TempDir()
	s := testSpec()
	s.Resume = dir
	if err := CheckResume(s); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "no complete checkpoint") {
		t.Errorf("empty folder: got %v, want ErrInvalid: no complete checkpoint", err)
	}
	if err := weights.SaveCheckpoint(dir, nil, nil, weights.CheckpointMeta{Framework: Torch}); err != nil {
		t.Fatal(err)
	}
	if err := CheckResume(s); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "records no recipe") {
		t.Errorf("no recipe: got %v, want ErrInvalid: records no recipe", err)
	}
}

// TestPrepareOutputs: output files are checked before training, and nothing is created
// for them.
func TestPrepareOutputs(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link.json")
	os.Symlink(filepath.Join(dir, "target.json"), link)
	tests := []struct {
		name, path, want string // want "" means accepted
	}{
		{"new file", filepath.Join(dir, "run.json"), ""},
		{"directory", dir, "is a directory"},
		{"missing folder", filepath.Join(dir, "missing", "dir", "x.json"), "does not exist"},
		{"symlink", link, "a symbolic link"},
		{"device", "/dev/full", "a device node"},
	}
	for _, tt := range tests {
		err := PrepareOutputs(testSpec(), tt.path)
		if tt.want == "" && err != nil || tt.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("missing folder: got it created, want it left missing")
	}
	// The report folder is fwbench's: created; a report file that is a symlink is refused.
	out := filepath.Join(dir, "a", "report")
	if err := CheckWritable(out, ReportFiles...); err != nil {
		t.Errorf("new report folder: got %v, want nil", err)
	}
	os.Symlink("/dev/null", filepath.Join(out, "report.md"))
	if err := CheckWritable(out, ReportFiles...); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "report.md") {
		t.Errorf("report.md a symlink: got %v, want ErrInvalid naming report.md", err)
	}
}

// TestRunChecksResumeRecipe: compare --resume X under another recipe is refused before any
// work: ErrInvalid naming the key, and no --out folder is made. X holds one folder per child
// (childCheckpoint); here torch's first run left a checkpoint.
func TestRunChecksResumeRecipe(t *testing.T) {
	base := t.TempDir()
	ckpt := filepath.Join(base, "torch-1")
	s := testSpec()
	s.Threads = 2
	s.Checkpoint = ckpt
	if err := PrepareOutputs(s); err != nil {
		t.Fatal(err)
	}
	if err := weights.SaveCheckpoint(ckpt, nil, nil, weights.CheckpointMeta{Framework: Torch}); err != nil {
		t.Fatal(err)
	}
	s.Checkpoint, s.Resume, s.Seed = "", base, 5
	out := filepath.Join(t.TempDir(), "out")
	_, err := Run(context.Background(), Config{Spec: s, Out: out, Exe: "/nonexistent/fwbench"}, nil)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `seed (checkpoint "1", this run "5")`) {
		t.Errorf("got %v, want ErrInvalid naming seed", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("--out: got it created, want nothing written")
	}
}

// TestChildResume: under compare --resume X each training child resumes from its own
// X/<framework>-<repeat> when that holds a checkpoint, starts afresh otherwise, and the parity
// run (no epochs) never resumes.
func TestChildResume(t *testing.T) {
	base := t.TempDir()
	if err := weights.SaveCheckpoint(filepath.Join(base, "tensorflow-1"), nil, nil, weights.CheckpointMeta{Framework: TensorFlow}); err != nil {
		t.Fatal(err)
	}
	s := testSpec()
	s.Resume = base
	tests := []struct {
		fw     string
		repeat int
		epochs int
		want   string
	}{
		{TensorFlow, 0, 6, filepath.Join(base, "tensorflow-1")},
		{Torch, 0, 6, ""},      // no checkpoint there: a fresh run
		{TensorFlow, 1, 6, ""}, // tensorflow-2 was never written
		{TensorFlow, 0, 0, ""}, // the parity run
	}
	for _, tc := range tests {
		s.Epochs = tc.epochs
		if got := childResume(s, tc.fw, tc.repeat); got != tc.want {
			t.Errorf("childResume(%s, repeat %d, epochs %d): got %q, want %q", tc.fw, tc.repeat, tc.epochs, got, tc.want)
		}
	}
}
