package weights

import (
	"archive/zip"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"unicode/utf8"
)

// pthArchiveName is the folder of every entry that EncodePth writes; torch
// names it after the file (torch.save to a buffer uses "archive") and reads
// any name.
const pthArchiveName = "archive"

// pthAlignment is the alignment of every entry's data, as torch 2.x writes
// it (its .storage_alignment record): the local file header's extra field is
// padded with an "FB" field of 'Z' bytes.
const pthAlignment = 64

// WritePth writes ts as a PyTorch state dict in torch.save's zip format, as
// torch 2.11 writes it, atomically (see WriteFileAtomic), so that
// torch.load(path, weights_only=True) returns an OrderedDict of float32
// tensors in ts's order and model.load_state_dict accepts it.
//
// The archive holds archive/data.pkl (a protocol-2 pickle of an OrderedDict
// whose values are torch._utils._rebuild_tensor_v2 calls on persistent-id
// storages), archive/.format_version "1", archive/.storage_alignment "64",
// archive/byteorder "little", archive/data/<i> (tensor i's float32 values,
// little-endian) and archive/version "3\n". Entries are stored uncompressed
// with their data 64-byte aligned, as torch does. No state-dict _metadata is
// written, so BatchNorm layers accept the file without num_batches_tracked
// (which Tensors never hold) and torch sets it to 0. The bytes depend only
// on ts: no time stamps, no random serialization id.
//
// Names must be unique, non-empty UTF-8; shapes must match the data.
func WritePth(path string, ts []*Tensor) error {
	return WriteFileAtomic(path, func(w io.Writer) error {
		return encodePth(w, ts)
	})
}

// EncodePth writes ts to w in torch.save's zip format (see WritePth).
func EncodePth(w io.Writer, ts []*Tensor) error {
	if err := encodePth(w, ts); err != nil {
		return fmt.Errorf("weights: pth: %w", err)
	}
	return nil
}

