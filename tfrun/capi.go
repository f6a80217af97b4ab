package tfrun

// #cgo LDFLAGS: -ltensorflow
// #include <stdint.h>
// #include <stdlib.h>
// #include "tensorflow/c/c_api.h"
// #include "tensorflow/c/c_api_experimental.h"
// #include "switches.h"
import "C"

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	config "github.com/galeone/tensorflow/tensorflow/go/core/protobuf/for_core_protos_go_proto"
	"google.golang.org/protobuf/proto"
)

// The Go binding frees a tf.Tensor and a tf.Graph only from a GC finalizer,
// and lets no caller write into a tensor's buffer. The Go heap does not see
// that native memory, so a training loop that makes a new input tensor per
// step can hold hundreds of megabytes of dead tensors between collections.
// tfrun therefore reaches the *C.TF_Tensor and *C.TF_Graph inside the
// binding's structs (the binding is pinned in go.mod; layoutOK checks the
// field layout once, and without it tfrun falls back to the binding's own
// calls and finalizers) so that it can fill reused input tensors in place
// and free fetched tensors and the graph as soon as it is done with them.

// tensorLayout and graphLayout mirror the pinned binding's
//
//	type Tensor struct { c *C.TF_Tensor; shape []int64 }
//	type Graph struct { c *C.TF_Graph }
type tensorLayout struct {
	c     *C.TF_Tensor
	shape []int64
}

type graphLayout struct {
	c *C.TF_Graph
}

// sessionLayout and operationLayout mirror the pinned binding's
//
//	type Session struct { c *C.TF_Session; wg sync.WaitGroup; mu sync.Mutex }
//	type Operation struct { c *C.TF_Operation; g *Graph }
//
// runTraced reaches through them.
type sessionLayout struct {
	c  *C.TF_Session
	wg sync.WaitGroup
	mu sync.Mutex
}

type operationLayout struct {
	c *C.TF_Operation
	g *tf.Graph
}

// runLayoutOK reports whether tf.Session and tf.Operation have the layout
// above.
var runLayoutOK = func() bool {
	st := reflect.TypeFor[tf.Session]()
	ot := reflect.TypeFor[tf.Operation]()
	return st.Size() == unsafe.Sizeof(sessionLayout{}) && st.NumField() == 3 &&
		st.Field(0).Name == "c" && st.Field(0).Type.Kind() == reflect.Pointer &&
		ot.Size() == unsafe.Sizeof(operationLayout{}) && ot.NumField() == 2 &&
		ot.Field(0).Name == "c" && ot.Field(0).Type.Kind() == reflect.Pointer
}()

// layoutOK reports whether tf.Tensor and tf.Graph have the layout above.
var layoutOK = func() bool {
	tt := reflect.TypeFor[tf.Tensor]()
	gt := reflect.TypeFor[tf.Graph]()
	return tt.Size() == unsafe.Sizeof(tensorLayout{}) && tt.NumField() == 2 &&
		tt.Field(0).Name == "c" && tt.Field(0).Type.Kind() == reflect.Pointer &&
		tt.Field(1).Name == "shape" && tt.Field(1).Type == reflect.TypeFor[[]int64]() &&
		gt.Size() == unsafe.Sizeof(graphLayout{}) && gt.NumField() == 1 &&
		gt.Field(0).Name == "c" && gt.Field(0).Type.Kind() == reflect.Pointer
}()

func cTensor(t *tf.Tensor) *C.TF_Tensor {
	return (*tensorLayout)(unsafe.Pointer(t)).c
}

// tensorBytes returns the tensor's native buffer as a byte slice (nil for an
// empty tensor). The slice is valid until the tensor is freed.
func tensorBytes(t *tf.Tensor) []byte {
	c := cTensor(t)
	if c == nil {
		return nil
	}
	p := C.TF_TensorData(c)
	n := int(C.TF_TensorByteSize(c))
	if p == nil || n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(p), n)
}

