package weights

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// The files of a checkpoint directory.
const (
	CheckpointWeights   = "weights.safetensors"   // model tensors, torchvision layout
	CheckpointOptimizer = "optimizer.safetensors" // optimizer state tensors
	CheckpointMetaFile  = "checkpoint.json"       // CheckpointMeta + file digests; written last
)

// checkpointFormat names the checkpoint.json layout.
const checkpointFormat = "fwbench-checkpoint/1"

// CheckpointMeta is what a driver needs besides tensors to resume training.
type CheckpointMeta struct {
	Framework string            `json:"framework"`       // "torch" or "tensorflow", as the driver reports it
	Epoch     int               `json:"epoch"`           // completed epochs
	Step      int               `json:"step"`            // completed optimizer steps
	Seed      int64             `json:"seed"`            // the run's seed
	RNG       []byte            `json:"rng,omitempty"`   // opaque framework/data RNG state (base64 in JSON)
	Optimizer string            `json:"optimizer"`       // e.g. "sgd(lr=0.01,momentum=0.9)"
	Extra     map[string]string `json:"extra,omitempty"` // anything else, driver-defined
}

type checkpointFile struct {
	Format string                `json:"format"`
	Meta   CheckpointMeta        `json:"meta"`
	Files  map[string]fileDigest `json:"files"`
}

type fileDigest struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// SaveCheckpoint writes a checkpoint into dir (created if needed):
// weights.safetensors (params), optimizer.safetensors (optState, may be
// empty) and checkpoint.json (meta and the size and SHA-256 of the two other
// files). Each file is written atomically. An older checkpoint.json is
// removed first and the new one is written last, so a crash part-way leaves a
// directory that LoadCheckpoint refuses rather than one that mixes two
// checkpoints.
func SaveCheckpoint(dir string, params []*Tensor, optState []*Tensor, meta CheckpointMeta) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("weights: checkpoint: %w", err)
	}
	metaPath := filepath.Join(dir, CheckpointMetaFile)
	if err := os.Remove(metaPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("weights: checkpoint: %w", err)
	} else if err == nil {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("weights: checkpoint: sync %s: %w", dir, err)
		}
	}
	cf := checkpointFile{Format: checkpointFormat, Meta: meta, Files: map[string]fileDigest{}}
	for _, f := range []struct {
		name string
		ts   []*Tensor
		meta map[string]string
	}{
		{CheckpointWeights, params, map[string]string{"framework": meta.Framework}},
		{CheckpointOptimizer, optState, map[string]string{"optimizer": meta.Optimizer}},
	} {
		var d fileDigest
		err := WriteFileAtomic(filepath.Join(dir, f.name), func(w io.Writer) error {
			h := sha256.New()
			cw := &countWriter{w: io.MultiWriter(w, h)}
			if err := encodeSafetensors(cw, f.ts, f.meta); err != nil {
				return err
			}
			d = fileDigest{Size: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))}
			return nil
		})
		if err != nil {
			return err // already "weights: write <path>: ..."
		}
		cf.Files[f.name] = d
	}
	err := WriteFileAtomic(metaPath, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(cf)
	})
	return err // nil, or already "weights: write <path>: ..."
}

// LoadCheckpoint reads a checkpoint written by SaveCheckpoint, after
// checking that checkpoint.json exists (the checkpoint is complete) and that
// the size and SHA-256 of both tensor files match it.
func LoadCheckpoint(dir string) (params, optState []*Tensor, meta CheckpointMeta, err error) {
	b, err := os.ReadFile(filepath.Join(dir, CheckpointMetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, meta, fmt.Errorf("weights: checkpoint: no complete checkpoint in %s (%s is missing)", dir, CheckpointMetaFile)
	}
	if err != nil {
		return nil, nil, meta, fmt.Errorf("weights: checkpoint: %w", err)
	}
	var cf checkpointFile
	if err := json.Unmarshal(b, &cf); err != nil {
		return nil, nil, meta, fmt.Errorf("weights: checkpoint: %s: %w", CheckpointMetaFile, err)
	}
	if cf.Format != checkpointFormat {
		return nil, nil, meta, fmt.Errorf("weights: checkpoint: %s: format %q, want %q", CheckpointMetaFile, cf.Format, checkpointFormat)
	}
	var out [2][]*Tensor
	for i, name := range []string{CheckpointWeights, CheckpointOptimizer} {
		want, ok := cf.Files[name]
		if !ok {
			return nil, nil, meta, fmt.Errorf("weights: checkpoint: %s lists no %s", CheckpointMetaFile, name)
		}
		path := filepath.Join(dir, name)
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
