package weights

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// faultFS is the real file system with one failure injected: the k-th mutating call
// (create, write, chmod, sync, close, mkdir, rename, directory sync, remove) fails with
// ENOSPC. With crash set, every call after it fails too and does nothing, which is what a
// kill -9 at that point leaves on disk: no clean-up runs. k = 0 injects nothing and only
// records the calls.
type faultFS struct {
	k     int
	crash bool
	n     int
	ops   []string
}

var errInjected = fmt.Errorf("injected: %w", syscall.ENOSPC)

// fail counts one call and says whether it fails.
func (f *faultFS) fail(op string) error {
	f.n++
	f.ops = append(f.ops, op)
	if f.k > 0 && (f.n == f.k || (f.crash && f.n > f.k)) {
		return errInjected
	}
	return nil
}

func (f *faultFS) CreateTemp(dir, pattern string) (file, error) {
	if err := f.fail("createtemp"); err != nil {
		return nil, err
	}
	o, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: o, fs: f}, nil
}

func (f *faultFS) Create(path string) (file, error) {
	if err := f.fail("create"); err != nil {
		return nil, err
	}
	o, err := osFS{}.Create(path)
	if err != nil {
		return nil, err
	}
	return &faultFile{File: o.(*os.File), fs: f}, nil
}

func (f *faultFS) MkdirTemp(dir, pattern string) (string, error) {
	if err := f.fail("mkdirtemp"); err != nil {
		return "", err
	}
	return os.MkdirTemp(dir, pattern)
}

func (f *faultFS) Rename(from, to string) error {
	if err := f.fail("rename"); err != nil {
		return err
	}
	return os.Rename(from, to)
}

func (f *faultFS) SyncDir(dir string) error {
	if err := f.fail("syncdir"); err != nil {
		return err
	}
	return syncDir(dir)
}

func (f *faultFS) Remove(path string) error {
	if err := f.fail("remove"); err != nil {
		return err
	}
	return os.Remove(path)
}

func (f *faultFS) RemoveAll(path string) error {
	if err := f.fail("removeall"); err != nil {
		return err
	}
	return os.RemoveAll(path)
}

type faultFile struct {
	*os.File
	fs *faultFS
}

func (f *faultFile) Write(p []byte) (int, error) {
	if err := f.fs.fail("write"); err != nil {
		return 0, err
	}
	return f.File.Write(p)
}

func (f *faultFile) Chmod(m fs.FileMode) error {
	if err := f.fs.fail("chmod"); err != nil {
		return err
	}
	return f.File.Chmod(m)
}

func (f *faultFile) Sync() error {
	if err := f.fs.fail("sync"); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *faultFile) Close() error {
	err := f.fs.fail("close")
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}

// testCheckpoint is a small checkpoint whose tensors and meta say which one it is.
func testCheckpoint(id float32) ([]*Tensor, []*Tensor, CheckpointMeta) {
	params := []*Tensor{
		{Name: "features.0.weight", Shape: []int{2, 3}, Data: []float32{id, 1, 2, 3, 4, 5}},
		{Name: "classifier.0.bias", Shape: []int{2}, Data: []float32{-id, 0.5}},
	}
	opt := []*Tensor{{Name: "features.0.weight.momentum_buffer", Shape: []int{2, 3}, Data: []float32{0, 0, 0, 0, 0, id}}}
	meta := CheckpointMeta{Framework: "torch", Epoch: int(id), Step: 10 * int(id), Seed: 7, Optimizer: "sgd(lr=0.01)",
		Recipe: map[string]string{"seed": "7", "lr": "0.01"}}
	return params, opt, meta
}

