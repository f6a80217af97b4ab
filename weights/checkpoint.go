package weights

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// The files of a checkpoint folder.
//
// A checkpoint folder holds generations gen-NNNNNNNN/, each holding the two
// tensor files of one checkpoint, and checkpoint.json, the pointer: it names
// the generation to load, with the meta and the size and SHA-256 of that
// generation's files. SaveCheckpoint builds a new generation in a temporary
// folder, fsyncs it, renames it into place, fsyncs the folder, and only then
// replaces checkpoint.json atomically (WriteFileAtomic's steps). Until that
// last rename checkpoint.json names the previous generation, which nothing has
// touched: a kill -9 or an ENOSPC at any step leaves the previous checkpoint
// loadable. Older generations are removed once the new checkpoint.json is
// durable.
const (
	CheckpointWeights   = "weights.safetensors"   // model tensors, torchvision layout
	CheckpointOptimizer = "optimizer.safetensors" // optimizer state tensors
	CheckpointMetaFile  = "checkpoint.json"       // generation, CheckpointMeta, file digests; replaced last
	// CheckpointRecipeFile, when present in a checkpoint folder, holds the JSON object
	// (string to string) of the recipe of the run writing there (WriteCheckpointRecipe);
	// SaveCheckpoint copies it into each new generation's checkpoint.json.
	CheckpointRecipeFile = "recipe.json"
)

// checkpointFormat names the checkpoint.json layout.
const checkpointFormat = "fwbench-checkpoint/2"

// maxCheckpointJSON bounds checkpoint.json and recipe.json when read.
const maxCheckpointJSON = 16 << 20

var generationName = regexp.MustCompile(`^gen-([0-9]{8})$`)

// CheckpointMeta is what a driver needs besides tensors to resume training.
type CheckpointMeta struct {
	Framework string            `json:"framework"`       // "torch" or "tensorflow", as the driver reports it
	Epoch     int               `json:"epoch"`           // completed epochs
	Step      int               `json:"step"`            // completed optimizer steps
	Seed      int64             `json:"seed"`            // the run's seed
	RNG       []byte            `json:"rng,omitempty"`   // opaque framework/data RNG state (base64 in JSON)
	Optimizer string            `json:"optimizer"`       // e.g. "sgd(lr=0.01,momentum=0.9)"
	Extra     map[string]string `json:"extra,omitempty"` // anything else, driver-defined
	// Recipe is the training recipe the checkpoint was made under and RecipeSHA256 its
	// RecipeSHA256. When the caller leaves Recipe nil, SaveCheckpoint fills both from the
	// folder's recipe.json, if there is one.
	Recipe       map[string]string `json:"recipe,omitempty"`
	RecipeSHA256 string            `json:"recipe_sha256,omitempty"`
}

type checkpointFile struct {
	Format     string                `json:"format"`
	Generation string                `json:"generation"` // the folder (gen-NNNNNNNN) holding the files
	Meta       CheckpointMeta        `json:"meta"`
	Files      map[string]fileDigest `json:"files"`
}

type fileDigest struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// RecipeSHA256 is the hex sha256 of a recipe's "key=value\n" lines in key order.
func RecipeSHA256(recipe map[string]string) string {
	keys := make([]string, 0, len(recipe))
	for k := range recipe {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, recipe[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// WriteCheckpointRecipe makes the checkpoint folder dir (and its parents: checkpoint folders
// are fwbench's own) and writes recipe to dir/recipe.json atomically; every later
// SaveCheckpoint into dir records it. A generation already in dir keeps the recipe it was
// written with.
func WriteCheckpointRecipe(dir string, recipe map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("weights: checkpoint: %w", err)
	}
	return WriteFileAtomic(filepath.Join(dir, CheckpointRecipeFile), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(recipe)
	})
}

// SaveCheckpoint writes a new checkpoint generation into dir (created, with its parents, if
// needed: checkpoint folders are fwbench's own): weights.safetensors (params) and
// optimizer.safetensors (optState, may be empty), then replaces dir/checkpoint.json (the
// generation's name, meta, and the size and SHA-256 of both files) to switch to it. Until the
// switch is durable, LoadCheckpoint returns the previous checkpoint; a failure at any step
// returns an error and leaves that previous checkpoint as it was.
func SaveCheckpoint(dir string, params []*Tensor, optState []*Tensor, meta CheckpointMeta) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("weights: checkpoint: %w", err)
	}
	var fsys fileSystem = osFS{}
	if n := os.Getenv(TestFailCheckpointEnv); n != "" && n == strconv.FormatInt(saves.Add(1), 10) {
		fsys = noSpaceFS{}
	}
	return saveCheckpoint(fsys, dir, params, optState, meta)
}

