// Package weights owns fwbench's weight files: the float32 Tensor that both
// drivers exchange, safetensors reading and writing, a restricted reader for
// PyTorch .pth state dicts in both torch.save formats (the zip of PyTorch 1.6
// and later, and the legacy format of torchvision's ImageNet files such as
// vgg16-397923af.pth), a torch zip .pth writer that torch.load(weights_only=True)
// accepts, seeded torchvision-style VGG initialisation, atomic file writes,
// and checkpoints (weights, optimizer state and metadata).
//
// Load reads any weight file, choosing the format by the file's first 64
// bytes and never by its name, from a registry (RegisterFormat) in which this
// package puts safetensors and both .pth formats and other packages add
// theirs (the Keras HDF5 reader, which needs a native library). Load removes
// DataParallel's "module." prefix when every name has it, and the .pth reader
// unwraps training checkpoints ({"model_state_dict": ..., "optimizer_state_dict":
// ..., "epoch": ...}). BatchNorm's int64 num_batches_tracked is skipped in
// every format. CanonicalSHA256 hashes tensors independently of the format
// and order they came in, in a byte layout that Python reproduces
// (scripts/reference/make_weights_fixtures.py).
//
// Tensors use torchvision's canonical names and layouts (see package model):
// convolution weights OIHW, linear weights [out, in]. The package is pure Go,
// imports only the standard library and package model, and needs no native
// library.
//
// Readers treat every file as hostile: lengths are checked against the bytes
// that are really there before anything is allocated, and the .pth reader
// interprets only the pickle opcodes and the few globals that torch.save uses
// for a state dict. It never executes anything a file names.
package weights

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/fwbench/fwbench/model"
)

// Tensor is one named float32 tensor in row-major (C) order.
type Tensor struct {
	Name  string
	Shape []int // empty for a scalar
	Data  []float32
}

// NumElements returns the product of t.Shape (1 for a scalar).
func (t *Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Clone returns a deep copy of t.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)}
}

// check reports whether t is well formed: a name, no negative dimension, and
// len(Data) equal to the product of Shape.
func (t *Tensor) check() error {
	if t == nil {
		return errors.New("nil tensor")
	}
	if t.Name == "" {
		return errors.New("tensor with an empty name")
	}
	n := 1
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		if d != 0 && n > maxElements/d {
			return fmt.Errorf("tensor %q: shape %v is too large", t.Name, t.Shape)
		}
		n *= d
	}
	if n != len(t.Data) {
		return fmt.Errorf("tensor %q: shape %v holds %d elements but data has %d", t.Name, t.Shape, n, len(t.Data))
	}
	return nil
}

// maxElements bounds the elements of one tensor so that byte sizes never
// overflow int64 (2^40 float64 elements are 8 TiB).
const maxElements = 1 << 40

// Lookup returns the tensor named name, or nil.
func Lookup(ts []*Tensor, name string) *Tensor {
	for _, t := range ts {
		if t != nil && t.Name == name {
			return t
		}
	}
	return nil
}