// loadedID loads dir and returns which testCheckpoint it holds, checking every tensor.
func loadedID(t *testing.T, dir string) (float32, error) {
	t.Helper()
	ps, opt, meta, err := LoadCheckpoint(dir)
	if err != nil {
		return 0, err
	}
	id := float32(meta.Epoch)
	wp, wopt, _ := testCheckpoint(id)
	for i, want := range append(wp, wopt...) {
		got := Lookup(append(ps, opt...), want.Name)
		if got == nil || !slices.Equal(got.Data, want.Data) {
			return 0, fmt.Errorf("checkpoint %v: tensor %d (%s) is not the one saved", id, i, want.Name)
		}
	}
	if meta.RecipeSHA256 != RecipeSHA256(meta.Recipe) || meta.RecipeSHA256 == "" {
		return 0, fmt.Errorf("checkpoint %v: recipe hash %q does not match its recipe", id, meta.RecipeSHA256)
	}
	return id, nil
}

func save(t *testing.T, fsys fileSystem, dir string, id float32) error {
	t.Helper()
	p, o, m := testCheckpoint(id)
	return saveCheckpoint(fsys, dir, p, o, m)
}

// TestCheckpointNewestWins: three saves without failure, and the third loads; only its
// generation is left.
func TestCheckpointNewestWins(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	for id := float32(1); id <= 3; id++ {
		p, o, m := testCheckpoint(id)
		if err := SaveCheckpoint(dir, p, o, m); err != nil {
			t.Fatal(err)
		}
		got, err := loadedID(t, dir)
		if err != nil || got != id {
			t.Errorf("after save %v: got checkpoint %v (%v), want %v", id, got, err, id)
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{CheckpointMetaFile, "gen-00000003"}; !slices.Equal(names, want) {
		t.Errorf("folder: got %v, want %v", names, want)
	}
}

// TestCheckpointFaultEveryStep fails the k-th file-system call of a second save, for every k
// of that save, once as ENOSPC (only that call fails; clean-up runs) and once as a kill -9
// (nothing runs after it). The first checkpoint must load until the switch to the second is
// durable, and the second after it; a third save afterwards must succeed and win.
func TestCheckpointFaultEveryStep(t *testing.T) {
	// The calls of one save, counted on a save that fails nowhere.
	count := &faultFS{}
	dir := t.TempDir()
	if err := save(t, osFS{}, dir, 1); err != nil {
		t.Fatal(err)
	}
	if err := save(t, count, dir, 2); err != nil {
		t.Fatal(err)
	}
	ops := count.ops
	// The switch: the rename of checkpoint.json's temporary file (the last rename). From
	// there on checkpoint.json names the new generation.
	switchAt := 0
	for i, op := range ops {
		if op == "rename" {
			switchAt = i + 1
		}
	}
	if n := len(ops); n < 15 || switchAt == 0 {
		t.Fatalf("a save made %d calls %v; want at least 15 with a rename", n, ops)
	}
	for _, crash := range []bool{false, true} {
		for k := 1; k <= len(ops); k++ {
			name := fmt.Sprintf("crash=%v k=%d (%s)", crash, k, ops[k-1])
			dir := filepath.Join(t.TempDir(), "ckpt")
			if p, o, m := testCheckpoint(1); SaveCheckpoint(dir, p, o, m) != nil {
				t.Fatal("first save failed")
			}
			err := save(t, &faultFS{k: k, crash: crash}, dir, 2)
			got, lerr := loadedID(t, dir)
			switch {
			case lerr != nil:
				t.Errorf("%s: save returned %v; load: got %v, want a complete checkpoint", name, err, lerr)
			case k < switchAt && err == nil:
				t.Errorf("%s: save before the switch: got nil error, want the injected one", name)
			case k < switchAt && got != 1:
				t.Errorf("%s: got checkpoint %v, want the previous one, 1", name, got)
			case k > switchAt && got != 2:
				t.Errorf("%s: after the durable switch: got checkpoint %v, want 2", name, got)
			case err != nil && !errors.Is(err, syscall.ENOSPC):
				t.Errorf("%s: got error %v, want one wrapping ENOSPC", name, err)
			case err != nil && !strings.HasPrefix(err.Error(), "weights: "):
				t.Errorf("%s: got error %q, want the weights: prefix", name, err)
			}
			// The next save, on the real file system, succeeds and wins.
			if err := save(t, osFS{}, dir, 3); err != nil {
				t.Errorf("%s: next save: %v", name, err)
			} else if got, err := loadedID(t, dir); err != nil || got != 3 {
				t.Errorf("%s: after the next save: got checkpoint %v (%v), want 3", name, got, err)
			}
		}
	}
}

// TestCheckpointFirstSaveFails: with no previous checkpoint, a failed save leaves none.
func TestCheckpointFirstSaveFails(t *testing.T) {
	dir := t.TempDir()
	if err := save(t, &faultFS{k: 3, crash: true}, dir, 1); err == nil {
		t.Fatal("got nil error, want the injected one")
	}
	if _, _, _, err := LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "no complete checkpoint") {
		t.Errorf("got %v, want no complete checkpoint", err)
	}
}

// TestCheckpointGenerationRefused: checkpoint.json must name a generation of this folder.
func TestCheckpointGenerationRefused(t *testing.T) {
	tests := []struct{ generation, want string }{
		{"../elsewhere", "does not name one"},
		{"gen-00000009", "gen-00000009"},
		{"", "does not name one"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		if p, o, m := testCheckpoint(1); SaveCheckpoint(dir, p, o, m) != nil {
			t.Fatal("first save failed")
		}
		path := filepath.Join(dir, CheckpointMetaFile)
		b, _ := os.ReadFile(path)
		b = []byte(strings.Replace(string(b), `"gen-00000001"`, `"`+tt.generation+`"`, 1))
		os.WriteFile(path, b, 0o644)
		if _, _, _, err := LoadCheckpoint(dir); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("generation %q: got %v, want an error containing %q", tt.generation, err, tt.want)
		}
	}
}

// TestCheckpointRecipeFile: a folder's recipe.json is recorded in each later generation,
// and a generation keeps the recipe it was written with.
func TestCheckpointRecipeFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ckpt")
	a := map[string]string{"seed": "1", "lr": "0.1"}
	if err := WriteCheckpointRecipe(dir, a); err != nil {
		t.Fatal(err)
	}
	p, o, m := testCheckpoint(1)
	m.Recipe = nil
	if err := SaveCheckpoint(dir, p, o, m); err != nil {
		t.Fatal(err)
	}
	if err := WriteCheckpointRecipe(dir, map[string]string{"seed": "2", "lr": "0.1"}); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCheckpointMeta(dir)
	if err != nil || got.Recipe["seed"] != "1" || got.RecipeSHA256 != RecipeSHA256(a) {
		t.Errorf("got recipe %v hash %s (%v), want %v hash %s", got.Recipe, got.RecipeSHA256, err, a, RecipeSHA256(a))
	}
	// RecipeSHA256 is the sha256 of "lr=0.1\nseed=1\n" (keys sorted): printf 'lr=0.1\nseed=1\n' | sha256sum.
	if h, want := RecipeSHA256(a), "5eefe17dbe40d5456660aa10ac281688d52c115518096790e97324e16fe49f37"; h != want {
		t.Errorf("RecipeSHA256: got %s, want %s", h, want)
	}
}

// TestCheckpointFailEnv: the test-only TestFailCheckpointEnv fails the N-th save of the
// process with ENOSPC, and the checkpoint before it still loads.
func TestCheckpointFailEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(TestFailCheckpointEnv, fmt.Sprint(saves.Load()+2))
	p, o, m := testCheckpoint(1)
	if err := SaveCheckpoint(dir, p, o, m); err != nil {
		t.Fatalf("first save: got %v, want nil", err)
	}
	p, o, m = testCheckpoint(2)
	if err := SaveCheckpoint(dir, p, o, m); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("second save: got %v, want ENOSPC", err)
	}
	if got, err := loadedID(t, dir); err != nil || got != 1 {
		t.Errorf("after the failed save: got checkpoint %v (%v), want 1", got, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("folder: got %d entries, want checkpoint.json and one generation (the failed one removed)", len(entries))
	}
}
