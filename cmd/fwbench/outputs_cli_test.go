package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/weights"
)

// TestOutputPathsCheckedFirst: an output path that cannot be written (issue 17, item 1) is
// refused with exit 2 before any training, and what is at the path is left as it was.
func TestOutputPathsCheckedFirst(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target.json")
	os.WriteFile(target, []byte("keep"), 0o644)
	link := filepath.Join(dir, "link.json")
	os.Symlink(target, link)
	fifo := filepath.Join(dir, "fifo.safetensors")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"--json names a directory", []string{"--json", dir}, "is a directory"},
		{"--json in a missing folder", []string{"--json", filepath.Join(dir, "missing", "dir", "x.json")}, "does not exist"},
		{"--json is a symlink", []string{"--json", link}, "a symbolic link"},
		{"--json is a device", []string{"--json", "/dev/full"}, "a device node"},
		{"--save-weights is a FIFO", []string{"--save-weights", fifo}, "a FIFO"},
	}
	for _, tt := range tests {
		// --progress-json prints a line per phase from the first batch on: a refusal before
		// training prints none.
		_, stderr, code := runCLI(t, append([]string{"train", "--framework", "torch", "--progress-json"}, tiny(tt.args...)...)...)
		if code != 2 || !strings.Contains(stderr, tt.msg) {
			t.Errorf("%s: got exit %d, stderr %q; want 2 saying %q", tt.name, code, stderr, tt.msg)
		}
		if strings.Contains(stderr, compare.ProgressPrefix) {
			t.Errorf("%s: got progress lines %q, want the refusal before training", tt.name, stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("missing folder: got it created, want it left missing")
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&os.ModeSymlink == 0 {
		t.Errorf("symlink: got %v (%v), want it left a symlink", st, err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("symlink target: got %q, want %q", b, "keep")
	}
	if st, err := os.Lstat(fifo); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("FIFO: got %v (%v), want it left a FIFO", st, err)
	}
}

// TestFailedCheckpointSave: when the second checkpoint save fails as on a full disk
// (weights.TestFailCheckpointEnv), train exits 1, its run record is partial and carries the
// error, the summary prints no zero totals, and --resume continues from the first
// checkpoint (epoch 1), for both frameworks (issue 17, item 2).
func TestFailedCheckpointSave(t *testing.T) {
	for _, fw := range []string{"torch", "tensorflow"} {
		t.Run(fw, func(t *testing.T) {
			dir := t.TempDir()
			ckpt, rec := filepath.Join(dir, "ckpt"), filepath.Join(dir, "run.json")
			t.Setenv(weights.TestFailCheckpointEnv, "2") // epoch 1's save works, epoch 2's fails
			stdout, stderr, code := runCLI(t, append([]string{"train", "--framework", fw, "--checkpoint", ckpt, "--json", rec}, tiny()...)...)
			os.Unsetenv(weights.TestFailCheckpointEnv)
			if code != 1 || !strings.Contains(stderr, "no space left on device") {
				t.Fatalf("train: got exit %d, stderr %q; want 1 with the ENOSPC error", code, stderr)
			}
			if strings.Contains(stdout, "total 0.00 s") || strings.Contains(stdout, "peak RSS 0 MiB") {
				t.Errorf("summary: got %q, want no zero totals", stdout)
			}
			var r compare.RunRecord
			b, err := os.ReadFile(rec)
			if err == nil {
				err = json.Unmarshal(b, &r)
			}
			if err != nil || !r.Partial || !strings.Contains(r.Error, "no space left on device") || len(r.Epochs) != 2 {
				t.Errorf("record: got partial=%v error=%q epochs=%d (%v); want partial, the ENOSPC error, 2 epochs", r.Partial, r.Error, len(r.Epochs), err)
			}
			meta, err := weights.ReadCheckpointMeta(ckpt)
			if err != nil || meta.Epoch != 1 {
				t.Fatalf("checkpoint after the failed save: got epoch %d (%v), want 1", meta.Epoch, err)
			}
			resumed := filepath.Join(dir, "resumed.json")
			_, stderr, code = runCLI(t, append([]string{"train", "--framework", fw, "--resume", ckpt, "--json", resumed}, tiny()...)...)
			if code != 0 {
				t.Fatalf("resume: got exit %d, want 0\n%s", code, stderr)
			}
			var r2 compare.RunRecord
			b, _ = os.ReadFile(resumed)
			if err := json.Unmarshal(b, &r2); err != nil || r2.ResumedFrom == nil || *r2.ResumedFrom != (compare.Position{Epoch: 1}) || r2.Partial {
				t.Errorf("resumed record: got resumed_from %v partial %v (%v); want epoch 1 step 0, complete", r2.ResumedFrom, r2.Partial, err)
			}
		})
	}
}

// TestResumeChecksRecipe: --resume under another seed, mode, learning rate, model or head is
// refused with exit 2 naming the key (issue 17, item 7; compare.TestCheckResumeRecipe
// covers the accepted cases).
func TestResumeChecksRecipe(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "ckpt")
	if _, stderr, code := runCLI(t, append([]string{"train", "--framework", "torch", "--checkpoint", ckpt}, tiny("--epochs", "1")...)...); code != 0 {
		t.Fatalf("train: exit %d\n%s", code, stderr)
	}
	tests := []struct {
		flags []string
		key   string
	}{
		{[]string{"--seed", "9"}, "seed"},
		{[]string{"--mode", "features"}, "mode"},
		{[]string{"--lr", "0.1"}, "lr"},
		{[]string{"--model", "vgg11"}, "model"},
		{[]string{"--head", "keras"}, "head"},
	}
	for _, tt := range tests {
		_, stderr, code := runCLI(t, append([]string{"train", "--framework", "torch", "--resume", ckpt}, tiny(tt.flags...)...)...)
		if want := fmt.Sprintf("%s (checkpoint ", tt.key); code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("%v: got exit %d, stderr %q; want 2 naming %q", tt.flags, code, stderr, want)
		}
	}
}
