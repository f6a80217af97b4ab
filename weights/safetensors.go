package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
)

// maxHeader is the largest safetensors header accepted, the limit of the
// reference implementation (safetensors' MAX_HEADER_SIZE, 100 MB).
const maxHeader = 100_000_000

// metadataKey is the reserved header key of the free-form string metadata.
const metadataKey = "__metadata__"

// stDtypes maps the safetensors dtype names to element sizes; those with a
// converter can be read.
var stDtypes = map[string]int{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
	"I16": 2, "U16": 2, "F16": 2, "BF16": 2,
	"I32": 4, "U32": 4, "F32": 4,
	"I64": 8, "U64": 8, "F64": 8,
}

type stEntry struct {
	Dtype       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// ReadSafetensors reads a safetensors file: its tensors, sorted by name, and
// its "__metadata__" strings (nil when absent). F32 tensors are read as they
// are; F16, BF16 and F64 are converted to float32. BatchNorm's I64
// num_batches_tracked buffers (safetensors.torch.save_file of a state dict
// keeps them) are skipped, as ReadPth skips them; any other tensor of another
// dtype is an error that names it.
func ReadSafetensors(path string) ([]*Tensor, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("weights: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("weights: %w", err)
	}
	ts, meta, err := decodeSafetensors(f, st.Size())
	if err != nil {
		return nil, nil, fmt.Errorf("weights: safetensors: %s: %w", path, err)
	}
	return ts, meta, nil
}

// DecodeSafetensors reads safetensors data of the given size from r (see
// ReadSafetensors).
func DecodeSafetensors(r io.ReaderAt, size int64) ([]*Tensor, map[string]string, error) {
	ts, meta, err := decodeSafetensors(r, size)
	if err != nil {
		return nil, nil, fmt.Errorf("weights: safetensors: %w", err)
	}
	return ts, meta, nil
}

func decodeSafetensors(r io.ReaderAt, size int64) ([]*Tensor, map[string]string, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, nil, fmt.Errorf("file of %d bytes is shorter than the 8-byte header length", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, nil, fmt.Errorf("read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(size-8) {
		return nil, nil, fmt.Errorf("header length %d exceeds the %d bytes after it", n, size-8)
	}
	if n > maxHeader {
		return nil, nil, fmt.Errorf("header length %d exceeds the limit of %d", n, maxHeader)
	}
	header := make([]byte, n)
	if _, err := r.ReadAt(header, 8); err != nil {
		return nil, nil, fmt.Errorf("read header: %w", err)
	}
	entries, names, meta, err := parseHeader(header)
	if err != nil {
		return nil, nil, err
	}
	dataStart := int64(8 + n)
	dataLen := uint64(size - dataStart)

	type span struct {
		name       string
		begin, end uint64
	}
	spans := make([]span, 0, len(names))
	read := make([]string, 0, len(names))
	for _, name := range names {
		e := entries[name]
		if len(e.DataOffsets) != 2 {
			return nil, nil, fmt.Errorf("tensor %q: data_offsets has %d values, want 2", name, len(e.DataOffsets))
		}
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		if b > end || end > dataLen {
			return nil, nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] out of the %d-byte data buffer", name, b, end, dataLen)
		}
		elem, known := stDtypes[e.Dtype]
		if !known {
			return nil, nil, fmt.Errorf("tensor %q: unknown dtype %q", name, e.Dtype)
		}
		numel := uint64(1)
		for _, d := range e.Shape {
			if d < 0 {
				return nil, nil, fmt.Errorf("tensor %q: negative dimension in shape %v", name, e.Shape)
			}
			if d != 0 && numel > maxElements/uint64(d) {
				return nil, nil, fmt.Errorf("tensor %q: shape %v is too large", name, e.Shape)
			}
			numel *= uint64(d)
		}
		if numel*uint64(elem) != end-b {
			return nil, nil, fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data_offsets give %d", name, e.Shape, e.Dtype, numel*uint64(elem), end-b)
		}
		spans = append(spans, span{name, b, end})
		if conv[e.Dtype] == nil {
			if isBatchesTracked(name, e.Dtype == "I64") {
				continue // checked for overlaps below, never read
			}
			return nil, nil, fmt.Errorf("tensor %q: unsupported dtype %s (want F32, F16, BF16 or F64)", name, e.Dtype)
		}
		read = append(read, name)
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].end < spans[j].end
	})
	for i := 1; i < len(spans); i++ {
		if spans[i].begin < spans[i-1].end {
			return nil, nil, fmt.Errorf("tensors %q and %q overlap", spans[i-1].name, spans[i].name)
		}
	}

	// Every tensor's bytes now lie in the file and no two overlap, so the
	// allocations below add up to at most the file size (times 2 for F16/BF16
	// converted to float32).
	ts := make([]*Tensor, 0, len(read))
	for _, name := range read {
		e := entries[name]
		shape := make([]int, len(e.Shape))
		for i, d := range e.Shape {
			shape[i] = int(d)
		}
		elem := stDtypes[e.Dtype]
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		data := make([]float32, (end-b)/uint64(elem))
		if err := readConverted(r, dataStart+int64(b), data, elem, conv[e.Dtype]); err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		ts = append(ts, &Tensor{Name: name, Shape: shape, Data: data})
	}
	return ts, meta, nil
}

// isBatchesTracked reports whether a tensor is BatchNorm's int64 counter of
// training batches, which holds no weights and is skipped by every reader.
func isBatchesTracked(name string, isInt64 bool) bool {
	return isInt64 && strings.HasSuffix(name, ".num_batches_tracked")
}