// CheckShapes reports whether ts holds exactly the tensors that params
// describe, with the same shapes. The error names every missing, unexpected
// or misshapen tensor (got shape vs want shape).
//
// With partialBase ("features" mode: a loaded convolutional base, a new
// head) only the non-Head params are required, and tensors in ts under the
// head's top-level modules ("classifier.", "fc.") are ignored whatever their
// shape, so a full torchvision file with a 1000-class head can supply the base
// of a 10-class model.
func CheckShapes(ts []*Tensor, params []model.Param, partialBase bool) error {
	var problems []string
	want := make(map[string]model.Param, len(params))
	headRoot := map[string]bool{}
	for _, p := range params {
		want[p.Name] = p
		if p.Head {
			root, _, _ := strings.Cut(p.Name, ".")
			headRoot[root] = true
		}
	}
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		if t == nil {
			problems = append(problems, "a nil tensor")
			continue
		}
		if seen[t.Name] {
			problems = append(problems, fmt.Sprintf("%s: duplicate", t.Name))
			continue
		}
		seen[t.Name] = true
		p, ok := want[t.Name]
		root, _, _ := strings.Cut(t.Name, ".")
		if partialBase && (p.Head || !ok && headRoot[root]) {
			continue
		}
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s: unexpected", t.Name))
		case !slices.Equal(t.Shape, p.Shape):
			problems = append(problems, fmt.Sprintf("%s: got shape %v, want %v", t.Name, t.Shape, p.Shape))
		case len(t.Data) != p.NumElements():
			problems = append(problems, fmt.Sprintf("%s: got %d values, want %d", t.Name, len(t.Data), p.NumElements()))
		}
	}
	for _, p := range params {
		if !seen[p.Name] && !(partialBase && p.Head) {
			problems = append(problems, fmt.Sprintf("%s: missing (want shape %v)", p.Name, p.Shape))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	const show = 8
	msg := strings.Join(problems[:min(len(problems), show)], "; ")
	if len(problems) > show {
		msg += fmt.Sprintf("; and %d more", len(problems)-show)
	}
	return fmt.Errorf("weights: %d tensor(s) do not match the model: %s", len(problems), msg)
}

// Arrange checks ts against params (see CheckShapes) and returns the
// tensors in params order. With partialBase the result holds only the
// non-Head params. The tensors are shared, not copied.
func Arrange(ts []*Tensor, params []model.Param, partialBase bool) ([]*Tensor, error) {
	if err := CheckShapes(ts, params, partialBase); err != nil {
		return nil, err
	}
	out := make([]*Tensor, 0, len(params))
	for _, p := range params {
		if partialBase && p.Head {
			continue
		}
		out = append(out, Lookup(ts, p.Name))
	}
	return out, nil
}

// CanonicalSHA256 returns the SHA-256 (lowercase hex) of ts in a byte layout
// that depends only on the tensors' names, shapes and float32 values, not on
// the file they came from or their order, so that the same state dict read
// from safetensors, a zip .pth or a legacy .pth hashes the same. The hashed
// bytes are, for each tensor in increasing byte order of its name (which is
// Python's order of str for UTF-8 names):
//
//	uint32, little-endian   byte length of the name
//	bytes                   the name, UTF-8
//	uint32, little-endian   number of dimensions (0 for a scalar)
//	int64, little-endian    each dimension, outermost first
//	float32, little-endian  each element in row-major (C) order, as its IEEE 754 bits
//
// with nothing between tensors and nothing at the end. Tensors with equal
// names keep their relative order; nil tensors are skipped. In Python, for a
// state dict sd of float tensors:
//
//	h = hashlib.sha256()
//	for name in sorted(sd):
//	    t, b = sd[name], name.encode()
//	    h.update(struct.pack("<I", len(b)) + b + struct.pack(f"<I{t.dim()}q", t.dim(), *t.shape))
//	    h.update(t.detach().float().contiguous().numpy().astype("<f4").tobytes())
//	h.hexdigest()
func CanonicalSHA256(ts []*Tensor) string {
	sorted := make([]*Tensor, 0, len(ts))
	for _, t := range ts {
		if t != nil {
			sorted = append(sorted, t)
		}
	}
	slices.SortStableFunc(sorted, func(a, b *Tensor) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	var b []byte
	for _, t := range sorted {
		b = binary.LittleEndian.AppendUint32(b[:0], uint32(len(t.Name)))
		b = append(b, t.Name...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(t.Shape)))
		for _, d := range t.Shape {
			b = binary.LittleEndian.AppendUint64(b, uint64(int64(d)))
		}
		h.Write(b)
		writeFloats(h, t.Data) // a hash.Hash never fails to write
	}
	return hex.EncodeToString(h.Sum(nil))
}
