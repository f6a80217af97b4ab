package weights

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// storageTypes maps torch's storage class names to dtypes.
var storageTypes = map[string]struct {
	dtype string // torch dtype name, for messages
	size  int    // bytes per element
	conv  func([]byte) float32
}{
	"FloatStorage":    {"float32", 4, conv["F32"]},
	"HalfStorage":     {"float16", 2, conv["F16"]},
	"BFloat16Storage": {"bfloat16", 2, conv["BF16"]},
	"DoubleStorage":   {"float64", 8, conv["F64"]},
	"LongStorage":     {"int64", 8, nil},
	"IntStorage":      {"int32", 4, nil},
	"ShortStorage":    {"int16", 2, nil},
	"CharStorage":     {"int8", 1, nil},
	"ByteStorage":     {"uint8", 1, nil},
	"BoolStorage":     {"bool", 1, nil},
}

// ReadPth reads a PyTorch state dict saved by torch.save, in either of its
// formats: the zip of PyTorch 1.6 and later (<archive>/data.pkl,
// <archive>/byteorder and one <archive>/data/<key> entry per storage), and
// the legacy format of earlier versions, which torchvision's ImageNet files
// such as vgg16-397923af.pth still use: consecutive pickles of torch's magic
// number 0x1950a86a20f9469cfc6c, the protocol version 1001, a sys_info dict,
// the state dict, and the list of storage keys, followed for each key in that
// order by its element count (int64, little-endian) and its raw little-endian
// bytes. ReadPth returns the tensors in the state dict's order, with the
// names as saved (Load also removes DataParallel's "module." prefix).
//
// The pickle is read by a restricted interpreter that knows only the opcodes
// torch.save uses and the globals collections.OrderedDict,
// torch._utils._rebuild_tensor_v2, torch._utils._rebuild_tensor (PyTorch 0.3
// and earlier), torch._utils._rebuild_parameter(_with_state) and
// torch.*Storage (torch.cuda.*Storage in legacy files saved from a GPU,
// read as its CPU namesake); any other global (os.system, builtins.eval, a model class,
// ...) is refused with a *ForbiddenGlobalError naming it, and nothing is ever
// executed. Also accepted: a dict that wraps the state dict under
// "state_dict", "model_state_dict" or "model" (a training checkpoint), beside
// anything else made of those pieces (epoch numbers, optimizer state with
// its nested dicts, lists and tensors of any dtype, which are not read).
//
// float32 tensors are read as they are; float16, bfloat16 and float64 are
// converted to float32. BatchNorm's int64 num_batches_tracked buffers are
// skipped; any other tensor of another dtype is an error. Tensors must be
// contiguous (any storage offset is fine). Allocations are bounded by the
// file: every pickle length is checked against the bytes left, every storage
// against its zip entry or the bytes left after it in a legacy file, and the
// returned data is at most 4 times the file size (float16 doubles in
// float32, and views may share a storage).
func ReadPth(path string) ([]*Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	ts, err := decodePth(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("weights: pth: %s: %w", path, err)
	}
	return ts, nil
}

// DecodePth reads a torch.save file (zip or legacy) of the given size from r
// (see ReadPth).
func DecodePth(r io.ReaderAt, size int64) ([]*Tensor, error) {
	ts, err := decodePth(r, size)
	if err != nil {
		return nil, fmt.Errorf("weights: pth: %w", err)
	}
	return ts, nil
}

func decodePth(r io.ReaderAt, size int64) ([]*Tensor, error) {
	head := make([]byte, min(size, sniffLen))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if isLegacyPth(head) {
		ts, err := decodeLegacyPth(r, size)
		if err != nil {
			return nil, fmt.Errorf("legacy format: %w", err)
		}
		return ts, nil
	}
	return decodeZipPth(r, size)
}

// pthArchive is an opened torch.save zip.
type pthArchive struct {
	fileSize  int64
	entries   map[string]*zip.File // by name relative to the archive folder
	bigEndian bool
	inflate   int64 // bytes that compressed entries may still inflate to
}

func decodeZipPth(r io.ReaderAt, size int64) ([]*Tensor, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // entries are never written to disk
		return nil, fmt.Errorf("not a torch.save zip: %w", err)
	}
	a := &pthArchive{fileSize: size, entries: map[string]*zip.File{}, inflate: 4 * size}
	prefix := ""
	for _, f := range zr.File {
		dir, rest, ok := strings.Cut(f.Name, "/")
		if ok && rest == "data.pkl" {
			if prefix != "" {
				return nil, fmt.Errorf("two data.pkl entries (%s/ and %s/)", prefix, dir)
			}
			prefix = dir
		}
	}
	if prefix == "" {
		return nil, errors.New("no <archive>/data.pkl entry: not a torch.save zip")
	}
	for _, f := range zr.File {
		rest, ok := strings.CutPrefix(f.Name, prefix+"/")
		if !ok {
			continue
		}
		if _, dup := a.entries[rest]; dup {
			return nil, fmt.Errorf("duplicate zip entry %q", f.Name)
		}
		a.entries[rest] = f
	}
	if f := a.entries["byteorder"]; f != nil {
		b, err := a.readEntry(f, 16)
		if err != nil {
			return nil, fmt.Errorf("byteorder: %w", err)
		}
		switch string(b) {
		case "little":
		case "big":
			a.bigEndian = true
		default:
			return nil, fmt.Errorf("byteorder %q, want little or big", b)
		}
	}
	pkl, err := a.readEntry(a.entries["data.pkl"], -1)
	if err != nil {
		return nil, fmt.Errorf("data.pkl: %w", err)
	}
	u := &unpickler{data: pkl, persistentLoad: a.persistentLoad}
	v, err := u.run()
	if err != nil {
		return nil, err
	}
	b := &tensorBuilder{budget: 4 * size, bigEndian: a.bigEndian, readStorage: func(s *pStorage) ([]byte, error) {
		return a.readEntry(a.entries["data/"+s.key], -1)
	}}
	return b.tensors(v)
}

