package torchrun

// #cgo CXXFLAGS: -std=c++17 -I${SRCDIR}/cinclude
// #cgo LDFLAGS: -lc10 -ltorch_cpu -ldl
// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
)

// This file is the only one that talks to C. Every wrapper turns the shim's
// message into a Go error ("torchrun: <op>: <libtorch message>") and frees it.

// handle is the native model + optimizer.
type handle = C.tr_model

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

// spec mirrors tr_spec: the net and the optimizer.
type spec struct {
	net                       *model.Net
	features                  bool
	adam                      bool
	lr, momentum, weightDecay float64
	nesterov                  bool
	beta1, beta2, eps         float64
	device                    string
	precision                 string // a recipe precision
	channelsLast              bool
	cudnnBenchmark            bool
	deterministic             bool
}

// precisionCodes maps recipe's precisions to the shim's (TR_*).
var precisionCodes = map[string]C.int32_t{
	recipe.FP32: C.TR_FP32,
	recipe.TF32: C.TR_TF32,
	recipe.BF16: C.TR_BF16,
	recipe.FP16: C.TR_FP16,
}

func b2i(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// opCodes maps model's ops to the shim's (TR_*): spelled out, so that a new
// op in package model is refused here until the shim can run it.
var opCodes = map[model.Op]C.int32_t{
	model.Conv:            C.TR_CONV,
	model.BatchNorm:       C.TR_BATCH_NORM,
	model.ReLU:            C.TR_RELU,
	model.ReLU6:           C.TR_RELU6,
	model.MaxPool:         C.TR_MAX_POOL,
	model.AdaptiveAvgPool: C.TR_ADAPTIVE_AVG_POOL,
	model.Add:             C.TR_ADD,
	model.Flatten:         C.TR_FLATTEN,
	model.Linear:          C.TR_LINEAR,
	model.Dropout:         C.TR_DROPOUT,
}

// layerTable converts net's layers to the shim's records. The names are C
// strings that free releases.
func layerTable(net *model.Net) (ls []C.tr_layer, free func(), err error) {
	var names []*C.char
	free = func() {
		for _, p := range names {
			C.free(unsafe.Pointer(p))
		}
	}
	ls = make([]C.tr_layer, len(net.Layers))
	for i, l := range net.Layers {
		op, ok := opCodes[l.Op]
		if !ok {
			free()
			return nil, nil, fmt.Errorf("torchrun: new: layer %d (%s): op %s is not supported", i, l.Name, l.Op)
		}
		if n := len(l.Inputs); n < 1 || n > 2 {
			free()
			return nil, nil, fmt.Errorf("torchrun: new: layer %d (%s): %d inputs", i, l.Name, n)
		}
		in1, width := l.Inputs[0], 0
		if len(l.Inputs) == 2 {
			in1 = l.Inputs[1]
		}
		if l.Op == model.Dropout {
			width = l.In.Elements()
		}
		vals := []int{l.Inputs[0], in1, l.In.C, width, l.Out, l.Kernel, l.Stride, l.Pad, max(l.Groups, 1), l.Size}
		if slices.ContainsFunc(vals, func(v int) bool { return v < math.MinInt32 || v > math.MaxInt32 }) {
			free()
			return nil, nil, fmt.Errorf("torchrun: new: layer %d (%s): a size beyond 32 bits: %v", i, l.Name, vals)
		}
		name := C.CString(l.Name)
		names = append(names, name)
		ls[i] = C.tr_layer{
			op: op, ninputs: C.int32_t(len(l.Inputs)), in0: C.int32_t(vals[0]), in1: C.int32_t(vals[1]),
			in_c: C.int32_t(vals[2]), width: C.int32_t(vals[3]), out: C.int32_t(vals[4]),
			kernel: C.int32_t(vals[5]), stride: C.int32_t(vals[6]), pad: C.int32_t(vals[7]),
			groups: C.int32_t(vals[8]), size: C.int32_t(vals[9]),
			bias: b2i(l.Bias), head: b2i(l.Head), name: name,
		}
	}
	return ls, free, nil
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

// nativeString returns the malloc'ed string a shim call sets through its out
// parameter (freed here), or the call's error.
func nativeString(op string, call func(out **C.char) *C.char) (string, error) {
	var out *C.char
	if err := nativeErr(op, call(&out)); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(out))
	return C.GoString(out), nil
}

func nativeVersion() (string, error) {
	return nativeString("version", func(out **C.char) *C.char { return C.tr_version(out) })
}

// nativeSettings returns the libtorch settings that affect speed (tr_settings):
// the process-wide switches as libtorch reads them back, and m's precision and
// memory format.
func nativeSettings(m *handle) (map[string]string, error) {
	text, err := nativeString("settings", func(out **C.char) *C.char { return C.tr_settings(m, out) })
	if err != nil {
		return nil, err
	}
	s := map[string]string{}
	for line := range strings.Lines(text) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			s[k] = v
		}
	}
	return s, nil
}

