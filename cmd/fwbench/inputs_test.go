package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fwbench/fwbench/compare"

	"github.com/fwbench/fwbench/internal/testfixture"
)

// Issue #17, items 4, 5 and 8: hangs, unbounded inputs and silent data loss, through the
// real binary. Every hostile run has a 60 s deadline (the process group is killed after it).

// runBounded runs fwbench like runCLI, killed after 60 s.
func runBounded(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLIWith(t, cliRun{timeout: 60 * time.Second}, args...)
}

// TestUnboundedInputsExitTwo: each number is refused by Spec.Validate before any native call
// or large allocation: exit 2, one message, no crash.
func TestUnboundedInputsExitTwo(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string
	}{
		// The recipe's bounds are recipe.Config.Validate's messages; the rest compare.Spec.Validate's.
		// hidden 1,000,000 at 32 px: fc7 alone is 10^12 weights (compare.MaxParams is 2^30).
		{"hidden 1,000,000", []string{"train", "-f", "torch", "--hidden", "1000000"}, "hidden 1000000 at 32 px has"},
		{"hidden 1,000,000 in compare", []string{"compare", "--hidden", "1000000", "--out", t.TempDir()}, "over the limit of 1073741824"},
		{"threads 100000", []string{"train", "-f", "torch", "--threads", "100000"}, "threads 100000, inter-op threads 100000: want each in [0, "},
		{"threads 100000 with tensorflow", []string{"train", "-f", "tensorflow", "--threads", "100000"}, "threads 100000, inter-op threads 100000: want each in [0, "},
		{"inter-op threads 100000", []string{"train", "-f", "torch", "--inter-op-threads", "100000"}, "threads 0, inter-op threads 100000"},
		{"steps per epoch -1", []string{"train", "--steps-per-epoch", "-1"}, "steps per epoch must not be negative"},
		{"warm-up steps -1", []string{"train", "--warmup-steps", "-1"}, "warm-up steps must not be negative"},
		{"target accuracy 5", []string{"train", "--target-accuracy", "5"}, "target accuracy must be in [0, 1]"},
		{"momentum NaN", []string{"train", "--momentum", "NaN"}, "momentum NaN: want a finite number"},
		{"lr Inf", []string{"train", "--lr", "Inf"}, "lr +Inf: want a finite number"},
		{"dropout NaN in compare", []string{"compare", "--dropout", "NaN", "--out", t.TempDir()}, "dropout NaN: want a finite number"},
		// 1024·512·512·3·4 = 3.2 GB of float32 input per batch.
		{"batch × image memory", []string{"train", "--batch-size", "1024", "--image-size", "512"}, "over the limit of 1073741824"},
		// 16·8192·8192·3·4 = 12.9 GB of float32 input per batch.
		{"image size 8192", []string{"train", "--image-size", "8192"}, "a batch of 16 images of 8192×8192 is 12884901888 bytes"},
		{"image size 100", []string{"train", "--image-size", "100"}, "image size 100: want a multiple of 32"},
		{"max pixels -1", []string{"train", "--max-pixels", "-1"}, "max pixels must be in [1, "},
	}
	for _, tt := range tests {
		_, stderr, code := runBounded(t, append(tt.args, "--quiet", "--data", smallDS)...)
		if code != 2 || !strings.Contains(stderr, tt.msg) {
			t.Errorf("%s: got exit %d and stderr %q, want exit 2 and a message containing %q", tt.name, code, stderr, tt.msg)
		}
		if strings.Contains(stderr, "panic") || strings.Contains(stderr, "fatal error") || strings.Contains(stderr, "goroutine ") {
			t.Errorf("%s: stderr shows a crash:\n%s", tt.name, stderr)
		}
	}
}

// dirtyData is smallDS plus three files a run must skip, and says so: a FIFO named x.png
// (never opened), a text file named bad.png, and a 7000×7000 16-bit PNG header.
func dirtyData(t *testing.T) (dir string, skipped []string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "data")
	if err := os.CopyFS(dir, os.DirFS(smallDS)); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	class := ""
	for _, e := range es {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			class = filepath.Join(dir, e.Name())
			break
		}
	}
	if err := syscall.Mkfifo(filepath.Join(class, "x.png"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(class, "bad.png"), []byte("not an image"), 0o644)
	os.WriteFile(filepath.Join(class, "huge.png"), testfixture.PNGHeader(7000, 7000, 16), 0o644)
	return dir, []string{"bad.png", "huge.png", "x.png"}
}

