package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// This file is a restricted pickle interpreter: enough of the pickle virtual
// machine (protocols 2 to 5) to read what torch.save writes for a state
// dict, and nothing that can run code. It differs from Python's unpickler in
// three ways that matter for safety:
//
//   - GLOBAL and STACK_GLOBAL resolve only the names in allowedGlobals, to
//     markers, never to code. Every other name is a ForbiddenGlobalError.
//   - REDUCE and BUILD are interpreted for those markers only (an empty
//     OrderedDict, torch's tensor rebuild functions); nothing is called.
//   - Opcodes outside the list below (INST, OBJ, NEWOBJ, EXT*, the text
//     protocol-0 forms, buffers, sets) are refused.
//
// Every length read from the stream is checked against the bytes that remain
// before anything is allocated, so a pickle of n bytes allocates O(n).

// ForbiddenGlobalError is returned when a pickle names a global that is not
// on the allowlist (such as os.system). Nothing named is ever imported or
// called; the error only reports the attempt.
type ForbiddenGlobalError struct {
	Module, Name string
}

func (e *ForbiddenGlobalError) Error() string {
	return fmt.Sprintf("forbidden global %q", e.Module+"."+e.Name)
}

// globalKind is what an allowed global stands for.
type globalKind int

const (
	gOrderedDict globalKind = iota + 1
	gRebuildTensor
	gRebuildTensorV1
	gRebuildParameter
	gRebuildParameterWithState
	gStorage
)

// allowedGlobals is the complete list of names a pickle may refer to (the
// torch.cuda storage classes are added by init: legacy files saved from a GPU
// name them, and torch's legacy loader reads them as their CPU namesakes).
var allowedGlobals = map[string]globalKind{
	"collections.OrderedDict":                    gOrderedDict,
	"torch._utils._rebuild_tensor_v2":            gRebuildTensor,
	"torch._utils._rebuild_tensor":               gRebuildTensorV1, // PyTorch 0.1 to 0.3
	"torch._utils._rebuild_parameter":            gRebuildParameter,
	"torch._utils._rebuild_parameter_with_state": gRebuildParameterWithState,
	"torch.FloatStorage":                         gStorage,
	"torch.HalfStorage":                          gStorage,
	"torch.BFloat16Storage":                      gStorage,
	"torch.DoubleStorage":                        gStorage,
	"torch.LongStorage":                          gStorage,
	"torch.IntStorage":                           gStorage,
	"torch.ShortStorage":                         gStorage,
	"torch.CharStorage":                          gStorage,
	"torch.ByteStorage":                          gStorage,
	"torch.BoolStorage":                          gStorage,
}

func init() {
	for name := range storageTypes {
		allowedGlobals["torch.cuda."+name] = gStorage
	}
}

// Values on the pickle stack. Python ints are int64, floats float64, str
// string, bytes []byte, True/False bool, None nil.
type (
	pTuple  []any
	pList   struct{ items []any }
	pDict   struct{ keys, vals []any }
	pGlobal struct {
		module, name string
		kind         globalKind
	}
	// pStorage is a persistent-id storage reference, resolved by the loader.
	pStorage struct {
		typ   string // "FloatStorage", ...
		key   string // the root storage: entry name under data/, or legacy key
		numel int64  // elements of this storage (of the view, for a legacy view)
		base  int64  // element offset of a legacy view in its root storage
	}
	// pTensor is a _rebuild_tensor_v2 result, not yet read.
	pTensor struct {
		storage *pStorage
		offset  int64
		size    []int64
		stride  []int64
	}
)

// typeName names a value's Python type for error messages (never its
// contents: values may be cyclic).
func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case int64:
		return "int"
	case float64:
		return "float"
	case bool:
		return "bool"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case pTuple:
		return "tuple"
	case *pList:
		return "list"
	case *pDict:
		return "dict"
	case *pGlobal:
		return v.module + "." + v.name
	case *pStorage:
		return "storage"
	case *pTensor:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