// parseHeader decodes the JSON header, refusing duplicate keys.
func parseHeader(header []byte) (map[string]stEntry, []string, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(header))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, nil, nil, errors.New("header is not a JSON object")
	}
	entries := map[string]stEntry{}
	var names []string
	var meta map[string]string
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("header: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, nil, errors.New("header: key is not a string")
		}
		if seen[key] {
			return nil, nil, nil, fmt.Errorf("header: duplicate key %q", key)
		}
		seen[key] = true
		if key == metadataKey {
			if err := dec.Decode(&meta); err != nil {
				return nil, nil, nil, fmt.Errorf("header: %s is not an object of strings: %w", metadataKey, err)
			}
			continue
		}
		if key == "" {
			return nil, nil, nil, errors.New("header: tensor with an empty name")
		}
		var e stEntry
		if err := dec.Decode(&e); err != nil {
			return nil, nil, nil, fmt.Errorf("header: tensor %q: %w", key, err)
		}
		entries[key] = e
		names = append(names, key)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, nil, fmt.Errorf("header: %w", err)
	}
	// Only padding may follow the object.
	if rest := bytes.TrimRight(header[dec.InputOffset():], " \t\r\n\x00"); len(rest) != 0 {
		return nil, nil, nil, errors.New("header: data after the JSON object")
	}
	slices.Sort(names)
	return entries, names, meta, nil
}

// conv decodes one element of a dtype from little-endian bytes.
var conv = map[string]func([]byte) float32{
	"F32":  func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) },
	"F16":  func(b []byte) float32 { return halfToFloat32(binary.LittleEndian.Uint16(b)) },
	"BF16": func(b []byte) float32 { return math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16) },
	"F64":  func(b []byte) float32 { return float32(math.Float64frombits(binary.LittleEndian.Uint64(b))) },
}

// readConverted fills dst from len(dst)*elem bytes at off, in chunks.
func readConverted(r io.ReaderAt, off int64, dst []float32, elem int, f func([]byte) float32) error {
	const chunk = 1 << 16
	buf := make([]byte, min(chunk, len(dst)*elem))
	for i := 0; i < len(dst); {
		n := min(len(buf)/elem, len(dst)-i)
		b := buf[:n*elem]
		if _, err := r.ReadAt(b, off); err != nil {
			return fmt.Errorf("read data: %w", err)
		}
		for j := range n {
			dst[i+j] = f(b[j*elem:])
		}
		i += n
		off += int64(len(b))
	}
	return nil
}

// halfToFloat32 converts IEEE 754 binary16 bits to float32 exactly.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	case frac == 0: // ±0
		return math.Float32frombits(sign)
	}
	// Subnormal: frac·2^-24, exact in float32.
	f := float32(frac) * (1.0 / (1 << 24))
	if sign != 0 {
		f = -f
	}
	return f
}

// WriteSafetensors writes ts as float32 (F32) tensors, sorted by name, with
// meta as "__metadata__" (omitted when empty), atomically (see
// WriteFileAtomic). The header is padded with spaces to a multiple of 8 bytes,
// as the reference implementation does, so the data buffer is 8-byte aligned.
func WriteSafetensors(path string, ts []*Tensor, meta map[string]string) error {
	return WriteFileAtomic(path, func(w io.Writer) error {
		return encodeSafetensors(w, ts, meta)
	})
}

// EncodeSafetensors writes ts and meta to w in the safetensors format (see
// WriteSafetensors).
func EncodeSafetensors(w io.Writer, ts []*Tensor, meta map[string]string) error {
	if err := encodeSafetensors(w, ts, meta); err != nil {
		return fmt.Errorf("weights: safetensors: %w", err)
	}
	return nil
}

func encodeSafetensors(w io.Writer, ts []*Tensor, meta map[string]string) error {
	sorted := slices.Clone(ts)
	for _, t := range sorted {
		if err := t.check(); err != nil {
			return fmt.Errorf("%w", err)
		}
		if t.Name == metadataKey {
			return fmt.Errorf("tensor name %q is reserved", metadataKey)
		}
	}
	slices.SortFunc(sorted, func(a, b *Tensor) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	header := make(map[string]any, len(sorted)+1)
	var off uint64
	for i, t := range sorted {
		if i > 0 && sorted[i-1].Name == t.Name {
			return fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		shape := make([]int64, len(t.Shape)) // never nil: a scalar is "shape": []
		for j, d := range t.Shape {
			shape[j] = int64(d)
		}
		end := off + 4*uint64(len(t.Data))
		header[t.Name] = stEntry{Dtype: "F32", Shape: shape, DataOffsets: []uint64{off, end}}
		off = end
	}
	if len(meta) > 0 {
		header[metadataKey] = meta
	}
	hb, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if pad := (8 - len(hb)%8) % 8; pad > 0 {
		hb = append(hb, bytes.Repeat([]byte{' '}, pad)...)
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(hb)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return fmt.Errorf("%w", err)
	}
	if _, err := w.Write(hb); err != nil {
		return fmt.Errorf("%w", err)
	}
	for _, t := range sorted {
		if err := writeFloats(w, t.Data); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

// writeFloats writes xs as little-endian float32 in chunks.
func writeFloats(w io.Writer, xs []float32) error {
	const chunk = 1 << 14
	buf := make([]byte, 4*min(chunk, len(xs)))
	for len(xs) > 0 {
		n := min(chunk, len(xs))
		for i, x := range xs[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(x))
		}
		if _, err := w.Write(buf[:4*n]); err != nil {
			return err
		}
		xs = xs[n:]
	}
	return nil
}
