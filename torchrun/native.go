package torchrun

// #cgo CXXFLAGS: -std=c++17
// #cgo LDFLAGS: -lc10 -ltorch_cpu -ldl
// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/fwbench/fwbench/vgg"
)

// This file is the only one that talks to C. Every wrapper turns the shim's
// message into a Go error ("torchrun: <op>: <libtorch message>") and frees it.

// model is the native model + optimizer; nil once freed.
type model = C.tr_model

// nativeErr converts and frees a message returned by the shim.
func nativeErr(op string, e *C.char) error {
	if e == nil {
		return nil
	}
	msg := C.GoString(e)
	C.tr_free_error(e)
	if rest, ok := strings.CutPrefix(msg, C.TR_OOM_PREFIX); ok {
		return fmt.Errorf("torchrun: %s: %w: %s (lower the batch size or the image size)", op, ErrOutOfMemory, rest)
	}
	return errors.New("torchrun: " + op + ": " + msg)
}

// spec mirrors tr_spec; Go owns the memory it points to for the call's duration.
type spec struct {
	layers                    []int32
	batchNorm                 bool
	imageSize                 int
	head                      []vgg.HeadLayer // the head's Linear layers, in order
	headPool                  bool            // AdaptiveAvgPool2d((7, 7)) before the head
	features                  bool
	adam                      bool
	lr, momentum, weightDecay float64
	nesterov                  bool
	beta1, beta2, eps         float64
	device                    string
}

func b2i(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

func nativeSetThreads(intra, interop int) (interopSet bool, err error) {
	var set C.int32_t
	err = nativeErr("threads", C.tr_set_threads(C.int32_t(intra), C.int32_t(interop), &set))
	return set != 0, err
}

// nativeThreads returns libtorch's intra- and inter-op thread counts as a
// native call sees them.
func nativeThreads() (intra, interop int, err error) {
	var a, b C.int32_t
	err = nativeErr("threads", C.tr_get_threads(&a, &b))
	return int(a), int(b), err
}

func nativeVersion() (string, error) {
	var out *C.char
	if err := nativeErr("version", C.tr_version(&out)); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(out))
	return C.GoString(out), nil
}

func nativeCUDACount() (int, error) {
	var n C.int64_t
	err := nativeErr("cuda", C.tr_cuda_device_count(&n))
	return int(n), err
}

func nativeNew(s *spec) (*model, error) {
	if len(s.layers) == 0 || len(s.head) == 0 {
		return nil, errors.New("torchrun: new: empty layer table")
	}
	dev := C.CString(s.device)
	defer C.free(unsafe.Pointer(dev))
	head := make([]C.tr_head_layer, len(s.head))
	for i, l := range s.head {
		head[i] = C.tr_head_layer{index: C.int32_t(l.Index), in: C.int32_t(l.In), out: C.int32_t(l.Out), hidden: b2i(l.Hidden)}
	}
	// cs is Go memory that points to more Go memory (the tables): pin it.
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&s.layers[0])
	pin.Pin(&head[0])
	cs := C.tr_spec{
		layers:       (*C.int32_t)(unsafe.Pointer(&s.layers[0])),
		nlayers:      C.int32_t(len(s.layers)),
		batchnorm:    b2i(s.batchNorm),
		image_size:   C.int32_t(s.imageSize),
		head:         &head[0],
		nhead:        C.int32_t(len(head)),
		head_pool:    b2i(s.headPool),
		features:     b2i(s.features),
		optimizer:    b2i(s.adam),
		lr:           C.double(s.lr),
		momentum:     C.double(s.momentum),
		weight_decay: C.double(s.weightDecay),
		nesterov:     b2i(s.nesterov),
		beta1:        C.double(s.beta1),
		beta2:        C.double(s.beta2),
		eps:          C.double(s.eps),
		device:       dev,
	}
	var m *model
	if err := nativeErr("new", C.tr_new(&cs, &m)); err != nil {
		return nil, err
	}
	return m, nil
}

func nativePrepare(m *model) error { return nativeErr("new", C.tr_prepare(m)) }