// TestFailCheckpointEnv is for tests only: when it holds N, this process's N-th SaveCheckpoint
// fails as on a full disk (ENOSPC at its first file write). The CLI's tests use it to check
// what a failed save leaves behind; nothing else should set it.
const TestFailCheckpointEnv = "FWBENCH_TEST_FAIL_CHECKPOINT"

// saves counts SaveCheckpoint calls for TestFailCheckpointEnv.
var saves atomic.Int64

// noSpaceFS is the real file system on which every new file's writes fail with ENOSPC.
type noSpaceFS struct{ osFS }

func (noSpaceFS) Create(path string) (file, error) {
	f, err := osFS{}.Create(path)
	if err != nil {
		return nil, err
	}
	return noSpaceFile{f.(*os.File)}, nil
}

type noSpaceFile struct{ *os.File }

func (noSpaceFile) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

func saveCheckpoint(fsys fileSystem, dir string, params, optState []*Tensor, meta CheckpointMeta) (err error) {
	if meta.Recipe == nil {
		r, err := readRecipe(filepath.Join(dir, CheckpointRecipeFile))
		if err != nil {
			return err
		}
		meta.Recipe = r
	}
	if meta.Recipe != nil {
		meta.RecipeSHA256 = RecipeSHA256(meta.Recipe)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("weights: checkpoint: %w", err)
	}
	next := 1
	for _, e := range entries {
		if m := generationName.FindStringSubmatch(e.Name()); m != nil {
			if n, _ := strconv.Atoi(m[1]); n >= next {
				next = n + 1
			}
		} else if strings.HasPrefix(e.Name(), ".gen-") {
			fsys.RemoveAll(filepath.Join(dir, e.Name())) // left by a save that was killed
		}
	}
	if next > 99999999 {
		return fmt.Errorf("weights: checkpoint: %s: generation numbers are used up", dir)
	}
	gen := fmt.Sprintf("gen-%08d", next)
	tmp, err := fsys.MkdirTemp(dir, "."+gen+".tmp-")
	if err != nil {
		return fmt.Errorf("weights: checkpoint: %w", err)
	}
	defer func() {
		if err != nil {
			fsys.RemoveAll(tmp)
		}
	}()

	cf := checkpointFile{Format: checkpointFormat, Generation: gen, Meta: meta, Files: map[string]fileDigest{}}
	for _, f := range []struct {
		name string
		ts   []*Tensor
		meta map[string]string
	}{
		{CheckpointWeights, params, map[string]string{"framework": meta.Framework}},
		{CheckpointOptimizer, optState, map[string]string{"optimizer": meta.Optimizer}},
	} {
		var d fileDigest
		err := writeNew(fsys, filepath.Join(tmp, f.name), func(w io.Writer) error {
			h := sha256.New()
			cw := &countWriter{w: io.MultiWriter(w, h)}
			if err := encodeSafetensors(cw, f.ts, f.meta); err != nil {
				return err
			}
			d = fileDigest{Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}
			return nil
		})
		if err != nil {
			return err
		}
		cf.Files[f.name] = d
	}
	if err := fsys.SyncDir(tmp); err != nil {
		return fmt.Errorf("weights: checkpoint: sync %s: %w", tmp, err)
	}
	if err := fsys.Rename(tmp, filepath.Join(dir, gen)); err != nil {
		return fmt.Errorf("weights: checkpoint: %w", err)
	}
	tmp = filepath.Join(dir, gen) // on a later failure, the unreferenced generation goes
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("weights: checkpoint: sync %s: %w", dir, err)
	}
	if err := writeAtomic(fsys, filepath.Join(dir, CheckpointMetaFile), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(cf)
	}); err != nil {
		// checkpoint.json may already name gen (a failed directory sync after the rename):
		// then keep gen, which is complete, rather than remove what it points to.
		if cur, _, cerr := readCheckpointFile(dir); cerr == nil && cur.Generation == gen {
			tmp = ""
		}
		return err
	}
	// The switch is durable: older generations are garbage. A failure to remove one leaves
	// a folder that the next save removes; the checkpoint itself is saved.
	for _, e := range entries {
		if generationName.MatchString(e.Name()) && e.Name() != gen {
			fsys.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// writeNew writes a new file (it must not exist) and fsyncs it.
func writeNew(fsys fileSystem, path string, write func(w io.Writer) error) error {
	f, err := fsys.Create(path)
	if err != nil {
		return fmt.Errorf("weights: checkpoint: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("weights: checkpoint: write %s: %w", path, err)
	}
	return nil
}

// readRecipe reads a recipe.json; a missing file is no recipe.
func readRecipe(path string) (map[string]string, error) {
	b, err := readSmall(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("weights: checkpoint: %w", err)
	}
	var r map[string]string
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("weights: checkpoint: %s: %w", path, err)
	}
	return r, nil
}

// readSmall reads a regular file of at most maxCheckpointJSON bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCheckpointJSON+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxCheckpointJSON {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxCheckpointJSON)
	}
	return b, nil
}

