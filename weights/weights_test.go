package weights

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/model"
)

func TestNumElements(t *testing.T) {
	tests := []struct {
		shape []int
		want  int
	}{
		{nil, 1}, // a scalar
		{[]int{0, 3}, 0},
		{[]int{64, 3, 3, 3}, 1728},
	}
	for _, tt := range tests {
		if got := (&Tensor{Shape: tt.shape}).NumElements(); got != tt.want {
			t.Errorf("shape %v: got %d, want %d", tt.shape, got, tt.want)
		}
	}
}

func TestCheckShapes(t *testing.T) {
	ps := build(t, model.Spec{Name: "vgg11", ImageSize: 32, Classes: 10, Hidden: 16}).Params
	full := zeros(ps)
	// torchvision-like 1000-class head
	otherHead := zeros(build(t, model.Spec{Name: "vgg11", ImageSize: 64, Classes: 1000, Hidden: 32}).Params)
	var base []*Tensor
	for _, tensor := range full {
		if !strings.HasPrefix(tensor.Name, "classifier.") {
			base = append(base, tensor)
		}
	}
	bad := slices.Clone(full)
	bad[0] = &Tensor{Name: "features.0.weight", Shape: []int{64, 3, 5, 5}, Data: make([]float32, 64*3*25)}
	extra := append(slices.Clone(full), &Tensor{Name: "features.99.weight", Shape: []int{1}, Data: []float32{0}})
	dup := append(slices.Clone(full), full[0])
	tests := []struct {
		name        string
		ts          []*Tensor
		partialBase bool
		want        string // "" for no error
	}{
		{"full model", full, false, ""},
		{"base only in features mode", base, true, ""},
		{"full model in features mode", full, true, ""},
		{"other head in features mode", otherHead, true, ""},
		{"base only, full mode", base, false, "classifier.0.weight: missing (want shape [16 512])"},
		{"other head, full mode", otherHead, false, "classifier.0.weight: got shape [32 2048], want [16 512]"},
		{"wrong shape", bad, false, "features.0.weight: got shape [64 3 5 5], want [64 3 3 3]"},
		{"unexpected", extra, false, "features.99.weight: unexpected"},
		{"duplicate", dup, false, "features.0.weight: duplicate"},
		{"empty", nil, false, "22 tensor(s) do not match the model"},
	}
	for _, tt := range tests {
		err := CheckShapes(tt.ts, ps, tt.partialBase)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: got %v, want no error", tt.name, err)
		case tt.want != "" && (err == nil || !strings.HasPrefix(err.Error(), "weights: ") || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	// Arrange returns params order.
	shuffled := slices.Clone(full)
	slices.Reverse(shuffled)
	got, err := Arrange(shuffled, ps, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range ps {
		if got[i].Name != p.Name {
			t.Errorf("Arrange[%d]: got %s, want %s", i, got[i].Name, p.Name)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	// Content sniffing for files without a known extension.
	copyFile(t, "testdata/tiny_vgg.pth", filepath.Join(dir, "a.weights"))
	copyFile(t, "testdata/tiny_vgg.safetensors", filepath.Join(dir, "b.weights"))
	for _, f := range []string{"testdata/tiny_vgg.pth", "testdata/tiny_vgg.safetensors", filepath.Join(dir, "a.weights"), filepath.Join(dir, "b.weights")} {
		ts, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		checkTiny(t, ts)
	}
	if _, err := Load(filepath.Join(dir, "missing.pth")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want os.ErrNotExist", err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "report.json")
	write := func(s string) func(io.Writer) error {
		return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
	}
	if err := WriteFileAtomic(path, write("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	tests := []struct {
		name  string
		write func(io.Writer) error
	}{
		{"error before writing", func(io.Writer) error { return boom }},
		{"error after a partial write", func(w io.Writer) error {
			io.WriteString(w, strings.Repeat("new", 1<<20)) // more than the buffer: reaches the temp file
			return boom
		}},
	}
	for _, tt := range tests {
		err := WriteFileAtomic(path, tt.write)
		if !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "weights: ") {
			t.Errorf("%s: got %v, want a weights: error wrapping boom", tt.name, err)
		}
		if b, _ := os.ReadFile(path); string(b) != "old" {
			t.Errorf("%s: file now holds %d bytes, want the previous %q", tt.name, len(b), "old")
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("%s: got directory %v, want only report.json (no temp files)", tt.name, names)
		}
	}
	if err := WriteFileAtomic(path, write("new")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	st, _ := os.Stat(path)
	if string(b) != "new" || st.Mode().Perm() != 0o644 {
		t.Errorf("after success: got %q mode %v, want %q mode 0644", b, st.Mode().Perm(), "new")
	}
	// A missing directory is an error, not a panic.
	if err := WriteFileAtomic(filepath.Join(dir, "no", "such", "f"), write("x")); err == nil {
		t.Errorf("missing directory: got nil error")
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	params, err := InitParams([]model.Param{
		{Name: "features.0.weight", Shape: []int{64, 3, 3, 3}, Kind: model.ConvWeight},
		{Name: "features.0.bias", Shape: []int{64}, Kind: model.ConvBias},
		{Name: "classifier.6.weight", Shape: []int{10, 16}, Kind: model.LinearWeight},
	}, 5)
	if err != nil {
		t.Fatal(err)
	}
	opt := []*Tensor{
		{Name: "momentum.features.0.weight", Shape: []int{2}, Data: []float32{0.5, -0.25}},
		{Name: "step", Data: []float32{12}},
	}
	meta := CheckpointMeta{
		Framework: "torch", Epoch: 3, Step: 1200, Seed: 42,
		RNG: []byte{0, 1, 2, 255}, Optimizer: "sgd(lr=0.01,momentum=0.9)",
		Extra: map[string]string{"dataset": "cifar10"},
	}
	if err := SaveCheckpoint(dir, params, opt, meta); err != nil {
		t.Fatal(err)
	}
	gp, gopt, gmeta, err := LoadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range params {
		g := Lookup(gp, p.Name)
		if g == nil || !slices.Equal(g.Shape, p.Shape) || !slices.Equal(g.Data, p.Data) {
			t.Errorf("%s: differs after the round trip", p.Name)
		}
	}
	if len(gopt) != 2 || !slices.Equal(Lookup(gopt, "step").Data, []float32{12}) {
		t.Errorf("optimizer state: got %d tensors, want 2 with step = 12", len(gopt))
	}
	if gmeta.Framework != meta.Framework || gmeta.Epoch != 3 || gmeta.Step != 1200 || gmeta.Seed != 42 ||
		!slices.Equal(gmeta.RNG, meta.RNG) || gmeta.Optimizer != meta.Optimizer || gmeta.Extra["dataset"] != "cifar10" {
		t.Errorf("meta: got %+v, want %+v", gmeta, meta)
	}

	// Overwriting with a new checkpoint, then damaging a file: refused.
	meta.Step = 1300
	if err := SaveCheckpoint(dir, params, nil, meta); err != nil {
		t.Fatal(err)
	}
	if _, o, m, err := LoadCheckpoint(dir); err != nil || m.Step != 1300 || len(o) != 0 {
		t.Errorf("second checkpoint: got step %d, %d optimizer tensors, %v; want 1300, 0, nil", m.Step, len(o), err)
	}
	// The second save is generation 2 (checkpoint.go: gen-NNNNNNNN, counting from 1).
	f, _ := os.OpenFile(filepath.Join(dir, "gen-00000002", CheckpointWeights), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0})
	f.Close()
	if _, _, _, err := LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "does not match checkpoint.json") {
		t.Errorf("damaged weights: got %v, want a mismatch error", err)
	}
	// Without checkpoint.json (no save ever finished) nothing loads.
	os.Remove(filepath.Join(dir, CheckpointMetaFile))
	if _, _, _, err := LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "no complete checkpoint") {
		t.Errorf("no checkpoint.json: got %v, want no complete checkpoint", err)
	}
}