// nativeFreeze excludes one parameter from training (before nativePrepare).
func nativeFreeze(m *model, name string) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return nativeErr("new", C.tr_freeze(m, cn))
}

func nativeFree(m *model) { C.tr_free(m) }

func nativeSetTensor(m *model, op, name string, data []float32) error {
	if len(data) == 0 {
		return fmt.Errorf("torchrun: %s: tensor %s is empty", op, name)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return nativeErr(op, C.tr_set_tensor(m, cn, (*C.float)(&data[0]), C.int64_t(len(data))))
}

func nativeGetTensor(m *model, op, name string, out []float32) error {
	if len(out) == 0 {
		return fmt.Errorf("torchrun: %s: tensor %s is empty", op, name)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return nativeErr(op, C.tr_get_tensor(m, cn, (*C.float)(&out[0]), C.int64_t(len(out))))
}

// Optimizer state kinds (tr_get_state).
const (
	stateMomentum = 0
	stateExpAvg   = 1
	stateExpAvgSq = 2
)

func nativeGetState(m *model, name string, kind int, out []float32) (step int64, present bool, err error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var st C.int64_t
	var p C.int32_t
	err = nativeErr("checkpoint", C.tr_get_state(m, cn, C.int32_t(kind), (*C.float)(&out[0]), C.int64_t(len(out)), &st, &p))
	return int64(st), p != 0, err
}

// nativeSetState sets one parameter's optimizer state: a is the SGD momentum
// buffer or Adam's exp_avg, b is Adam's exp_avg_sq (nil for SGD).
func nativeSetState(m *model, name string, a, b []float32, step int64) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	pb := (*C.float)(nil)
	if b != nil {
		if len(b) != len(a) {
			return fmt.Errorf("torchrun: checkpoint: state of %s: %d and %d values", name, len(a), len(b))
		}
		pb = (*C.float)(&b[0])
	}
	return nativeErr("checkpoint", C.tr_set_state(m, cn, (*C.float)(&a[0]), pb, C.int64_t(len(a)), C.int64_t(step)))
}

func nativeClearState(m *model) error { return nativeErr("optimizer", C.tr_clear_state(m)) }

// nativeTrainStep runs one training step on a batch that checkBatch accepted.
// masks holds the dropout masks of the hidden head layers one after the other
// (n·Out values each), or is nil for no dropout.
func nativeTrainStep(m *model, x []float32, labels []int32, n, h, w, c int, masks []float32) (float64, int, error) {
	var loss C.double
	var correct C.int64_t
	pm := (*C.float)(nil)
	if len(masks) > 0 {
		pm = (*C.float)(&masks[0])
	}
	err := nativeErr("step", C.tr_train_step(m, (*C.float)(&x[0]), (*C.int32_t)(&labels[0]),
		C.int64_t(n), C.int64_t(h), C.int64_t(w), C.int64_t(c), pm, C.int64_t(len(masks)), &loss, &correct))
	return float64(loss), int(correct), err
}

// nativeEvaluate runs the model in eval mode. labels nil skips loss and accuracy;
// logits nil skips copying the logits out.
func nativeEvaluate(m *model, op string, x []float32, labels []int32, n, h, w, c int, logits []float32) (float64, int, error) {
	var loss C.double
	var correct C.int64_t
	pl := (*C.int32_t)(nil)
	if labels != nil {
		pl = (*C.int32_t)(&labels[0])
	}
	po := (*C.float)(nil)
	if logits != nil {
		po = (*C.float)(&logits[0])
	}
	err := nativeErr(op, C.tr_evaluate(m, (*C.float)(&x[0]), pl, C.int64_t(n), C.int64_t(h), C.int64_t(w), C.int64_t(c),
		&loss, &correct, po))
	return float64(loss), int(correct), err
}

func nativeSync(m *model) error { return nativeErr("sync", C.tr_sync(m)) }

func nativePeakGPUBytes(m *model) (int64, error) {
	var n C.int64_t
	err := nativeErr("peak gpu memory", C.tr_peak_gpu_bytes(m, &n))
	return int64(n), err
}