// readCheckpointFile reads and checks dir/checkpoint.json and returns it with the folder of
// the generation it names.
func readCheckpointFile(dir string) (checkpointFile, string, error) {
	var cf checkpointFile
	path := filepath.Join(dir, CheckpointMetaFile)
	b, err := readSmall(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cf, "", fmt.Errorf("weights: checkpoint: no complete checkpoint in %s (%s is missing)", dir, CheckpointMetaFile)
	}
	if err != nil {
		return cf, "", fmt.Errorf("weights: checkpoint: %w", err)
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return cf, "", fmt.Errorf("weights: checkpoint: %s: %w", path, err)
	}
	if cf.Format != checkpointFormat {
		return cf, "", fmt.Errorf("weights: checkpoint: %s: format %q, want %q", path, cf.Format, checkpointFormat)
	}
	if !generationName.MatchString(cf.Generation) {
		return cf, "", fmt.Errorf("weights: checkpoint: %s: generation %q does not name one (gen-NNNNNNNN)", path, cf.Generation)
	}
	return cf, filepath.Join(dir, cf.Generation), nil
}

// ReadCheckpointMeta returns the meta of the checkpoint LoadCheckpoint would load, without
// reading its tensors (the recipe check of --resume reads it).
func ReadCheckpointMeta(dir string) (CheckpointMeta, error) {
	cf, _, err := readCheckpointFile(dir)
	return cf.Meta, err
}

// LoadCheckpoint reads the checkpoint generation that dir/checkpoint.json names, after
// checking that the size and SHA-256 of both tensor files match it.
func LoadCheckpoint(dir string) (params, optState []*Tensor, meta CheckpointMeta, err error) {
	cf, gdir, err := readCheckpointFile(dir)
	if err != nil {
		return nil, nil, meta, err
	}
	var out [2][]*Tensor
	for i, name := range []string{CheckpointWeights, CheckpointOptimizer} {
		want, ok := cf.Files[name]
		if !ok {
			return nil, nil, meta, fmt.Errorf("weights: checkpoint: %s lists no %s", CheckpointMetaFile, name)
		}
		path := filepath.Join(gdir, name)
		got, err := digest(path)
		if err != nil {
			return nil, nil, meta, fmt.Errorf("weights: checkpoint: %w", err)
		}
		if got != want {
			return nil, nil, meta, fmt.Errorf("weights: checkpoint: %s does not match %s (got %d bytes sha256 %s, want %d bytes %s)", path, CheckpointMetaFile, got.Size, got.SHA256, want.Size, want.SHA256)
		}
		ts, _, err := ReadSafetensors(path)
		if err != nil {
			return nil, nil, meta, err
		}
		out[i] = ts
	}
	return out[0], out[1], cf.Meta, nil
}

func digest(path string) (fileDigest, error) {
	f, err := os.Open(path)
	if err != nil {
		return fileDigest{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fileDigest{}, err
	}
	return fileDigest{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