func encodePth(w io.Writer, ts []*Tensor) error {
	seen := make(map[string]bool, len(ts))
	for _, t := range ts {
		if err := t.check(); err != nil {
			return err
		}
		if !utf8.ValidString(t.Name) {
			return fmt.Errorf("tensor name %q is not valid UTF-8", t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
	}
	type record struct {
		name  string
		size  int64
		write func(io.Writer) error
	}
	bytesRecord := func(name string, b []byte) record {
		return record{name, int64(len(b)), func(w io.Writer) error { _, err := w.Write(b); return err }}
	}
	records := []record{
		bytesRecord("data.pkl", statePickle(ts)),
		bytesRecord(".format_version", []byte("1")),
		bytesRecord(".storage_alignment", []byte(strconv.Itoa(pthAlignment))),
		bytesRecord("byteorder", []byte("little")),
	}
	for i, t := range ts {
		records = append(records, record{"data/" + strconv.Itoa(i), 4 * int64(len(t.Data)), func(w io.Writer) error { return writeFloats(w, t.Data) }})
	}
	records = append(records, bytesRecord("version", []byte("3\n")))

	cw := &countWriter{w: w}
	zw := zip.NewWriter(cw)
	for i, r := range records {
		if err := zw.Flush(); err != nil {
			return err
		}
		// archive/zip writes the previous entry's data descriptor when this
		// one starts: 16 bytes, or 24 for a zip64 entry (APPNOTE 4.3.9).
		off := cw.n
		if i > 0 {
			off += 16
			if records[i-1].size >= math.MaxUint32 {
				off += 8
			}
		}
		name := pthArchiveName + "/" + r.name
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store, Extra: alignExtra(off, len(name))})
		if err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		if err := r.write(fw); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	return zw.Close()
}

// alignExtra returns the local-header extra field that puts the data of an
// entry whose header starts at offset off, with a name of nameLen bytes, on a
// pthAlignment boundary: "FB", the padding length (uint16 little-endian),
// then that many 'Z' bytes, as torch's PyTorchStreamWriter writes it. The
// local header is 30 bytes; archive/zip adds nothing to Extra when
// FileHeader.Modified is zero.
func alignExtra(off int64, nameLen int) []byte {
	start := off + 30 + int64(nameLen) + 4
	pad := (pthAlignment - start%pthAlignment) % pthAlignment
	b := make([]byte, 4+pad)
	b[0], b[1] = 'F', 'B'
	binary.LittleEndian.PutUint16(b[2:], uint16(pad))
	for i := 4; i < len(b); i++ {
		b[i] = 'Z'
	}
	return b
}

// statePickle returns the protocol-2 pickle of the state dict
// OrderedDict([(name, _rebuild_tensor_v2(storage i, 0, shape, strides,
// False, OrderedDict())), ...]), with storage i the persistent id
// ('storage', torch.FloatStorage, "i", "cpu", numel).
func statePickle(ts []*Tensor) []byte {
	var p pickleWriter
	p.b = append(p.b, 0x80, 2) // PROTO 2
	p.global("collections", "OrderedDict")
	p.b = append(p.b, ')', 'R') // OrderedDict()
	if len(ts) > 0 {
		p.b = append(p.b, '(') // MARK
		for i, t := range ts {
			p.str(t.Name)
			p.global("torch._utils", "_rebuild_tensor_v2")
			p.b = append(p.b, '(') // MARK: the arguments
			p.b = append(p.b, '(') // MARK: the persistent id
			p.str("storage")
			p.global("torch", "FloatStorage")
			p.str(strconv.Itoa(i))
			p.str("cpu")
			p.int(int64(len(t.Data)))
			p.b = append(p.b, 't', 'Q') // TUPLE, BINPERSID
			p.int(0)                    // storage offset
			strides := make([]int64, len(t.Shape))
			s := int64(1)
			for j := len(t.Shape) - 1; j >= 0; j-- {
				strides[j] = s
				s *= int64(t.Shape[j])
			}
			shape := make([]int64, len(t.Shape))
			for j, d := range t.Shape {
				shape[j] = int64(d)
			}
			p.tuple(shape)
			p.tuple(strides)
			p.b = append(p.b, 0x89) // NEWFALSE: requires_grad
			p.global("collections", "OrderedDict")
			p.b = append(p.b, ')', 'R') // backward_hooks: OrderedDict()
			p.b = append(p.b, 't', 'R') // TUPLE, REDUCE
		}
		p.b = append(p.b, 'u') // SETITEMS
	}
	p.b = append(p.b, '.') // STOP
	return p.b
}

// pickleWriter appends pickle opcodes as Python's protocol-2 pickler writes
// them.
type pickleWriter struct{ b []byte }

func (p *pickleWriter) global(module, name string) {
	p.b = append(p.b, 'c')
	p.b = append(p.b, module...)
	p.b = append(p.b, '\n')
	p.b = append(p.b, name...)
	p.b = append(p.b, '\n')
}

// str writes BINUNICODE (a uint32 length, then UTF-8).
func (p *pickleWriter) str(s string) {
	p.b = append(p.b, 'X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
}

// int writes v as BININT1, BININT2, BININT or LONG1, the shortest that
// holds it, as Python does.
func (p *pickleWriter) int(v int64) {
	switch {
	case v >= 0 && v <= math.MaxUint8:
		p.b = append(p.b, 'K', byte(v))
	case v >= 0 && v <= math.MaxUint16:
		p.b = append(p.b, 'M')
		p.b = binary.LittleEndian.AppendUint16(p.b, uint16(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.b = append(p.b, 'J')
		p.b = binary.LittleEndian.AppendUint32(p.b, uint32(int32(v)))
	default:
		// Python's encode_long for a non-negative v (sizes are never
		// negative): bit_length/8 + 1 bytes, little-endian two's complement.
		bitLen := 0
		for x := uint64(v); x != 0; x >>= 1 {
			bitLen++
		}
		n := bitLen/8 + 1
		p.b = append(p.b, 0x8a, byte(n))
		for i := range n {
			p.b = append(p.b, byte(uint64(v)>>(8*i)))
		}
	}
}

// tuple writes a tuple of ints: EMPTY_TUPLE, TUPLE1 to TUPLE3, or MARK ...
// TUPLE, as Python does.
func (p *pickleWriter) tuple(xs []int64) {
	if len(xs) == 0 {
		p.b = append(p.b, ')')
		return
	}
	if len(xs) > 3 {
		p.b = append(p.b, '(')
	}
	for _, x := range xs {
		p.int(x)
	}
	switch len(xs) {
	case 1:
		p.b = append(p.b, 0x85)
	case 2:
		p.b = append(p.b, 0x86)
	case 3:
		p.b = append(p.b, 0x87)
	default:
		p.b = append(p.b, 't')
	}
}
