package dataset

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/fwbench/fwbench/weights"
)

// Batch is one batch of images. X is one contiguous NHWC float32 buffer of
// length N*H*W*C (C = 3, RGB order, BGR for the "caffe" normalisation),
// already normalised; Labels holds N class indices. The caller owns it.
type Batch struct {
	X          []float32
	Labels     []int32
	N, H, W, C int
	Epoch      int           // epoch number
	Index      int           // batch index within the epoch
	Wait       time.Duration // how long the Next call that produced it blocked waiting for data
	// Offset and GlobalN place a data-parallel shard (LoaderConfig.Shard) in
	// its global batch: its images are the global batch's [Offset, Offset+N).
	// GlobalN is 0 outside data-parallel runs: the batch is the global batch.
	Offset, GlobalN int
}

// Global returns the number of images in the global batch b belongs to: N,
// or GlobalN for a data-parallel shard.
func (b *Batch) Global() int {
	if b.GlobalN > 0 {
		return b.GlobalN
	}
	return b.N
}

// Hash returns the hex SHA-256 of X as little-endian float32 bytes followed
// by Labels as little-endian int32 bytes. Equal hashes mean byte-identical
// batches.
func (b *Batch) Hash() string {
	h := sha256.New()
	buf := make([]byte, 0, 1<<16)
	for _, v := range b.X {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		if len(buf) >= 1<<16-4 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	for _, l := range b.Labels {
		buf = binary.LittleEndian.AppendUint32(buf, uint32(l))
	}
	h.Write(buf)
	return hex.EncodeToString(h.Sum(nil))
}

// ExportBatch writes b as a NumPy .npz archive (a zip of .npy files, stored
// uncompressed) that numpy.load reads directly:
//
//	x.npy      float32 '<f4', shape (N, H, W, C), C order
//	labels.npy int32 '<i4', shape (N,)
//	epoch.npy  int64 '<i8', shape ()
//	index.npy  int64 '<i8', shape ()
//
// The file is written to a temporary name and renamed into place.
func ExportBatch(path string, b *Batch) error {
	if b == nil || len(b.X) != b.N*b.H*b.W*b.C || len(b.Labels) != b.N {
		return fmt.Errorf("dataset: export batch: inconsistent batch")
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name, descr string, shape []int, data []byte) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			return err
		}
		if _, err := w.Write(npyHeader(descr, shape)); err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	}
	x := make([]byte, 0, 4*len(b.X))
	for _, v := range b.X {
		x = binary.LittleEndian.AppendUint32(x, math.Float32bits(v))
	}
	l := make([]byte, 0, 4*len(b.Labels))
	for _, v := range b.Labels {
		l = binary.LittleEndian.AppendUint32(l, uint32(v))
	}
	for _, e := range []struct {
		name, descr string
		shape       []int
		data        []byte
	}{
		{"x.npy", "<f4", []int{b.N, b.H, b.W, b.C}, x},
		{"labels.npy", "<i4", []int{b.N}, l},
		{"epoch.npy", "<i8", nil, binary.LittleEndian.AppendUint64(nil, uint64(b.Epoch))},
		{"index.npy", "<i8", nil, binary.LittleEndian.AppendUint64(nil, uint64(b.Index))},
	} {
		if err := add(e.name, e.descr, e.shape, e.data); err != nil {
			return fmt.Errorf("dataset: export batch: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("dataset: export batch: %w", err)
	}
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return fmt.Errorf("dataset: export batch: %w", err)
	}
	return nil
}

// npyHeader returns a version 1.0 .npy header, padded so the data starts
// at a multiple of 64 bytes.
func npyHeader(descr string, shape []int) []byte {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	sh := strings.Join(dims, ", ")
	if len(shape) == 1 {
		sh += ","
	}
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, sh)
	total := 10 + len(dict) + 1
	pad := (64 - total%64) % 64
	dict += strings.Repeat(" ", pad) + "\n"
	h := []byte("\x93NUMPY\x01\x00")
	h = binary.LittleEndian.AppendUint16(h, uint16(len(dict)))
	return append(h, dict...)
}

var npyDictRE = regexp.MustCompile(`'descr':\s*'([^']*)'.*'fortran_order':\s*(True|False).*'shape':\s*\(([^)]*)\)`)