func readRecord(t *testing.T, path string) compare.RunRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r compare.RunRecord
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// checkSkipped checks a run record's data accounting: the three files, with their reasons.
func checkSkipped(t *testing.T, who string, d compare.DatasetInfo, maxPixels string) {
	t.Helper()
	want := map[string]string{
		"x.png":    "not a regular file (a named pipe), not opened",
		"bad.png":  "not an image",
		"huge.png": "png declares 7000x7000 pixels, over the limit of " + maxPixels,
	}
	if d.SkippedCount != 3 || len(d.Skipped) != 3 {
		t.Fatalf("%s: got skipped_count %d and %d listed, want 3 and 3: %+v", who, d.SkippedCount, len(d.Skipped), d.Skipped)
	}
	for _, s := range d.Skipped {
		if r := want[filepath.Base(s.Path)]; r == "" || !strings.Contains(s.Reason, r) {
			t.Errorf("%s: %s: got reason %q, want it to contain %q", who, s.Path, s.Reason, r)
		}
	}
}

// TestSkippedFilesAreAccounted: a run over a folder with unusable files (a FIFO among them)
// finishes, lists each skipped file with its reason in the run record and says how many on
// the terminal; --max-pixels reaches the dataset; --strict turns the first skip into exit 2.
func TestSkippedFilesAreAccounted(t *testing.T) {
	data, _ := dirtyData(t)
	rec := filepath.Join(t.TempDir(), "run.json")
	stdout, stderr, code := runBounded(t, "train", "-f", "torch", "--data", data, "--image-size", "32", "--hidden", "16",
		"--batch-size", "6", "--epochs", "1", "--steps-per-epoch", "2", "--warmup-steps", "1", "--quiet",
		"--max-pixels", "40000000", "--json", rec)
	if code != 0 {
		t.Fatalf("train: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	checkSkipped(t, "train", readRecord(t, rec).Dataset, "40000000")
	if !strings.Contains(stdout, "skipped 3 data file(s)") {
		t.Errorf("stdout does not say how many files were skipped:\n%s", stdout)
	}

	// --strict: the first unusable file in path order (bad.png) is an error, exit 2.
	_, stderr, code = runBounded(t, append([]string{"train", "-f", "torch", "--strict"}, tinyWith(data)...)...)
	if code != 2 || !strings.Contains(stderr, "bad.png") {
		t.Errorf("--strict: got exit %d and stderr %q, want exit 2 naming bad.png", code, stderr)
	}
	// --max-pixels below 32×32: every image is skipped, which leaves classes empty: exit 2.
	_, stderr, code = runBounded(t, append([]string{"train", "-f", "torch", "--max-pixels", "1000"}, tinyWith(data)...)...)
	if code != 2 || !strings.Contains(stderr, "has no usable image") {
		t.Errorf("--max-pixels 1000: got exit %d and stderr %q, want exit 2 and \"has no usable image\"", code, stderr)
	}
}

// tinyWith is tiny() on another data folder.
func tinyWith(data string) []string {
	a := tiny()
	a[1] = data
	return a
}

// TestCompareReportsSkippedFiles: compare's report holds each run's record, with the
// skipped files; --max-pixels reaches the children.
func TestCompareReportsSkippedFiles(t *testing.T) {
	data, _ := dirtyData(t)
	out := t.TempDir()
	stdout, stderr, code := runCLI(t, append([]string{"compare", "--repeat", "1", "--out", out, "--max-pixels", "40000000"},
		append(tinyWith(data), "--epochs", "1")...)...)
	if code != 0 {
		t.Fatalf("compare: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r compare.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Runs) != 2 {
		t.Fatalf("got %d runs, want 2", len(r.Runs))
	}
	for _, run := range r.Runs {
		checkSkipped(t, run.Framework, run.Dataset, "40000000")
	}
}

// TestDataFolderHazards: a FIFO in a data folder does not block `dataset inspect` or
// `train`, and a class folder linked to the data root is refused (exit 2) instead of
// becoming a class that holds every other class's images.
func TestDataFolderHazards(t *testing.T) {
	data, _ := dirtyData(t)
	stdout, stderr, code := runBounded(t, "dataset", "inspect", "--json", data)
	if code != 0 || !strings.Contains(stdout, "a named pipe") {
		t.Errorf("inspect with a FIFO: got exit %d, stdout %q, stderr %q; want exit 0 listing the named pipe", code, stdout, stderr)
	}
	if err := os.Symlink(data, filepath.Join(data, "zz")); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = runBounded(t, "dataset", "inspect", data)
	if code != 2 || !strings.Contains(stderr, "holds the data set itself") {
		t.Errorf("inspect with a class linked to the root: got exit %d and stderr %q, want exit 2 and \"holds the data set itself\"", code, stderr)
	}
	_, stderr, code = runBounded(t, append([]string{"train", "-f", "torch"}, tinyWith(data)...)...)
	if code != 2 || !strings.Contains(stderr, "holds the data set itself") {
		t.Errorf("train with a class linked to the root: got exit %d and stderr %q, want exit 2 and \"holds the data set itself\"", code, stderr)
	}
}