func nativeCUDACount() (int, error) {
	var n C.int64_t
	err := nativeErr("cuda", C.tr_cuda_device_count(&n))
	return int(n), err
}

func nativeNew(s *spec) (*handle, error) {
	ls, free, err := layerTable(s.net)
	if err != nil {
		return nil, err
	}
	defer free()
	if len(ls) == 0 {
		return nil, errors.New("torchrun: new: the net has no layers")
	}
	prec, ok := precisionCodes[s.precision]
	if !ok {
		return nil, fmt.Errorf("torchrun: new: precision %q is not supported", s.precision)
	}
	dev := C.CString(s.device)
	defer C.free(unsafe.Pointer(dev))
	// cs is Go memory that points to more Go memory (the table): pin it.
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&ls[0])
	cs := C.tr_spec{
		layers:       &ls[0],
		nlayers:      C.int32_t(len(ls)),
		features:     b2i(s.features),
		optimizer:    b2i(s.adam),
		lr:           C.double(s.lr),
		momentum:     C.double(s.momentum),
		weight_decay: C.double(s.weightDecay),
		nesterov:     b2i(s.nesterov),
		beta1:        C.double(s.beta1),
		beta2:        C.double(s.beta2),
		eps:          C.double(s.eps),
		bn_momentum:  C.double(model.BNMomentum),
		bn_eps:       C.double(model.BNEps),
		device:       dev,

		precision:       prec,
		channels_last:   b2i(s.channelsLast),
		cudnn_benchmark: b2i(s.cudnnBenchmark),
		deterministic:   b2i(s.deterministic),
		loss_scale:      C.double(recipe.LossScaleInit),
		scale_growth:    C.double(recipe.LossScaleGrowth),
		scale_backoff:   C.double(recipe.LossScaleBackoff),
		scale_interval:  C.int32_t(recipe.LossScaleGrowthInterval),
	}
	var m *handle
	if err := nativeErr("new", C.tr_new(&cs, &m)); err != nil {
		return nil, err
	}
	return m, nil
}

func nativePrepare(m *handle) error { return nativeErr("new", C.tr_prepare(m)) }

// nativeFreeze excludes one parameter from training (before nativePrepare).
func nativeFreeze(m *handle, name string) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return nativeErr("new", C.tr_freeze(m, cn))
}

func nativeFree(m *handle) { C.tr_free(m) }