// readNPY parses a .npy file written by npyHeader (or by numpy with the
// same little-endian C-order dtypes).
func readNPY(data []byte) (descr string, shape []int, body []byte, err error) {
	if len(data) < 10 || string(data[:6]) != "\x93NUMPY" {
		return "", nil, nil, fmt.Errorf("not a .npy file")
	}
	var hl, off int
	switch data[6] {
	case 1:
		hl, off = int(binary.LittleEndian.Uint16(data[8:])), 10
	case 2, 3:
		if len(data) < 12 {
			return "", nil, nil, fmt.Errorf("short .npy header")
		}
		hl, off = int(binary.LittleEndian.Uint32(data[8:])), 12
	default:
		return "", nil, nil, fmt.Errorf(".npy version %d", data[6])
	}
	if off+hl > len(data) {
		return "", nil, nil, fmt.Errorf("short .npy header")
	}
	m := npyDictRE.FindStringSubmatch(string(data[off : off+hl]))
	if m == nil {
		return "", nil, nil, fmt.Errorf("bad .npy header %q", data[off:off+hl])
	}
	if m[2] == "True" {
		return "", nil, nil, fmt.Errorf("fortran-order .npy is not supported")
	}
	for _, f := range strings.Split(m[3], ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 {
			return "", nil, nil, fmt.Errorf("bad .npy shape %q", m[3])
		}
		shape = append(shape, d)
	}
	return m[1], shape, data[off+hl:], nil
}

// ReadBatch reads a file written by ExportBatch. Wait is zero.
func ReadBatch(path string) (*Batch, error) {
	zr, err := zip.OpenReader(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: read batch: %w", err)
	}
	defer zr.Close()
	arrays := map[string][]byte{}
	for _, f := range zr.File {
		if f.UncompressedSize64 > 1<<32 {
			return nil, fmt.Errorf("dataset: read batch %s: member %s is too large", path, f.Name)
		}
		rc, err := f.Open()
		if err != nil {
			return nil, fmt.Errorf("dataset: read batch %s: %w", path, err)
		}
		data, err := io.ReadAll(io.LimitReader(rc, 1<<32))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("dataset: read batch %s: %w", path, err)
		}
		arrays[f.Name] = data
	}
	get := func(name, descr string, dims int) ([]int, []byte, error) {
		data, ok := arrays[name]
		if !ok {
			return nil, nil, fmt.Errorf("missing %s", name)
		}
		d, shape, body, err := readNPY(data)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", name, err)
		}
		if d != descr || len(shape) != dims {
			return nil, nil, fmt.Errorf("%s: got dtype %s with %d dims, want %s with %d", name, d, len(shape), descr, dims)
		}
		elem := 4
		if descr == "<i8" {
			elem = 8
		}
		n := elem
		for _, s := range shape {
			if s > len(body) {
				return nil, nil, fmt.Errorf("%s: shape %v larger than its data", name, shape)
			}
			if n *= s; n > len(body) {
				break
			}
		}
		if n != len(body) {
			return nil, nil, fmt.Errorf("%s: %d data bytes for shape %v", name, len(body), shape)
		}
		return shape, body, nil
	}
	fail := func(err error) (*Batch, error) { return nil, fmt.Errorf("dataset: read batch %s: %w", path, err) }
	xs, xb, err := get("x.npy", "<f4", 4)
	if err != nil {
		return fail(err)
	}
	ls, lb, err := get("labels.npy", "<i4", 1)
	if err != nil {
		return fail(err)
	}
	if ls[0] != xs[0] {
		return fail(fmt.Errorf("%d labels for %d images", ls[0], xs[0]))
	}
	b := &Batch{N: xs[0], H: xs[1], W: xs[2], C: xs[3], X: make([]float32, len(xb)/4), Labels: make([]int32, ls[0])}
	for i := range b.X {
		b.X[i] = math.Float32frombits(binary.LittleEndian.Uint32(xb[4*i:]))
	}
	for i := range b.Labels {
		b.Labels[i] = int32(binary.LittleEndian.Uint32(lb[4*i:]))
	}
	if _, eb, err := get("epoch.npy", "<i8", 0); err == nil {
		b.Epoch = int(int64(binary.LittleEndian.Uint64(eb)))
	}
	if _, ib, err := get("index.npy", "<i8", 0); err == nil {
		b.Index = int(int64(binary.LittleEndian.Uint64(ib)))
	}
	return b, nil
}

// ExportOrder writes the order of an epoch as CSV with the header
// "batch,position,index,label,path": one row per image, in the order the
// loader yields them (batch = position / batchSize). index is the image's
// position in the subset.
func ExportOrder(path string, s *Subset, order []int, batchSize int) error {
	if batchSize <= 0 {
		return fmt.Errorf("dataset: export order: batch size %d must be positive", batchSize)
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"batch", "position", "index", "label", "path"})
	for p, i := range order {
		if i < 0 || i >= s.Len() {
			return fmt.Errorf("dataset: export order: index %d out of range [0, %d)", i, s.Len())
		}
		w.Write([]string{strconv.Itoa(p / batchSize), strconv.Itoa(p), strconv.Itoa(i),
			strconv.Itoa(int(s.Label(i))), s.Path(i)})
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("dataset: export order: %w", err)
	}
	if err := writeFileAtomic(path, buf.Bytes()); err != nil {
		return fmt.Errorf("dataset: export order: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path through weights.WriteFileAtomic, the one output-file
// rule: the destination must be missing or a regular file (a symlink, FIFO, device or folder
// there is refused), its folder must exist, and the file is replaced atomically.
func writeFileAtomic(path string, data []byte) error {
	return weights.WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}