// readEntry reads a whole zip entry. A stored entry must fit in the file; a
// compressed one is read as it inflates, never by trusting its declared size.
// max >= 0 bounds the size.
func (a *pthArchive) readEntry(f *zip.File, max int64) ([]byte, error) {
	n := f.UncompressedSize64
	if max >= 0 && n > uint64(max) {
		return nil, fmt.Errorf("entry of %d bytes, want at most %d", n, max)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if f.Method == zip.Store {
		if n > uint64(a.fileSize) {
			return nil, fmt.Errorf("stored entry of %d bytes in a %d-byte file", n, a.fileSize)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(rc, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	if n > uint64(a.inflate) {
		return nil, fmt.Errorf("compressed entries inflate to more than 4 times the file size")
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(rc, int64(n)+1)); err != nil {
		return nil, err
	}
	if uint64(buf.Len()) != n {
		return nil, fmt.Errorf("entry inflates to %d bytes, its header says %d", buf.Len(), n)
	}
	a.inflate -= int64(n)
	return buf.Bytes(), nil
}

// storageID is a parsed storage persistent id:
// ('storage', <storage class>, key, location, numel) in a zip, with a sixth
// item, view_metadata (None or (view key, offset, numel)), in a legacy file.
type storageID struct {
	typ   string // "FloatStorage", ...
	key   string
	numel int64
	view  any // the sixth item, legacy files only
}

func parseStorageID(pid any, legacy bool) (storageID, error) {
	want := "a 5-tuple ('storage', type, key, location, numel)"
	n := 5
	if legacy {
		want = "a 6-tuple ('storage', type, key, location, numel, view_metadata)"
		n = 6
	}
	t, ok := pid.(pTuple)
	if !ok || len(t) != n {
		return storageID{}, fmt.Errorf("persistent id is %s, want %s", typeName(pid), want)
	}
	if s, ok := t[0].(string); !ok || s != "storage" {
		kind := typeName(t[0])
		if ok {
			kind = strconv.Quote(s)
		}
		return storageID{}, fmt.Errorf("persistent id of kind %s, want 'storage'", kind)
	}
	g, ok := t[1].(*pGlobal)
	if !ok || g.kind != gStorage {
		return storageID{}, fmt.Errorf("storage type is %s, want a torch.*Storage", typeName(t[1]))
	}
	key, ok := t[2].(string)
	if !ok {
		return storageID{}, fmt.Errorf("storage key is %s, want str", typeName(t[2]))
	}
	numel, ok := t[4].(int64)
	if !ok || numel < 0 {
		return storageID{}, fmt.Errorf("storage %q: size is %s, want a non-negative int", key, typeName(t[4]))
	}
	if numel > maxElements {
		return storageID{}, fmt.Errorf("storage %q: %d elements is too many", key, numel)
	}
	id := storageID{typ: g.name, key: key, numel: numel}
	if legacy {
		id.view = t[5]
	}
	return id, nil
}

// persistentLoad resolves a storage persistent id after checking the
// storage against its zip entry.
func (a *pthArchive) persistentLoad(pid any) (any, error) {
	id, err := parseStorageID(pid, false)
	if err != nil {
		return nil, err
	}
	st := storageTypes[id.typ]
	f := a.entries["data/"+id.key]
	if f == nil {
		if id.numel == 0 {
			return &pStorage{typ: id.typ, key: id.key}, nil
		}
		return nil, fmt.Errorf("storage %q: no data/%s entry", id.key, id.key)
	}
	if uint64(id.numel)*uint64(st.size) > f.UncompressedSize64 {
		return nil, fmt.Errorf("storage %q: %d elements of %d bytes exceed its %d-byte entry", id.key, id.numel, st.size, f.UncompressedSize64)
	}
	return &pStorage{typ: id.typ, key: id.key, numel: id.numel}, nil
}

// stateDictKeys are the keys under which training checkpoints commonly keep
// the state dict.
var stateDictKeys = []string{"state_dict", "model_state_dict", "model"}

// tensorBuilder turns an unpickled state dict into Tensors, for both .pth
// formats.
type tensorBuilder struct {
	budget    int64 // bytes of float32 output still allowed
	bigEndian bool  // storages hold big-endian elements
	// readStorage returns the raw bytes of s's root storage, at least
	// (s.base+s.numel) elements; it is called once per root storage.
	readStorage func(s *pStorage) ([]byte, error)
}

// tensors turns the unpickled state dict into Tensors.
func (a *tensorBuilder) tensors(v any) ([]*Tensor, error) {
	d, ok := v.(*pDict)
	if !ok {
		return nil, fmt.Errorf("pickle holds %s, want a state dict", typeName(v))
	}
	if !allTensors(d) {
		found := false
		for _, k := range stateDictKeys {
			if inner, ok := d.get(k); ok {
				if id, ok := inner.(*pDict); ok && allTensors(id) {
					d, found = id, true
					break
				}
			}
		}
		if !found {
			return nil, errors.New("pickle holds a dict that is not a state dict of tensors (nor wraps one under state_dict, model_state_dict or model)")
		}
	}
	// Python dict semantics: a repeated key keeps its first position and its
	// last value.
	index := map[string]int{}
	var names []string
	var refs []*pTensor
	for i, k := range d.keys {
		name := k.(string) // allTensors checked
		t := d.vals[i].(*pTensor)
		if j, ok := index[name]; ok {
			refs[j] = t
			continue
		}
		index[name] = len(names)
		names = append(names, name)
		refs = append(refs, t)
	}
	// Read each storage once, for all tensors that view it, and drop it
	// after its last use.
	lastUse := map[string]int{}
	for i, ref := range refs {
		lastUse[ref.storage.key] = i
	}
	data := map[string][]byte{}
	out := make([]*Tensor, 0, len(names))
	for i, name := range names {
		ref := refs[i]
		st := storageTypes[ref.storage.typ]
		if st.conv == nil {
			if isBatchesTracked(name, st.dtype == "int64") {
				continue
			}
			return nil, fmt.Errorf("tensor %q: unsupported dtype %s (%s); want float32, float16, bfloat16 or float64", name, st.dtype, ref.storage.typ)
		}
		t, err := a.tensor(name, ref, st.size, st.conv, data)
		if err != nil {
			return nil, err
		}
		if lastUse[ref.storage.key] == i {
			delete(data, ref.storage.key)
		}
		out = append(out, t)
	}
	return out, nil
}

func allTensors(d *pDict) bool {
	for i, k := range d.keys {
		if _, ok := k.(string); !ok {
			return false
		}
		if _, ok := d.vals[i].(*pTensor); !ok {
			return false
		}
	}
	return true
}

func (a *tensorBuilder) tensor(name string, ref *pTensor, elem int, cv func([]byte) float32, cache map[string][]byte) (*Tensor, error) {
	shape := make([]int, len(ref.size))
	numel := int64(1)
	for i, d := range ref.size {
		if d != 0 && numel > maxElements/d {
			return nil, fmt.Errorf("tensor %q: shape %v is too large", name, ref.size)
		}
		numel *= d
		shape[i] = int(d)
	}
	// Contiguous (row-major) strides; a dimension of size 1 may have any
	// stride, as torch itself allows.
	want := int64(1)
	for i := len(ref.size) - 1; i >= 0; i-- {
		if ref.size[i] != 1 && ref.stride[i] != want {
			return nil, fmt.Errorf("tensor %q: strides %v for shape %v are not contiguous; save t.contiguous() instead", name, ref.stride, ref.size)
		}
		want *= ref.size[i]
	}
	if numel > 0 && (ref.offset > ref.storage.numel || numel > ref.storage.numel-ref.offset) {
		return nil, fmt.Errorf("tensor %q: %d elements at offset %d overrun its storage of %d", name, numel, ref.offset, ref.storage.numel)
	}
	if a.budget -= 4 * numel; a.budget < 0 {
		return nil, fmt.Errorf("tensor %q: tensors add up to more than 4 times the file size", name)
	}
	t := &Tensor{Name: name, Shape: shape, Data: make([]float32, numel)}
	if numel == 0 {
		return t, nil
	}
	raw, ok := cache[ref.storage.key]
	if !ok {
		var err error
		raw, err = a.readStorage(ref.storage)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: storage %q: %w", name, ref.storage.key, err)
		}
		cache[ref.storage.key] = raw
	}
	// The loaders checked the storage against its bytes; check again rather
	// than trust that every path did.
	start := ref.storage.base + ref.offset
	if int64(len(raw))/int64(elem) < start+numel {
		return nil, fmt.Errorf("tensor %q: %d elements at offset %d overrun the %d bytes of storage %q", name, numel, start, len(raw), ref.storage.key)
	}
	src := raw[start*int64(elem) : (start+numel)*int64(elem)]
	if a.bigEndian && elem > 1 {
		sw := make([]byte, elem)
		for i := range t.Data {
			e := src[i*elem : (i+1)*elem]
			for j := range elem {
				sw[j] = e[elem-1-j]
			}
			t.Data[i] = cv(sw)
		}
		return t, nil
	}
	for i := range t.Data {
		t.Data[i] = cv(src[i*elem:])
	}
	return t, nil
}