func nativeSetTensor(m *handle, op, name string, data []float32) error {
	if len(data) == 0 {
		return fmt.Errorf("torchrun: %s: tensor %s is empty", op, name)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return nativeErr(op, C.tr_set_tensor(m, cn, (*C.float)(&data[0]), C.int64_t(len(data))))
}

func nativeGetTensor(m *handle, op, name string, out []float32) error {
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

func nativeGetState(m *handle, name string, kind int, out []float32) (step int64, present bool, err error) {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var st C.int64_t
	var p C.int32_t
	err = nativeErr("checkpoint", C.tr_get_state(m, cn, C.int32_t(kind), (*C.float)(&out[0]), C.int64_t(len(out)), &st, &p))
	return int64(st), p != 0, err
}

// nativeSetState sets one parameter's optimizer state: a is the SGD momentum
// buffer or Adam's exp_avg, b is Adam's exp_avg_sq (nil for SGD).
func nativeSetState(m *handle, name string, a, b []float32, step int64) error {
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

func nativeClearState(m *handle) error { return nativeErr("optimizer", C.tr_clear_state(m)) }

// nativeTrainStep runs one training step on a batch that checkBatch accepted.
// masks holds the masks of the net's dropout layers one after the other, in
// layer order (n·width values each), or is nil for no dropout.
// comm is the seconds the step waited for its gradient all-reduces (0 without
// a process group).
func nativeTrainStep(m *handle, x []float32, labels []int32, n, h, w, c int, masks []float32) (loss float64, correct int, comm float64, err error) {
	var cl, cc C.double
	var cn C.int64_t
	pm := (*C.float)(nil)
	if len(masks) > 0 {
		pm = (*C.float)(&masks[0])
	}
	err = nativeErr("step", C.tr_train_step(m, (*C.float)(&x[0]), (*C.int32_t)(&labels[0]),
		C.int64_t(n), C.int64_t(h), C.int64_t(w), C.int64_t(c), pm, C.int64_t(len(masks)), &cl, &cn, &cc))
	return float64(cl), int(cn), float64(cc), err
}

// group is a native process group (tr_group).
type group = C.tr_group

// nativeGroupNew joins a process group: the TCPStore at host:port and a Gloo
// process group whose device binds ifaces (comma-separated interface names)
// when not empty, else address. op names the call in errors.
func nativeGroupNew(op, host string, port, rank, world int, timeout time.Duration, nccl bool, address, ifaces string) (*group, error) {
	ch, ca, ci := C.CString(host), C.CString(address), C.CString(ifaces)
	defer C.free(unsafe.Pointer(ch))
	defer C.free(unsafe.Pointer(ca))
	defer C.free(unsafe.Pointer(ci))
	var g *group
	err := nativeErr(op, C.tr_group_new(ch, C.int32_t(port), C.int32_t(rank), C.int32_t(world),
		C.int64_t(timeout.Milliseconds()), b2i(nccl), ca, ci, &g))
	return g, err
}

// nativeNCCLProbe loads libtorch_cuda.so and the NCCL plugin (see tr_nccl_probe).
func nativeNCCLProbe() (string, error) {
	return nativeString("nccl", func(out **C.char) *C.char { return C.tr_nccl_probe(out) })
}

// nativeGroupFree closes g (see tr_group_free); g is freed even on error.
func nativeGroupFree(g *group, waitPeers bool, wait time.Duration) error {
	return nativeErr("close", C.tr_group_free(g, b2i(waitPeers), C.int64_t(wait.Milliseconds())))
}

func nativeAttachGroup(m *handle, op string, g *group) error {
	return nativeErr(op, C.tr_attach_group(m, g))
}

// nativeEvaluate runs the model in eval mode. labels nil skips loss and accuracy;
// logits nil skips copying the logits out.
func nativeEvaluate(m *handle, op string, x []float32, labels []int32, n, h, w, c int, logits []float32) (float64, int, error) {
	var loss C.double
	var correct C.int64_t
	pl := (*C.int32_t)(nil)
	if labels != nil {
		pl = (*C.int32_t)(&labels[0])
	}
	po := (*C.float)(nil)
	if len(logits) > 0 {
		po = (*C.float)(&logits[0])
	}
	err := nativeErr(op, C.tr_evaluate(m, (*C.float)(&x[0]), pl, C.int64_t(n), C.int64_t(h), C.int64_t(w), C.int64_t(c),
		&loss, &correct, po, C.int64_t(len(logits))))
	return float64(loss), int(correct), err
}

// nativeLossScale returns fp16's loss scale and growth tracker (0, 0 for other precisions).
func nativeLossScale(m *handle) (scale float64, tracker int64, err error) {
	var s C.double
	var n C.int64_t
	err = nativeErr("loss scale", C.tr_get_loss_scale(m, &s, &n))
	return float64(s), int64(n), err
}

// nativeSetLossScale sets fp16's loss scale and growth tracker.
func nativeSetLossScale(m *handle, op string, scale float64, tracker int64) error {
	return nativeErr(op, C.tr_set_loss_scale(m, C.double(scale), C.int64_t(tracker)))
}

// layerRecord is one layer output that tr_record saw.
type layerRecord struct {
	layer        int
	dtype        string // c10's name: "Float", "BFloat16", "Half"
	channelsLast bool   // channels_last-contiguous (4-D outputs only)
	contiguous   bool
}

// tensorRecord is one named tensor after a recorded training step.
type tensorRecord struct {
	name, dtype, gradDtype string // gradDtype "-" when it has no gradient
}

// nativeRecord turns the shim's debug record of later calls on or off.
func nativeRecord(m *handle, on bool) error { return nativeErr("record", C.tr_record(m, b2i(on))) }

// nativeRecorded returns what the last recorded call saw.
func nativeRecorded(m *handle) (layers []layerRecord, tensors []tensorRecord, err error) {
	text, err := nativeString("record", func(out **C.char) *C.char { return C.tr_recorded(m, out) })
	if err != nil {
		return nil, nil, err
	}
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		switch {
		case len(f) == 5 && f[0] == "layer":
			i, err := strconv.Atoi(f[1])
			if err != nil {
				return nil, nil, fmt.Errorf("torchrun: record: %q: %w", line, err)
			}
			layers = append(layers, layerRecord{layer: i, dtype: f[2], channelsLast: f[3] == "1", contiguous: f[4] == "1"})
		case len(f) == 4 && f[0] == "tensor":
			tensors = append(tensors, tensorRecord{name: f[1], dtype: f[2], gradDtype: f[3]})
		default:
			return nil, nil, fmt.Errorf("torchrun: record: unexpected line %q", line)
		}
	}
	return layers, tensors, nil
}

func nativeSync(m *handle) error { return nativeErr("sync", C.tr_sync(m)) }

func nativePeakGPUBytes(m *handle) (int64, error) {
	var n C.int64_t
	err := nativeErr("peak gpu memory", C.tr_peak_gpu_bytes(m, &n))
	return int64(n), err
}