// unpickler runs one pickle.
type unpickler struct {
	data  []byte
	pos   int
	stack []any
	marks []int
	memo  map[uint32]any
	// persistentLoad resolves a BINPERSID id.
	persistentLoad func(pid any) (any, error)
}

var errTruncated = errors.New("truncated pickle")

func (u *unpickler) need(n uint64) error {
	if n > uint64(len(u.data)-u.pos) {
		return fmt.Errorf("%w: %d bytes needed at offset %d, %d left", errTruncated, n, u.pos, len(u.data)-u.pos)
	}
	return nil
}

func (u *unpickler) read(n uint64) ([]byte, error) {
	if err := u.need(n); err != nil {
		return nil, err
	}
	b := u.data[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return b, nil
}

func (u *unpickler) readLine() (string, error) {
	for i := u.pos; i < len(u.data); i++ {
		if u.data[i] == '\n' {
			s := string(u.data[u.pos:i])
			u.pos = i + 1
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: no end of line after offset %d", errTruncated, u.pos)
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	base := 0
	if len(u.marks) > 0 {
		base = u.marks[len(u.marks)-1]
	}
	if len(u.stack) <= base {
		return nil, errors.New("pickle stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	base := 0
	if len(u.marks) > 0 {
		base = u.marks[len(u.marks)-1]
	}
	if len(u.stack) <= base {
		return nil, errors.New("pickle stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark pops everything above the last MARK, and the mark.
// appendToTop appends items to the list on top of the stack (APPEND, APPENDS).
func (u *unpickler) appendToTop(opName string, items ...any) error {
	t, err := u.top()
	if err != nil {
		return err
	}
	l, ok := t.(*pList)
	if !ok {
		return fmt.Errorf("%s on %s, want list", opName, typeName(t))
	}
	l.items = append(l.items, items...)
	return nil
}

func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("pickle: no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) memoPut(i uint32) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	u.memo[i] = v
	return nil
}

func (u *unpickler) memoGet(i uint32) error {
	v, ok := u.memo[i]
	if !ok {
		return fmt.Errorf("pickle: memo key %d not set", i)
	}
	u.push(v)
	return nil
}

func (u *unpickler) global(module, name string) error {
	full := module + "." + name
	kind, ok := allowedGlobals[full]
	if !ok {
		return &ForbiddenGlobalError{Module: module, Name: name}
	}
	u.push(&pGlobal{module: module, name: name, kind: kind})
	return nil
}

// run executes the pickle and returns the value left by STOP.
func (u *unpickler) run() (any, error) {
	u.memo = map[uint32]any{}
	for {
		if u.pos >= len(u.data) {
			return nil, fmt.Errorf("%w: no STOP opcode", errTruncated)
		}
		op := u.data[u.pos]
		at := u.pos
		u.pos++
		if err := u.step(op); err != nil {
			if errors.Is(err, errStop) {
				return u.pop()
			}
			var fg *ForbiddenGlobalError
			if errors.As(err, &fg) || errors.Is(err, errTruncated) {
				return nil, err
			}
			return nil, fmt.Errorf("opcode 0x%02x at offset %d: %w", op, at, err)
		}
	}
}

var errStop = errors.New("stop")

func (u *unpickler) step(op byte) error {
	switch op {
	case 0x80: // PROTO
		b, err := u.read(1)
		if err != nil {
			return err
		}
		if b[0] < 2 || b[0] > 5 {
			return fmt.Errorf("unsupported pickle protocol %d", b[0])
		}
	case 0x95: // FRAME: an 8-byte length; frames need no special handling.
		b, err := u.read(8)
		if err != nil {
			return err
		}
		if err := u.need(binary.LittleEndian.Uint64(b)); err != nil {
			return err
		}
	case '.': // STOP
		return errStop
	case '(': // MARK
		u.marks = append(u.marks, len(u.stack))
	case '0': // POP
		if _, err := u.pop(); err != nil {
			return err
		}
	case '1': // POP_MARK
		_, err := u.popMark()
		return err
	case '2': // DUP
		v, err := u.top()
		if err != nil {
			return err
		}
		u.push(v)

	case '}': // EMPTY_DICT
		u.push(&pDict{})
	case ']': // EMPTY_LIST
		u.push(&pList{})
	case ')': // EMPTY_TUPLE
		u.push(pTuple{})
	case 't': // TUPLE
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(pTuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
		n := int(op-0x85) + 1
		items := make(pTuple, n)
		for i := n - 1; i >= 0; i-- {
			v, err := u.pop()
			if err != nil {
				return err
			}
			items[i] = v
		}
		u.push(items)
	case 'l': // LIST
		items, err := u.popMark()
		if err != nil {
			return err
		}
		u.push(&pList{items: items})
	case 'd': // DICT
		items, err := u.popMark()
		if err != nil {
			return err
		}
		d := &pDict{}
		if err := d.setItems(items); err != nil {
			return err
		}
		u.push(d)
	case 's': // SETITEM
		v, err := u.pop()
		if err != nil {
			return err
		}
		k, err := u.pop()
		if err != nil {
			return err
		}
		t, err := u.top()
		if err != nil {
			return err
		}
		d, ok := t.(*pDict)
		if !ok {
			return fmt.Errorf("SETITEM on %s, want dict", typeName(t))
		}
		return d.setItems([]any{k, v})
	case 'u': // SETITEMS
		items, err := u.popMark()
		if err != nil {
			return err
		}
		t, err := u.top()
		if err != nil {
			return err
		}
		d, ok := t.(*pDict)
		if !ok {
			return fmt.Errorf("SETITEMS on %s, want dict", typeName(t))
		}
		return d.setItems(items)
	case 'a': // APPEND
		v, err := u.pop()
		if err != nil {
			return err
		}
		return u.appendToTop("APPEND", v)
	case 'e': // APPENDS
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.appendToTop("APPENDS", items...)

	case 'X', 0x8c, 0x8d: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
		b, err := u.readCounted(op)
		if err != nil {
			return err
		}
		if !utf8.Valid(b) {
			return errors.New("string is not valid UTF-8")
		}
		u.push(string(b))
	case 'T', 'U': // BINSTRING, SHORT_BINSTRING (Python 2 str, read as text)
		b, err := u.readCounted(op)
		if err != nil {
			return err
		}
		u.push(string(b))
	case 'B', 'C', 0x8e: // BINBYTES, SHORT_BINBYTES, BINBYTES8
		b, err := u.readCounted(op)
		if err != nil {
			return err
		}
		u.push(b)

	case 'J': // BININT
		b, err := u.read(4)
		if err != nil {
			return err
		}
		u.push(int64(int32(binary.LittleEndian.Uint32(b))))
	case 'K': // BININT1
		b, err := u.read(1)
		if err != nil {
			return err
		}
		u.push(int64(b[0]))
	case 'M': // BININT2
		b, err := u.read(2)
		if err != nil {
			return err
		}
		u.push(int64(binary.LittleEndian.Uint16(b)))
	case 0x8a, 0x8b: // LONG1, LONG4
		var n uint64
		if op == 0x8a {
			b, err := u.read(1)
			if err != nil {
				return err
			}
			n = uint64(b[0])
		} else {
			b, err := u.read(4)
			if err != nil {
				return err
			}
			n = uint64(binary.LittleEndian.Uint32(b))
		}
		b, err := u.read(n)
		if err != nil {
			return err
		}
		v, err := decodeLong(b)
		if err != nil {
			return err
		}
		u.push(v)
	case 'G': // BINFLOAT (big-endian)
		b, err := u.read(8)
		if err != nil {
			return err
		}
		u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'N': // NONE
		u.push(nil)
	case 0x88: // NEWTRUE
		u.push(true)
	case 0x89: // NEWFALSE
		u.push(false)

	case 'q': // BINPUT
		b, err := u.read(1)
		if err != nil {
			return err
		}
		return u.memoPut(uint32(b[0]))
	case 'r': // LONG_BINPUT
		b, err := u.read(4)
		if err != nil {
			return err
		}
		return u.memoPut(binary.LittleEndian.Uint32(b))
	case 0x94: // MEMOIZE
		if len(u.memo) >= math.MaxUint32 {
			return errors.New("memo full")
		}
		return u.memoPut(uint32(len(u.memo)))
	case 'h': // BINGET
		b, err := u.read(1)
		if err != nil {
			return err
		}
		return u.memoGet(uint32(b[0]))
	case 'j': // LONG_BINGET
		b, err := u.read(4)
		if err != nil {
			return err
		}
		return u.memoGet(binary.LittleEndian.Uint32(b))

	case 'c': // GLOBAL
		module, err := u.readLine()
		if err != nil {
			return err
		}
		name, err := u.readLine()
		if err != nil {
			return err
		}
		return u.global(module, name)
	case 0x93: // STACK_GLOBAL
		name, err := u.pop()
		if err != nil {
			return err
		}
		module, err := u.pop()
		if err != nil {
			return err
		}
		ms, ok1 := module.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return fmt.Errorf("STACK_GLOBAL of %s and %s, want two str", typeName(module), typeName(name))
		}
		return u.global(ms, ns)
	case 'R': // REDUCE
		args, err := u.pop()
		if err != nil {
			return err
		}
		fn, err := u.pop()
		if err != nil {
			return err
		}
		v, err := reduce(fn, args)
		if err != nil {
			return err
		}
		u.push(v)
	case 'b': // BUILD
		state, err := u.pop()
		if err != nil {
			return err
		}
		t, err := u.top()
		if err != nil {
			return err
		}
		// An OrderedDict state dict carries its _metadata attribute (module
		// versions) as BUILD state; fwbench has no use for it.
		if _, ok := t.(*pDict); !ok {
			return fmt.Errorf("BUILD on %s with %s state is not supported", typeName(t), typeName(state))
		}
	case 'Q': // BINPERSID
		pid, err := u.pop()
		if err != nil {
			return err
		}
		if u.persistentLoad == nil {
			return errors.New("persistent id without a loader")
		}
		v, err := u.persistentLoad(pid)
		if err != nil {
			return err
		}
		u.push(v)
	default:
		return fmt.Errorf("unsupported or unknown pickle opcode 0x%02x (%s)", op, strconv.QuoteRune(rune(op)))
	}
	return nil
}

// readCounted reads the length prefix of a string/bytes opcode, then the
// bytes, after checking the length against what is left.
func (u *unpickler) readCounted(op byte) ([]byte, error) {
	var n uint64
	switch op {
	case 0x8c, 'U', 'C': // 1-byte length
		b, err := u.read(1)
		if err != nil {
			return nil, err
		}
		n = uint64(b[0])
	case 'X', 'B': // 4-byte unsigned length
		b, err := u.read(4)
		if err != nil {
			return nil, err
		}
		n = uint64(binary.LittleEndian.Uint32(b))
	case 'T': // 4-byte signed length
		b, err := u.read(4)
		if err != nil {
			return nil, err
		}
		l := int32(binary.LittleEndian.Uint32(b))
		if l < 0 {
			return nil, fmt.Errorf("negative string length %d", l)
		}
		n = uint64(l)
	default: // 0x8d, 0x8e: 8-byte length
		b, err := u.read(8)
		if err != nil {
			return nil, err
		}
		n = binary.LittleEndian.Uint64(b)
	}
	return u.read(n)
}

// decodeLong decodes a little-endian two's-complement integer of up to 8
// bytes.
func decodeLong(b []byte) (int64, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if len(b) > 8 {
		return 0, fmt.Errorf("integer of %d bytes does not fit in int64", len(b))
	}
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if shift := 64 - 8*uint(len(b)); shift > 0 {
		return int64(v<<shift) >> shift, nil // sign-extend
	}
	return int64(v), nil
}

// setItems adds key/value pairs to d. Keys must be str or int, as in every
// dict that torch.save writes for a state dict.
func (d *pDict) setItems(items []any) error {
	if len(items)%2 != 0 {
		return fmt.Errorf("dict items: odd number (%d) of keys and values", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		switch items[i].(type) {
		case string, int64:
		default:
			return fmt.Errorf("dict key of type %s is not supported", typeName(items[i]))
		}
		d.keys = append(d.keys, items[i])
		d.vals = append(d.vals, items[i+1])
	}
	return nil
}

// get returns the last value stored under a string key.
func (d *pDict) get(key string) (any, bool) {
	for i := len(d.keys) - 1; i >= 0; i-- {
		if k, ok := d.keys[i].(string); ok && k == key {
			return d.vals[i], true
		}
	}
	return nil, false
}

// reduce interprets fn(*args) for the allowed globals, calling nothing.
func reduce(fn, args any) (any, error) {
	g, ok := fn.(*pGlobal)
	if !ok {
		return nil, fmt.Errorf("REDUCE on %s, want an allowed global", typeName(fn))
	}
	a, ok := args.(pTuple)
	if !ok {
		return nil, fmt.Errorf("REDUCE %s.%s with %s arguments, want tuple", g.module, g.name, typeName(args))
	}
	switch g.kind {
	case gOrderedDict:
		if len(a) != 0 {
			return nil, fmt.Errorf("OrderedDict with %d arguments, want 0", len(a))
		}
		return &pDict{}, nil
	case gRebuildTensor, gRebuildTensorV1:
		// _rebuild_tensor_v2(storage, storage_offset, size, stride,
		// requires_grad, backward_hooks[, metadata]);
		// _rebuild_tensor(storage, storage_offset, size, stride).
		if g.kind == gRebuildTensorV1 && len(a) != 4 {
			return nil, fmt.Errorf("%s with %d arguments, want 4", g.name, len(a))
		}
		if g.kind == gRebuildTensor && len(a) != 6 && len(a) != 7 {
			return nil, fmt.Errorf("%s with %d arguments, want 6 or 7", g.name, len(a))
		}
		s, ok := a[0].(*pStorage)
		if !ok {
			return nil, fmt.Errorf("%s: storage is %s", g.name, typeName(a[0]))
		}
		off, ok := a[1].(int64)
		if !ok || off < 0 {
			return nil, fmt.Errorf("%s: storage offset is %s, want a non-negative int", g.name, typeName(a[1]))
		}
		size, err := intTuple(a[2], g.name, "size")
		if err != nil {
			return nil, err
		}
		stride, err := intTuple(a[3], g.name, "stride")
		if err != nil {
			return nil, err
		}
		if len(size) != len(stride) {
			return nil, fmt.Errorf("%s: size has %d dimensions, stride %d", g.name, len(size), len(stride))
		}
		return &pTensor{storage: s, offset: off, size: size, stride: stride}, nil
	case gRebuildParameter, gRebuildParameterWithState:
		// _rebuild_parameter(data, requires_grad, backward_hooks[, state])
		want := 3
		if g.kind == gRebuildParameterWithState {
			want = 4
		}
		if len(a) != want {
			return nil, fmt.Errorf("%s with %d arguments, want %d", g.name, len(a), want)
		}
		t, ok := a[0].(*pTensor)
		if !ok {
			return nil, fmt.Errorf("%s: data is %s, want tensor", g.name, typeName(a[0]))
		}
		return t, nil
	}
	return nil, fmt.Errorf("%s.%s cannot be called", g.module, g.name)
}

func intTuple(v any, fn, what string) ([]int64, error) {
	t, ok := v.(pTuple)
	if !ok {
		return nil, fmt.Errorf("%s: %s is %s, want tuple", fn, what, typeName(v))
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok || n < 0 {
			return nil, fmt.Errorf("%s: %s[%d] is %s, want a non-negative int", fn, what, i, typeName(x))
		}
		out[i] = n
	}
	return out, nil
}