// asBytes views a slice of fixed-size numbers as bytes, without copying.
func asBytes[T float32 | int32 | int64](xs []T) []byte {
	if len(xs) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&xs[0])), len(xs)*int(unsafe.Sizeof(xs[0])))
}

// freeTensor releases t's native memory now instead of at the next GC. t must
// not be used afterwards. Nil tensors are ignored.
func freeTensor(t *tf.Tensor) {
	if t == nil || !layoutOK {
		return
	}
	l := (*tensorLayout)(unsafe.Pointer(t))
	if l.c == nil {
		return
	}
	runtime.SetFinalizer(t, nil)
	C.TF_DeleteTensor(l.c)
	l.c = nil
}

// freeTensors frees every tensor in ts.
func freeTensors(ts []*tf.Tensor) {
	for _, t := range ts {
		freeTensor(t)
	}
}

// freeGraph releases g's native memory now. The C API defers the deletion
// until the last session on g is deleted.
func freeGraph(g *tf.Graph) {
	if g == nil || !layoutOK {
		return
	}
	l := (*graphLayout)(unsafe.Pointer(g))
	if l.c == nil {
		return
	}
	runtime.SetFinalizer(g, nil)
	C.TF_DeleteGraph(l.c)
	l.c = nil
}

// feedTensor is an input tensor that is allocated once per shape and
// refilled in place for every Session.Run, so a training step allocates no
// native memory for its inputs. Reuse is safe: TF_SessionRun does not keep
// its inputs, and no op of tfrun's graph stores a fed buffer (the variable
// assignments copy their input because the caller's TF_Tensor still holds a
// reference to it).
type feedTensor struct {
	dt    tf.DataType
	shape []int64
	t     *tf.Tensor
	buf   []float32 // setFloats' Go-side buffer, when the native one is out of reach
}

// set returns a tensor of the given shape holding src (raw little-endian
// element bytes).
func (f *feedTensor) set(shape []int64, src []byte) (*tf.Tensor, error) {
	if layoutOK && f.t != nil && slices.Equal(f.shape, shape) {
		if err := fillTensor(f.t, src); err != nil {
			return nil, err
		}
		return f.t, nil
	}
	f.free()
	t, err := tf.ReadTensor(f.dt, shape, bytes.NewReader(src))
	if err != nil {
		return nil, err
	}
	f.t, f.shape = t, slices.Clone(shape)
	return t, nil
}

// setFloats returns a float32 tensor of the given shape whose values fill
// writes. fill writes straight into the reused native buffer where tfrun
// can reach it (no copy; the buffer is reallocated only when the shape
// changes), otherwise into a reused Go buffer that set copies.
func (f *feedTensor) setFloats(shape []int64, fill func(dst []float32)) (*tf.Tensor, error) {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	if layoutOK && n > 0 {
		if f.t == nil || !slices.Equal(f.shape, shape) {
			f.free()
			t, _, err := newFloatTensor(shape, n)
			if err != nil {
				return nil, err
			}
			f.t, f.shape = t, slices.Clone(shape)
		}
		if view := floatView(f.t, n); view != nil {
			fill(view)
			return f.t, nil
		}
	}
	if cap(f.buf) < n {
		f.buf = make([]float32, n)
	}
	f.buf = f.buf[:n]
	fill(f.buf)
	return f.set(shape, asBytes(f.buf))
}

func (f *feedTensor) free() {
	freeTensor(f.t)
	f.t, f.shape = nil, nil
}

// errTensorSize reports a native tensor whose byte size is not what tfrun
// expects (a bug, never a user error).
var errTensorSize = errors.New("native tensor has an unexpected size")

// fillTensor copies src into the native buffer of t, which must hold exactly
// len(src) bytes.
func fillTensor(t *tf.Tensor, src []byte) error {
	if !layoutOK {
		return errors.New("tf.Tensor layout unknown")
	}
	dst := tensorBytes(t)
	if len(dst) != len(src) {
		return fmt.Errorf("%w: %d bytes, want %d", errTensorSize, len(dst), len(src))
	}
	copy(dst, src)
	return nil
}

