package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/dataset"
)

// runDataset runs `fwbench dataset ARGS...` with the binary under test (built by TestMain)
// and returns its stdout, stderr and exit status: the exit codes are the program's own.
func runDataset(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCLI(t, append([]string{"dataset"}, args...)...)
}

func TestDatasetSynthInspectJSON(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	stdout, stderr, code := runDataset(t, "synth", "--out", dir, "--classes", "3", "--per-class", "7", "--size", "16", "--seed", "5")
	if code != 0 || !strings.Contains(stdout, "wrote 21 images") {
		t.Fatalf("synth: got code %d stdout %q stderr %q, want 0 and \"wrote 21 images\"", code, stdout, stderr)
	}
	stdout, stderr, code = runDataset(t, "inspect", "--json", dir)
	if code != 0 {
		t.Fatalf("inspect: got code %d stderr %q, want 0", code, stderr)
	}
	var r dataset.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("inspect --json: %v in %q", err, stdout)
	}
	if len(r.Classes) != 3 || r.Images != 21 {
		t.Fatalf("got %d classes %d images, want 3 and 21", len(r.Classes), r.Images)
	}
	for _, c := range r.Classes {
		if c.Total != 7 {
			t.Errorf("class %s: got %d images, want 7 (--per-class)", c.Name, c.Total)
		}
	}
	stdout, _, code = runDataset(t, "inspect", dir)
	if code != 0 || !strings.Contains(stdout, "3 classes, 21 images") {
		t.Errorf("inspect text: got code %d output %q", code, stdout)
	}
}

func TestDatasetBadInput(t *testing.T) {
	oneClass := t.TempDir()
	if err := dataset.Synthesize(oneClass, 1, 2, 8, 1, "png"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"synth without out", []string{"synth"}, "out"},
		{"synth zero classes", []string{"synth", "--out", t.TempDir(), "--classes", "0"}, "--classes 0"},
		{"synth bad format", []string{"synth", "--out", t.TempDir(), "--format", "gif"}, `--format "gif"`},
		{"inspect no arg", []string{"inspect"}, "want one folder"},
		{"inspect missing", []string{"inspect", filepath.Join(oneClass, "nope")}, "no such file"},
		{"inspect one class", []string{"inspect", oneClass}, "need at least 2"},
		{"inspect val split", []string{"inspect", "--val-split", "1", oneClass}, "--val-split 1"},
		{"crawl no query", []string{"crawl", "--out", t.TempDir()}, "query"},
		{"crawl bad endpoint", []string{"crawl", "--query", "x", "--out", t.TempDir(), "--endpoint", "http://127.0.0.1:1/"}, "has no {query}"},
		{"export nothing", []string{"export", oneClass}, "nothing to do"},
		{"flags after DIR are read", []string{"export", oneClass, "--out", "x.npz"}, "need at least 2"},
	}
	for _, tc := range tests {
		_, stderr, code := runDataset(t, tc.args...)
		if code != 2 || !strings.Contains(stderr, tc.wantErr) {
			t.Errorf("%s: got code %d stderr %q, want 2 and %q", tc.name, code, stderr, tc.wantErr)
		}
	}
}

func TestDatasetCrawlLocal(t *testing.T) {
	var buf bytes.Buffer
	if err := encodeTestPNG(&buf); err != nil {
		t.Fatal(err)
	}
	png := buf.Bytes()
	mux := http.NewServeMux()
	var srv *httptest.Server
	mux.HandleFunc("/search", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("first") == "1" {
			fmt.Fprintf(w, `<img src="%s/a.png">`, srv.URL)
		}
	})
	mux.HandleFunc("/a.png", func(w http.ResponseWriter, r *http.Request) { w.Write(png) })
	srv = httptest.NewServer(mux)
	defer srv.Close()
	out := filepath.Join(t.TempDir(), "lion")
	stdout, stderr, code := runDataset(t, "crawl", "--query", "lion", "--limit", "2", "--out", out,
		"--endpoint", srv.URL+"/search?q={query}&first={first}", "--delay", "0", "--json",
		"--allow-private-targets") // the test server listens on loopback
	if code != 0 {
		t.Fatalf("got code %d stderr %q", code, stderr)
	}
	var res dataset.CrawlResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Saved != 1 || res.Total != 1 {
		t.Errorf("got %q (%v), want 1 saved image", stdout, err)
	}
	if !strings.Contains(stderr, "saved "+srv.URL+"/a.png") {
		t.Errorf("progress: got %q, want a saved line on stderr", stderr)
	}
}

func encodeTestPNG(w *bytes.Buffer) error {
	dir, err := os.MkdirTemp("", "fwbench-png")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := dataset.Synthesize(dir, 1, 1, 8, 1, "png"); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(dir, dataset.SynthClassNames(1)[0], "0.png"))
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func TestDatasetExport(t *testing.T) {
	dir := t.TempDir()
	if err := dataset.Synthesize(dir, 2, 5, 16, 1, "png"); err != nil {
		t.Fatal(err)
	}
	npz, csv := filepath.Join(t.TempDir(), "b.npz"), filepath.Join(t.TempDir(), "o.csv")
	args := []string{"export", "--out", npz, "--order", csv, "--image-size", "8", "--batch-size", "3", "--batch", "1", "--augment", dir}
	stdout, stderr, code := runDataset(t, args...)
	if code != 0 {
		t.Fatalf("got code %d stderr %q", code, stderr)
	}
	b, err := dataset.ReadBatch(npz)
	if err != nil {
		t.Fatal(err)
	}
	if b.N != 3 || b.H != 8 || b.Index != 1 || !strings.Contains(stdout, b.Hash()) {
		t.Errorf("got batch %dx%d index %d, stdout %q; want 3 images of 8 px, index 1, hash printed", b.N, b.H, b.Index, stdout)
	}
	// The same command twice gives the same bytes.
	stdout2, _, _ := runDataset(t, args...)
	if stdout2 != stdout {
		t.Errorf("second export: got %q, want %q", stdout2, stdout)
	}
}
