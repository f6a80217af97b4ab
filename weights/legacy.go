package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
)

// This file reads torch.save's legacy format (PyTorch 0.1.10 to 1.5, and
// torch.save(..., _use_new_zipfile_serialization=False) since), as
// torch/serialization.py's _legacy_save writes it and _legacy_load reads it:
//
//	pickle  MAGIC_NUMBER 0x1950a86a20f9469cfc6c
//	pickle  PROTOCOL_VERSION 1001
//	pickle  sys_info {"protocol_version", "little_endian", "type_sizes"}
//	pickle  the object; each storage is a persistent id
//	        ('storage', torch.<T>Storage, key, location, numel, view_metadata)
//	pickle  the storage keys, sorted as strings
//	then, for each key in that order:
//	        numel as int64 little-endian, then numel elements, little-endian
//
// The data is little-endian whatever machine saved it (torch's
// THPStorage_writeFileRaw converts), so sys_info is read and not used.
// view_metadata is None except in files of PyTorch 0.1 to 0.3, where a
// storage could be a view (view key, offset, numel) of its root storage.

// legacyProtocolVersion is torch's PROTOCOL_VERSION of the legacy format.
const legacyProtocolVersion = 1001

// legacyMagic is torch's MAGIC_NUMBER 0x1950a86a20f9469cfc6c as pickle's
// LONG1 opcode writes it: 0x8a, 10 bytes, the bytes little-endian.
var legacyMagic = []byte{0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'}

// legacyMagicEnd returns the offset just past the first pickle in b when that
// pickle is torch's magic number (any protocol from 2 to 5, framed or not),
// and -1 otherwise.
func legacyMagicEnd(b []byte) int {
	if len(b) < 2 || b[0] != 0x80 || b[1] < 2 || b[1] > 5 {
		return -1
	}
	i := 2
	if len(b) > i && b[i] == 0x95 { // FRAME and its 8-byte length
		i += 9
	}
	if len(b) < i+len(legacyMagic) || !bytes.Equal(b[i:i+len(legacyMagic)], legacyMagic) {
		return -1
	}
	return i + len(legacyMagic)
}

// isLegacyPth reports whether head starts a legacy torch.save file.
func isLegacyPth(head []byte) bool { return legacyMagicEnd(head) >= 0 }

// legacyRoot is one root storage of a legacy file.
type legacyRoot struct {
	typ     string
	numel   int64
	dataOff int64 // file offset of its first element; -1 until the data section is read
}

// legacyFile holds what the pickles of a legacy file declare.
type legacyFile struct {
	size  int64
	roots map[string]*legacyRoot
}

// legacyFirstRead is how much of a legacy file is read first to find its
// pickles (a state dict's pickle takes a few KB); a longer pickle makes the
// reader read 4 times as much again, up to the whole file.
const legacyFirstRead = 1 << 20

func decodeLegacyPth(r io.ReaderAt, size int64) ([]*Tensor, error) {
	var (
		l   *legacyFile
		obj any
		end int64
	)
	for n := min(size, legacyFirstRead); ; n = min(size, 4*n) {
		buf := make([]byte, n)
		if _, err := r.ReadAt(buf, 0); err != nil && !(errors.Is(err, io.EOF) && n == size) {
			return nil, err
		}
		l = &legacyFile{size: size, roots: map[string]*legacyRoot{}}
		var keys []string
		var err error
		obj, keys, end, err = l.parsePickles(buf)
		if errors.Is(err, errTruncated) && n < size {
			continue // the pickles go on past buf
		}
		if err != nil {
			return nil, err
		}
		if err := l.locateData(r, keys, end); err != nil {
			return nil, err
		}
		break
	}
	b := &tensorBuilder{budget: 4 * size, readStorage: func(s *pStorage) ([]byte, error) {
		root := l.roots[s.key]
		raw := make([]byte, root.numel*int64(storageTypes[root.typ].size)) // checked against the file by locateData
		if _, err := r.ReadAt(raw, root.dataOff); err != nil {
			return nil, err
		}
		return raw, nil
	}}
	return b.tensors(obj)
}

// parsePickles runs the five pickles at the start of buf and returns the
// object, the storage keys and the offset where the storage data starts.
func (l *legacyFile) parsePickles(buf []byte) (obj any, keys []string, end int64, err error) {
	pos := legacyMagicEnd(buf)
	if pos < 0 {
		return nil, nil, 0, errors.New("no torch magic number")
	}
	next := func(what string, load func(any) (any, error)) (any, error) {
		u := &unpickler{data: buf, pos: pos, persistentLoad: load}
		v, err := u.run()
		if err != nil {
			return nil, fmt.Errorf("%s pickle: %w", what, err)
		}
		pos = u.pos
		return v, nil
	}
	v, err := next("protocol version", nil)
	if err != nil {
		return nil, nil, 0, err
	}
	if n, ok := v.(int64); !ok || n != legacyProtocolVersion {
		return nil, nil, 0, fmt.Errorf("protocol version %v (%s), want %d", v, typeName(v), legacyProtocolVersion)
	}
	if v, err = next("sys_info", nil); err != nil {
		return nil, nil, 0, err
	}
	if _, ok := v.(*pDict); !ok {
		return nil, nil, 0, fmt.Errorf("sys_info is %s, want dict", typeName(v))
	}
	if obj, err = next("object", l.persistentLoad); err != nil {
		return nil, nil, 0, err
	}
	if v, err = next("storage keys", nil); err != nil {
		return nil, nil, 0, err
	}
	list, ok := v.(*pList)
	if !ok {
		return nil, nil, 0, fmt.Errorf("storage keys are %s, want list", typeName(v))
	}
	keys = make([]string, len(list.items))
	for i, k := range list.items {
		if keys[i], ok = k.(string); !ok {
			return nil, nil, 0, fmt.Errorf("storage key %d is %s, want str", i, typeName(k))
		}
	}
	return obj, keys, int64(pos), nil
}

// persistentLoad resolves a legacy storage persistent id. Every id of one root
// key must agree on its type and size, as torch requires; a view must lie in
// its root.
func (l *legacyFile) persistentLoad(pid any) (any, error) {
	id, err := parseStorageID(pid, true)
	if err != nil {
		return nil, err
	}
	elem := int64(storageTypes[id.typ].size)
	if id.numel > l.size/elem {
		return nil, fmt.Errorf("storage %q: %d elements of %d bytes exceed the %d-byte file", id.key, id.numel, elem, l.size)
	}
	root := l.roots[id.key]
	if root == nil {
		root = &legacyRoot{typ: id.typ, numel: id.numel, dataOff: -1}
		l.roots[id.key] = root
	} else if root.typ != id.typ || root.numel != id.numel {
		return nil, fmt.Errorf("storage %q: declared as %s of %d elements and as %s of %d", id.key, root.typ, root.numel, id.typ, id.numel)
	}
	s := &pStorage{typ: id.typ, key: id.key, numel: id.numel}
	if id.view == nil {
		return s, nil
	}
	// view_metadata = (view key, offset, numel), in elements of the root.
	v, ok := id.view.(pTuple)
	if !ok || len(v) != 3 {
		return nil, fmt.Errorf("storage %q: view metadata is %s, want None or a 3-tuple (key, offset, numel)", id.key, typeName(id.view))
	}
	off, ok1 := v[1].(int64)
	n, ok2 := v[2].(int64)
	if !ok1 || !ok2 || off < 0 || n < 0 || off > id.numel || n > id.numel-off {
		return nil, fmt.Errorf("storage %q: view of %v elements at offset %v does not lie in its %d elements", id.key, v[2], v[1], id.numel)
	}
	s.base, s.numel = off, n
	return s, nil
}

// locateData walks the data section that starts at off: for each key, an
// int64 element count, which must be the declared one and fit in the bytes
// left, then the elements.
func (l *legacyFile) locateData(r io.ReaderAt, keys []string, off int64) error {
	var count [8]byte
	for _, key := range keys {
		root := l.roots[key]
		if root == nil {
			return fmt.Errorf("storage key %q is listed but no tensor uses it", key)
		}
		if root.dataOff >= 0 {
			return fmt.Errorf("storage key %q is listed twice", key)
		}
		if l.size-off < 8 {
			return fmt.Errorf("storage %q: the file ends (%d bytes) before its element count at offset %d", key, l.size, off)
		}
		if _, err := r.ReadAt(count[:], off); err != nil {
			return fmt.Errorf("storage %q: %w", key, err)
		}
		n := int64(binary.LittleEndian.Uint64(count[:]))
		off += 8
		elem := int64(storageTypes[root.typ].size)
		if n < 0 || n > (l.size-off)/elem {
			return fmt.Errorf("storage %q: %d elements of %d bytes exceed the %d bytes left", key, uint64(n), elem, l.size-off)
		}
		if n != root.numel {
			return fmt.Errorf("storage %q: %d elements in the data, %d in the pickle", key, n, root.numel)
		}
		root.dataOff = off
		off += n * elem
	}
	for _, key := range slices.Sorted(maps.Keys(l.roots)) {
		if l.roots[key].dataOff < 0 {
			return fmt.Errorf("storage %q has no data (not in the key list)", key)
		}
	}
	return nil
}