// readFloats copies the float32 contents of t into dst, which must have
// exactly t's number of elements.
func readFloats(t *tf.Tensor, dst []float32) error {
	if t == nil || t.DataType() != tf.Float {
		return errors.New("fetched tensor is not float32")
	}
	var src []byte
	if layoutOK {
		src = tensorBytes(t)
	} else {
		var buf bytes.Buffer
		if _, err := t.WriteContentsTo(&buf); err != nil {
			return err
		}
		src = buf.Bytes()
	}
	if len(src) != 4*len(dst) {
		return fmt.Errorf("%w: %d bytes, want %d", errTensorSize, len(src), 4*len(dst))
	}
	copy(asBytes(dst), src)
	return nil
}

// floatView returns the native buffer of a float32 tensor as a []float32 of
// n elements, without copying, or nil when tfrun cannot reach the buffer
// (then the caller copies with readFloats). The view is valid until the
// tensor is freed; a fetched variable value shares its buffer with the
// variable, so the view must also be dropped before the next Session.Run.
func floatView(t *tf.Tensor, n int) []float32 {
	if !layoutOK || t == nil || t.DataType() != tf.Float {
		return nil
	}
	b := tensorBytes(t)
	if len(b) != 4*n || n == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
}

// newFloatTensor allocates a float32 tensor and returns it with a view of
// its buffer for the caller to fill (nil view when tfrun cannot reach the
// buffer; then the caller uses tf.ReadTensor).
func newFloatTensor(shape []int64, n int) (*tf.Tensor, []float32, error) {
	if !layoutOK || n == 0 {
		return nil, nil, nil
	}
	t, err := tf.ReadTensor(tf.Float, shape, zeroReader{})
	if err != nil {
		return nil, nil, err
	}
	v := floatView(t, n)
	if v == nil {
		freeTensor(t)
		return nil, nil, nil
	}
	return t, v, nil
}

// zeroReader reads zeros; ReadTensor fills a new tensor from it.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// scalarFloat reads a float32 or int32 scalar.
func scalar(t *tf.Tensor) (float64, error) {
	if t == nil {
		return 0, errors.New("missing fetched tensor")
	}
	switch v := t.Value().(type) {
	case float32:
		return float64(v), nil
	case int32:
		return float64(v), nil
	}
	return 0, fmt.Errorf("fetched tensor of type %v is not a float32 or int32 scalar", t.DataType())
}

// runTraced runs fetches and targets with feeds, as Session.Run does, under
// RunOptions that ask for a full trace and the partition graphs (the graphs
// the executors really ran, after grappler, XLA clustering and placement),
// and returns the fetches, which must be float32 scalars, and the
// RunMetadata. The caller must not close s meanwhile (a Trainer holds its
// lock).
func runTraced(s *tf.Session, feeds map[tf.Output]*tf.Tensor, fetches []tf.Output, targets []*tf.Operation) ([]float32, *config.RunMetadata, error) {
	for _, f := range fetches {
		if f.DataType() != tf.Float {
			return nil, nil, errors.New("traced run: a fetch is not float32")
		}
	}
	vals, md, err := runWithOptions(s, &config.RunOptions{TraceLevel: config.RunOptions_FULL_TRACE, OutputPartitionGraphs: true}, feeds, fetches, targets)
	if err != nil {
		return nil, nil, fmt.Errorf("traced run: %w", err)
	}
	got := make([]float32, len(vals))
	for i, v := range vals {
		got[i] = float32(v)
	}
	return got, md, nil
}

// runWithOptions runs fetches and targets with feeds, as Session.Run does,
// under opts, and returns the fetches, which must be scalars of type
// float32, int32 or bool (true is 1), and the RunMetadata. The binding's
// Session.Run passes no RunOptions, so runWithOptions calls TF_SessionRun
// itself; the caller must not close s meanwhile (a Trainer holds its lock).
func runWithOptions(s *tf.Session, opts *config.RunOptions, feeds map[tf.Output]*tf.Tensor, fetches []tf.Output, targets []*tf.Operation) ([]float64, *config.RunMetadata, error) {
	if !runLayoutOK || !layoutOK {
		return nil, nil, errors.New("the binding's Session or Operation layout is unknown")
	}
	sess := (*sessionLayout)(unsafe.Pointer(s)).c
	if sess == nil {
		return nil, nil, errors.New("session is closed")
	}
	ob, err := proto.Marshal(opts)
	if err != nil {
		return nil, nil, err
	}
	copts := C.CBytes(ob)
	defer C.free(copts)
	runOpts := C.TF_NewBufferFromString(copts, C.size_t(len(ob)))
	defer C.TF_DeleteBuffer(runOpts)
	meta := C.TF_NewBuffer()
	defer C.TF_DeleteBuffer(meta)
	// Arrays of C pointers in C memory (cgo forbids Go memory that holds
	// pointers, even C ones, from being kept by C; these are read only
	// during the call, but C memory keeps the rule simple).
	n := max(len(feeds), 1)
	ins := (*[1 << 20]C.TF_Output)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof(C.TF_Output{}))))[:n:n]
	defer C.free(unsafe.Pointer(&ins[0]))
	vals := (*[1 << 20]*C.TF_Tensor)(C.malloc(C.size_t(n) * C.size_t(unsafe.Sizeof((*C.TF_Tensor)(nil)))))[:n:n]
	defer C.free(unsafe.Pointer(&vals[0]))
	i := 0
	for o, t := range feeds {
		ins[i] = C.TF_Output{oper: (*operationLayout)(unsafe.Pointer(o.Op)).c, index: C.int(o.Index)}
		vals[i] = cTensor(t)
		i++
	}
	k := max(len(fetches), 1)
	outs := (*[1 << 20]C.TF_Output)(C.malloc(C.size_t(k) * C.size_t(unsafe.Sizeof(C.TF_Output{}))))[:k:k]
	defer C.free(unsafe.Pointer(&outs[0]))
	outVals := (*[1 << 20]*C.TF_Tensor)(C.calloc(C.size_t(k), C.size_t(unsafe.Sizeof((*C.TF_Tensor)(nil)))))[:k:k]
	defer C.free(unsafe.Pointer(&outVals[0]))
	for j, o := range fetches {
		outs[j] = C.TF_Output{oper: (*operationLayout)(unsafe.Pointer(o.Op)).c, index: C.int(o.Index)}
	}
	m := max(len(targets), 1)
	tgts := (*[1 << 20]*C.TF_Operation)(C.malloc(C.size_t(m) * C.size_t(unsafe.Sizeof((*C.TF_Operation)(nil)))))[:m:m]
	defer C.free(unsafe.Pointer(&tgts[0]))
	for j, o := range targets {
		tgts[j] = (*operationLayout)(unsafe.Pointer(o)).c
	}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	C.TF_SessionRun(sess, runOpts, &ins[0], &vals[0], C.int(len(feeds)), &outs[0], &outVals[0], C.int(len(fetches)),
		&tgts[0], C.int(len(targets)), meta, status)
	runtime.KeepAlive(feeds)
	runtime.KeepAlive(fetches)
	runtime.KeepAlive(targets)
	runtime.KeepAlive(s)
	got := make([]float64, len(fetches))
	var errs []error
	for j := range fetches {
		o := outVals[j]
		if o == nil {
			continue
		}
		if C.TF_TensorElementCount(o) != 1 {
			errs = append(errs, fmt.Errorf("fetch %d is not a scalar", j))
		} else {
			switch p := C.TF_TensorData(o); C.TF_TensorType(o) {
			case C.TF_FLOAT:
				got[j] = float64(*(*float32)(p))
			case C.TF_INT32:
				got[j] = float64(*(*int32)(p))
			case C.TF_BOOL:
				if *(*C.uchar)(p) != 0 {
					got[j] = 1
				}
			default:
				errs = append(errs, fmt.Errorf("fetch %d is not a float32, int32 or bool scalar", j))
			}
		}
		C.TF_DeleteTensor(o)
	}
	if code := C.TF_GetCode(status); code != C.TF_OK {
		return nil, nil, errors.New(C.GoString(C.TF_Message(status)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	md := &config.RunMetadata{}
	if err := proto.Unmarshal(C.GoBytes(meta.data, C.int(meta.length)), md); err != nil {
		return nil, nil, fmt.Errorf("metadata: %w", err)
	}
	return got, md, nil
}

// server is an in-process TensorFlow gRPC server (TF_NewServer): a master
// and a worker service on one task of a cluster.
type server struct {
	c      *C.TF_Server
	target string // the session target, "grpc://host:port"
}

// newServer creates and starts a server from a serialised ServerDef.
func newServer(def []byte) (*server, error) {
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	cdef := C.CBytes(def)
	defer C.free(cdef)
	c := C.TF_NewServer(cdef, C.size_t(len(def)), status)
	if C.TF_GetCode(status) != C.TF_OK {
		return nil, fmt.Errorf("new server: %s", C.GoString(C.TF_Message(status)))
	}
	C.TF_ServerStart(c, status)
	if C.TF_GetCode(status) != C.TF_OK {
		msg := C.GoString(C.TF_Message(status))
		// Not started yet, so GrpcServer's destructor (which stops the
		// server and CHECK-fails if it cannot) is safe here.
		C.TF_DeleteServer(c)
		return nil, fmt.Errorf("start server: %s", msg)
	}
	return &server{c: c, target: C.GoString(C.TF_ServerTarget(c))}, nil
}

// stop asks the server to stop. TensorFlow's gRPC server cannot stop once
// started (GrpcServer::Stop returns Unimplemented, "Clean shutdown is not
// currently implemented"), and its destructor CHECK-fails on that error, so
// a started server is never deleted: stop returns TensorFlow's answer and
// the server keeps its port until the process exits.
func (s *server) stop() error {
	if s == nil || s.c == nil {
		return nil
	}
	status := C.TF_NewStatus()
	defer C.TF_DeleteStatus(status)
	C.TF_ServerStop(s.c, status)
	if C.TF_GetCode(status) != C.TF_OK {
		return fmt.Errorf("stop server: %s", C.GoString(C.TF_Message(status)))
	}
	return nil
}

// The process-wide switches (see switches.cc).

func setOpDeterminism(on bool) { C.tfrun_enable_op_determinism(cBool(on)) }
func opDeterminism() bool      { return C.tfrun_op_determinism_required() != 0 }
func setTF32(on bool)          { C.tfrun_enable_tf32(cBool(on)) }
func tf32Enabled() bool        { return C.tfrun_tf32_enabled() != 0 }
func cudnnAutotune() bool      { return C.tfrun_cudnn_use_autotune() != 0 }

// enableCPUGlobalJit turns on XLA's auto-clustering of CPU ops
// (MarkForCompilationPassFlags.tf_xla_cpu_global_jit, what
// TF_XLA_FLAGS=--tf_xla_cpu_global_jit sets: TF_SetTfXlaCpuGlobalJit parses
// TF_XLA_FLAGS first, then sets the flag), without which a session's
// global_jit_level compiles only GPU clusters. It is process-wide and
// harmless to sessions that do not ask for XLA (their jit level is OFF). It
// reports whether the flag reads back as set.
func enableCPUGlobalJit() bool {
	C.TF_SetTfXlaCpuGlobalJit(1)
	return C.TF_SetTfXlaCpuGlobalJit(1) != 0 // returns the value it replaces
}

func cBool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
