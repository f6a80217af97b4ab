package tfrun

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	graphpb "github.com/galeone/tensorflow/tensorflow/go/core/framework/graph_go_proto"
	"github.com/galeone/tensorflow/tensorflow/go/op"
	"google.golang.org/protobuf/proto"

	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/recipe"
)

// The optimizer slot names, torch's optimizer state keys. A slot tensor in a
// checkpoint is named "<parameter>.<slot>" and has the parameter's
// canonical layout.
const (
	slotMomentum = "momentum_buffer" // SGD with momentum: TF's accum, torch's buf
	slotExpAvg   = "exp_avg"         // Adam m
	slotExpAvgSq = "exp_avg_sq"      // Adam v
)

// variable is one resource variable: a model parameter or an optimizer slot.
type variable struct {
	name      string      // canonical name: the parameter's, or "<parameter>.<slot>"
	param     model.Param // the parameter (a slot has its parameter's shape and layout)
	depthwise bool        // the parameter is a depthwise convolution's (TF layout HWOI)
	shape     []int64     // TensorFlow shape
	handle    tf.Output   // VarHandleOp
	read      tf.Output   // ReadVariableOp: the value the forward pass and the weight decay use
	value     tf.Output   // placeholder fed by assign
	assign    *tf.Operation
}

// netGraph is the built graph and the handles tfrun runs.
type netGraph struct {
	graph *tf.Graph

	// Inputs. Evaluation feeds only x and labels (and Logits only x).
	x      tf.Output // float32 [N, S, S, 3] NHWC
	labels tf.Output // int32 [N]
	// masks are the dropout masks of a training step, float32 [N, width],
	// one per Dropout layer in Net.Dropouts order, fed from
	// model.DropoutMask; none when the recipe's Dropout is 0.
	masks []tf.Output

	// Adam's per-step feeds (see buildOptimizer).
	adamLR, adamEps tf.Output

	params []*variable // in Net.Params order
	slots  []*variable // optimizer state, in params order
	// scaler is FP16's dynamic loss scaling; nil for every other precision.
	scaler *lossScaler

	logits       tf.Output // evaluation mode: dropout off, BatchNorm running statistics
	loss         tf.Output // evaluation-mode mean cross-entropy
	correct      tf.Output // evaluation-mode count of top-1 hits
	trainCorrect tf.Output // training-mode (dropout on) count of top-1 hits
	trainLoss    tf.Output // training-mode mean cross-entropy, before the update

	// gradWeight is a data-parallel rank's gradient weight, fed every
	// step (see allReduce); collectives names the CollectiveReduceV2 nodes.
	// Both unset outside data-parallel runs.
	gradWeight  tf.Output
	collectives []string

	train     []*tf.Operation // the optimizer updates and BatchNorm statistics: targets of a training step
	bnUpdates []*tf.Operation // the BatchNorm running-statistics assignments (part of train)
	initSlots []*tf.Operation // zero the optimizer slots
	destroy   []*tf.Operation // delete every variable's resource
}

// buildGraph constructs the whole graph for net trained by cfg: variables,
// the forward pass, the loss, its gradients and the optimizer. Variables get
// shared names prefixed with prefix: a VarHandleOp with an empty shared_name
// is named after its node, and handles with equal shared names alias one
// resource (tensorflow#15058), so each Trainer uses its own prefix. The
// graph carries no device; the caller places it by importing it with a
// default device (see placeGraph).
func buildGraph(cfg recipe.Config, net *model.Net, prefix string) (m *netGraph, err error) {
	return buildParallelGraph(cfg, net, prefix, nil)
}

// buildParallelGraph is buildGraph with the gradients averaged over the
// ranks of a data-parallel run before the loss scaler and the optimizer
// see them (par nil: a single-process graph).
func buildParallelGraph(cfg recipe.Config, net *model.Net, prefix string, par *allReduce) (m *netGraph, err error) {
	root := op.NewScope()
	m = &netGraph{}
	in := root.SubScope("input")
	m.x = op.Placeholder(in.SubScope("x"), tf.Float, op.PlaceholderShape(tf.MakeShape(-1, -1, -1, 3)))
	m.labels = op.Placeholder(in.SubScope("labels"), tf.Int32, op.PlaceholderShape(tf.MakeShape(-1)))
	masks := map[int]tf.Output{}
	for _, i := range dropoutLayers(cfg, net) {
		l := net.Layers[i]
		ms := in.SubScope(fmt.Sprintf("mask%d", l.Mask))
		mask := op.Placeholder(ms, tf.Float, op.PlaceholderShape(tf.MakeShape(-1, int64(l.In.Elements()))))
		m.masks = append(m.masks, mask)
		masks[i] = mask
	}

	vars := root.SubScope("vars")
	byName := map[string]*variable{}
	for _, p := range net.Params {
		v := &variable{name: p.Name, param: p, depthwise: net.Layers[p.Layer].Depthwise()}
		v.shape = tfShape(p, v.depthwise)
		s := vars.SubScope(p.Name)
		v.handle = op.VarHandleOp(s, tf.Float, tf.MakeShape(v.shape...), op.VarHandleOpSharedName(prefix+p.Name))
		v.read = op.ReadVariableOp(s, v.handle, tf.Float)
		v.value = op.Placeholder(s.SubScope("value"), tf.Float, op.PlaceholderShape(tf.MakeShape(v.shape...)))
		v.assign = op.AssignVariableOp(s, v.handle, v.value)
		m.params = append(m.params, v)
		byName[p.Name] = v
	}

	// The training forward pass, then the evaluation pass, which builds
	// again only the layers whose output differs in evaluation mode (a
	// BatchNorm that normalises with batch statistics in training, a
	// Dropout with a mask, and every layer downstream of one) and shares
	// the training pass's outputs of all others. With dropout 0 and no
	// trained BatchNorm one pass serves both.
	f := &forward{net: net, mode: cfg.Mode, vars: byName, low: lowType(cfg.Precision)}
	f.differs = f.trainOnly(masks)
	f.image = op.EnsureShape(root.SubScope("images"), m.x, tf.MakeShape(-1, int64(net.ImageSize), int64(net.ImageSize), 3))
	trainOut, bnUpdates := f.pass(root.SubScope("forward"), true, masks, nil)
	m.bnUpdates = bnUpdates
	evalOut, _ := f.pass(root.SubScope("eval"), false, nil, trainOut)
	last, shape := net.Output(), net.Layers[net.Output()].Shape
	// The loss and the returned logits are float32: a mixed-precision
	// pass's low logits are cast up (torch: logits.float()).
	trainLogits := f.logits(root.SubScope("logits"), trainOut[last], shape)
	evalLogits := trainLogits
	if evalOut[last] != trainOut[last] {
		evalLogits = f.logits(root.SubScope("eval_logits"), evalOut[last], shape)
	}
	m.logits = evalLogits

	ls := root.SubScope("loss")
	// SparseSoftmaxCrossEntropyWithLogits has no C++ gradient; the dense op
	// on one-hot labels computes the same loss and has one.
	oneHot := op.OneHot(ls, m.labels, op.Const(ls.SubScope("depth"), int32(net.Classes)),
		op.Const(ls.SubScope("on"), float32(1)), op.Const(ls.SubScope("off"), float32(0)))
	axis := op.Const(ls.SubScope("axis"), []int32{0})
	ce, _ := op.SoftmaxCrossEntropyWithLogits(ls, trainLogits, oneHot)
	m.trainLoss = op.Mean(ls, ce, axis)
	m.loss = m.trainLoss
	if evalLogits != trainLogits {
		es := ls.SubScope("eval")
		ce, _ := op.SoftmaxCrossEntropyWithLogits(es, evalLogits, oneHot)
		m.loss = op.Mean(es, ce, axis)
	}
	// FP16 differentiates the loss times the scale (see lossScaler).
	objective := m.trainLoss
	if cfg.Precision == recipe.FP16 {
		m.scaler = newLossScaler(root.SubScope("loss_scale"), prefix)
		objective = op.Mul(ls.SubScope("scaled"), m.trainLoss, m.scaler.scale.read)
	}
	pred := op.ArgMax(ls, m.logits, op.Const(ls.SubScope("class_axis"), int32(1)), op.ArgMaxOutputType(tf.Int32))
	m.correct = op.Sum(ls, op.Cast(ls, op.Equal(ls, pred, m.labels), tf.Int32), axis)
	// Training accuracy as Keras reports it: the training forward pass (dropout on).
	ts := ls.SubScope("train")
	trainPred := op.ArgMax(ts, trainLogits, op.Const(ts.SubScope("class_axis"), int32(1)), op.ArgMaxOutputType(tf.Int32))
	m.trainCorrect = op.Sum(ts, op.Cast(ts, op.Equal(ts, trainPred, m.labels), tf.Int32), axis)

	if err := root.Err(); err != nil {
		return nil, scopeError(err)
	}

	// Gradients only for the trained parameters (Net.Trainable): in
	// features mode the base gets none, so no backward pass through it is
	// built or run.
	var trained []*variable
	for _, v := range m.params {
		if net.Trainable(cfg.Mode, cfg.FreezeLoadedHead, v.param) {
			trained = append(trained, v)
		}
	}
	reads := make([]tf.Output, len(trained))
	for i, v := range trained {
		reads[i] = v.read
	}
	g, err := root.Finalize()
	if err != nil {
		return nil, scopeError(err)
	}
	grads, err := g.AddGradients("gradients", []tf.Output{objective}, reads, nil)
	if err != nil {
		freeGraph(g)
		return nil, fmt.Errorf("gradients: %w", err)
	}
	m.train = append(m.train, m.bnUpdates...)
	for i, gr := range grads {
		// The C API reports "no gradient" (x does not reach y) as a null
		// operation with index −1; the binding wraps it without checking.
		if gr.Op == nil || gr.Index < 0 {
			freeGraph(g)
			return nil, fmt.Errorf("gradients: none for %s", trained[i].name)
		}
	}

	// The average over the ranks comes before the loss scaler, so that
	// every rank makes FP16's inf/NaN decision on the same numbers.
	if par != nil {
		rs := op.NewScopeWithGraph(g).SubScope("allreduce")
		grads = par.build(rs, m, grads)
		if err := rs.Err(); err != nil {
			freeGraph(g)
			return nil, scopeError(err)
		}
	}
	if m.scaler != nil {
		us := op.NewScopeWithGraph(g).SubScope("loss_scale_update")
		grads = m.scaler.unscale(us, grads)
		m.train = append(m.train, m.scaler.update(us)...)
		if err := us.Err(); err != nil {
			freeGraph(g)
			return nil, scopeError(err)
		}
	}

	// The scope is finalized; the optimizer continues on the graph itself.
	opt := op.NewScopeWithGraph(g).SubScope("optimizer")
	if err := m.buildOptimizer(cfg, opt, trained, grads, newSlotFunc(opt, prefix)); err != nil {
		freeGraph(g)
		return nil, err
	}
	del := op.NewScopeWithGraph(g).SubScope("destroy")
	for _, v := range m.variables() {
		m.destroy = append(m.destroy, op.DestroyResourceOp(del.SubScope(v.name), v.handle, op.DestroyResourceOpIgnoreLookupError(true)))
	}
	if err := del.Err(); err != nil {
		freeGraph(g)
		return nil, scopeError(err)
	}
	m.graph = g
	return m, nil
}

// dropoutLayers returns the indices of net's Dropout layers that do
// something: all of them (Net.Dropouts, in mask order) when cfg.Dropout > 0,
// none otherwise.
func dropoutLayers(cfg recipe.Config, net *model.Net) []int {
	if cfg.Dropout <= 0 {
		return nil
	}
	return net.Dropouts()
}

// form is how a value holds a feature map of the batch.
type form int

const (
	nhwc form = iota // [N, H, W, C]: what TensorFlow's CPU convolutions and pools take
	nchw             // [N, C, H, W]: torch's order (the adaptive pool's output)
	flat             // [N, C·H·W] in torch's C×H×W order
)

// value is one layer's output for the batch.
type value struct {
	out  tf.Output
	form form
}

// forward interprets a model.Net as TensorFlow ops.
type forward struct {
	net   *model.Net
	mode  string
	vars  map[string]*variable
	image tf.Output // the NHWC input, its size checked
	// low is the type convolutions and matrix products compute in:
	// tf.Float, or tf.Bfloat16 / tf.Half under mixed precision (see
	// lowType).
	low tf.DataType
	// differs marks the layers whose output differs between the training
	// and the evaluation pass (see trainOnly).
	differs []bool
}

// trainOnly marks the layers whose output differs between a training pass
// with the dropout masks masks and an evaluation pass: a BatchNorm that
// normalises with batch statistics in training (bnTrain), a Dropout with a
// mask, and every layer that reads one of those.
func (f *forward) trainOnly(masks map[int]tf.Output) []bool {
	d := make([]bool, len(f.net.Layers))
	for i, l := range f.net.Layers {
		switch l.Op {
		case model.BatchNorm:
			d[i] = f.bnTrain(l)
		case model.Dropout:
			_, d[i] = masks[i]
		}
		for _, j := range l.Inputs {
			d[i] = d[i] || (j != model.Image && d[j])
		}
	}
	return d
}

// bnTrain reports whether BatchNorm layer l normalises with batch statistics
// (and updates its running ones) in a training pass: always, except in the
// frozen base of features mode, which stays in evaluation mode as in
// torchrun.
func (f *forward) bnTrain(l model.Layer) bool { return f.mode != model.ModeFeatures || l.Head }

// pass adds a forward pass of every layer under s and returns each layer's
// value. In a training pass (train) BatchNorm layers that bnTrain normalise
// with batch statistics, and pass also returns the assignments of their
// updated running statistics; Dropout layers with a mask in masks multiply
// by it. An evaluation pass (train false) takes from shared, the training
// pass's values, every layer whose output does not depend on the
// difference.
func (f *forward) pass(s *op.Scope, train bool, masks map[int]tf.Output, shared []value) (outs []value, bnUpdates []*tf.Operation) {
	layers := f.net.Layers
	outs = make([]value, len(layers))
	for i, l := range layers {
		in := func(k int) value {
			if j := l.Inputs[k]; j != model.Image {
				return outs[j]
			}
			return value{f.image, nhwc}
		}
		if shared != nil && !f.differs[i] {
			outs[i] = shared[i]
			continue
		}
		name := l.Name
		if name == "" {
			name = l.Op.String()
		}
		ls := s.SubScope(name)
		switch l.Op {
		case model.Conv:
			outs[i] = f.conv(ls, l, f.toNHWC(ls, in(0), l.In))
		case model.BatchNorm:
			var upd []*tf.Operation
			outs[i], upd = f.batchNorm(ls, l, f.toNHWC(ls, in(0), l.In), train && f.bnTrain(l))
			bnUpdates = append(bnUpdates, upd...)
		case model.ReLU:
			x := in(0)
			outs[i] = value{op.Relu(ls, x.out), x.form}
		case model.ReLU6:
			x := in(0)
			outs[i] = value{op.Relu6(ls, x.out), x.form}
		case model.MaxPool:
			outs[i] = f.maxPool(ls, l, f.toNHWC(ls, in(0), l.In))
		case model.AdaptiveAvgPool:
			outs[i] = f.adaptiveAvgPool(ls, l, f.toNHWC(ls, in(0), l.In))
		case model.Add:
			a := in(0)
			b := f.convert(ls, in(1), a.form, l.In)
			if a.out.DataType() != b.out.DataType() { // torch's type promotion
				a.out, b.out = castTo(ls, a.out, tf.Float), castTo(ls, b.out, tf.Float)
			}
			outs[i] = value{op.AddV2(ls, a.out, b.out), a.form}
		case model.Flatten:
			outs[i] = f.toFlat(ls, in(0), l.In)
		case model.Linear:
			x := f.toFlat(ls, in(0), l.In)
			w, b := f.vars[l.Name+".weight"], f.vars[l.Name+".bias"]
			mm := op.MatMul(ls, f.lowIn(ls, x.out), f.lowIn(ls, w.read))
			outs[i] = value{op.BiasAdd(ls, mm, f.lowIn(ls, b.read)), flat}
		case model.Dropout:
			outs[i] = f.dropout(ls, l, in(0), masks[i])
		default:
			ls.UpdateErr("layer", fmt.Errorf("layer %d (%s): op %s is not supported", i, l.Name, l.Op))
			return outs, bnUpdates
		}
	}
	return outs, bnUpdates
}

// conv is torch's Conv2d on an NHWC map. With stride 1 and padding
// (k−1)/2 of an odd kernel TensorFlow's SAME padding is torch's symmetric
// padding; otherwise (stride 2: SAME would pad asymmetrically, more at the
// bottom and right, where torch pads both sides equally) the map is padded
// with zeros explicitly and convolved VALID. A depthwise convolution is
// DepthwiseConv2dNative with a [k, k, C, 1] filter.
func (f *forward) conv(s *op.Scope, l model.Layer, x value) value {
	h, padding := f.lowIn(s, x.out), "SAME"
	if l.Stride != 1 || l.Kernel%2 == 0 || l.Pad != (l.Kernel-1)/2 {
		padding = "VALID"
		if l.Pad > 0 {
			h = op.Pad(s, h, padding4(s, l.Pad))
		}
	}
	strides := []int64{1, int64(l.Stride), int64(l.Stride), 1}
	w := f.lowIn(s, f.vars[l.Name+".weight"].read)
	if l.Depthwise() {
		h = op.DepthwiseConv2dNative(s, h, w, strides, padding)
	} else {
		h = op.Conv2D(s, h, w, strides, padding)
	}
	if l.Bias {
		h = op.BiasAdd(s, h, f.lowIn(s, f.vars[l.Name+".bias"].read))
	}
	return value{h, nhwc}
}

// lowType is the type in which a precision computes convolutions and
// matrix products: bfloat16 for BF16, float16 for FP16, float32 otherwise
// (FP32 and TF32, whose TF32 products are a switch of the library, not a
// type).
func lowType(precision string) tf.DataType {
	switch precision {
	case recipe.BF16:
		return tf.Bfloat16
	case recipe.FP16:
		return tf.Half
	}
	return tf.Float
}

// castTo returns x as type dt: x itself when it has that type already,
// else a Cast (whose gradient the C++ registry has: the incoming gradient
// cast back).
func castTo(s *op.Scope, x tf.Output, dt tf.DataType) tf.Output {
	if x.Op == nil || x.DataType() == dt { // nil: the scope has failed already
		return x
	}
	return op.Cast(s.SubScope("cast"), x, dt)
}

// lowIn is an input of a convolution or a matrix product (activation,
// weight or bias) in the compute type: torch autocast casts all three to
// the low type, whatever type reaches the op.
func (f *forward) lowIn(s *op.Scope, x tf.Output) tf.Output {
	if f.low == 0 { // unset: float32
		return x
	}
	return castTo(s, x, f.low)
}

// inFloat32 runs g, a reduction (pooling), in float32 on x and returns its
// result in x's type: low in, low out, accumulated in float32 and rounded
// once, as torch's CPU pooling of a bfloat16 or float16 map does.
func inFloat32(s *op.Scope, x tf.Output, g func(tf.Output) tf.Output) tf.Output {
	dt := x.DataType()
	return castTo(s, g(castTo(s, x, tf.Float)), dt)
}

// logits returns the last layer's output x (of shape sh) as float32 logits
// [N, classes].
func (f *forward) logits(s *op.Scope, x value, sh model.Shape) tf.Output {
	return castTo(s, f.toFlat(s, x, sh).out, tf.Float)
}

// padding4 is the Pad paddings of an NHWC map padded by p on each side of H
// and W.
func padding4(s *op.Scope, p int) tf.Output {
	q := int32(p)
	return op.Const(s.SubScope("paddings"), [][]int32{{0, 0}, {q, q}, {q, q}, {0, 0}})
}

// maxPool is torch's MaxPool2d: padding never wins the maximum, so the map
// is padded with −∞ (PadV2) and pooled VALID.
func (f *forward) maxPool(s *op.Scope, l model.Layer, x value) value {
	h := x.out
	if l.Pad > 0 {
		minusInf := castTo(s, op.Const(s.SubScope("minus_inf"), float32(math.Inf(-1))), h.DataType())
		h = op.PadV2(s, h, padding4(s, l.Pad), minusInf)
	}
	k, st := int64(l.Kernel), int64(l.Stride)
	return value{op.MaxPool(s, h, []int64{1, k, k, 1}, []int64{1, st, st, 1}, "VALID"), nhwc}
}

// adaptiveAvgPool is torch's AdaptiveAvgPool2d((Size, Size)) on an NHWC map:
// at Size 1 the mean over H and W, at an input already Size × Size the
// identity, otherwise adaptivePool.
func (f *forward) adaptiveAvgPool(s *op.Scope, l model.Layer, x value) value {
	switch {
	case l.Size == 1:
		return value{inFloat32(s, x.out, func(h tf.Output) tf.Output {
			return op.Mean(s, h, op.Const(s.SubScope("hw"), []int32{1, 2}), op.MeanKeepDims(true))
		}), nhwc}
	case l.In.H == l.Size && l.In.W == l.Size:
		return x
	}
	return value{inFloat32(s, x.out, func(h tf.Output) tf.Output { return adaptivePool(s, h, l.In, l.Size) }), nchw}
}

// dropout multiplies x by the step's mask (model.DropoutMask over the
// layer's C·H·W inputs in torch's order), or passes it on without one.
func (f *forward) dropout(s *op.Scope, l model.Layer, x value, mask tf.Output) value {
	if mask.Op == nil {
		return x
	}
	sh := l.In
	switch {
	case x.form == flat:
	case sh.H*sh.W == 1: // [N, 1, 1, C] or [N, C, 1, 1]: the mask's order either way
		mask = op.Reshape(s, mask, shapeConst(s, x.form, sh))
	default:
		x = f.convert(s, x, nchw, sh)
		mask = op.Reshape(s, mask, shapeConst(s, nchw, sh))
	}
	// A low activation times the float32 mask is float32 (torch's type
	// promotion); the next Linear casts it back down.
	return value{op.Mul(s, castTo(s, x.out, tf.Float), mask), x.form}
}

// shapeConst is the Reshape shape of a map sh held in form fm.
func shapeConst(s *op.Scope, fm form, sh model.Shape) tf.Output {
	c, h, w := int64(sh.C), int64(sh.H), int64(sh.W)
	shape := map[form][]int64{nhwc: {-1, h, w, c}, nchw: {-1, c, h, w}, flat: {-1, c * h * w}}[fm]
	return op.Const(s.SubScope(fmt.Sprintf("shape_%d", fm)), shape)
}

// toNHWC, toFlat: convert to that form.
func (f *forward) toNHWC(s *op.Scope, x value, sh model.Shape) value {
	return f.convert(s, x, nhwc, sh)
}
func (f *forward) toFlat(s *op.Scope, x value, sh model.Shape) value {
	return f.convert(s, x, flat, sh)
}

// convert returns x, a map of shape sh, in form to. A map of one pixel
// (H·W = 1) is the same in every form and only reshaped; otherwise
// converting from NHWC needs a transpose, and the flat form is torch's
// C×H×W order, so that the Linear weights need no permutation.
func (f *forward) convert(s *op.Scope, x value, to form, sh model.Shape) value {
	if x.form == to {
		return x
	}
	s = s.SubScope("to_" + [...]string{"nhwc", "nchw", "flat"}[to])
	h := x.out
	if sh.H*sh.W > 1 {
		switch {
		case x.form == nhwc: // to NCHW, then reshaped to flat if needed
			h = op.Transpose(s, h, op.Const(s.SubScope("perm"), []int32{0, 3, 1, 2}))
			if to == nchw {
				return value{h, nchw}
			}
		case to == nhwc: // from NCHW (reshaped first when flat)
			if x.form == flat {
				h = op.Reshape(s, h, shapeConst(s, nchw, sh))
			}
			return value{op.Transpose(s, h, op.Const(s.SubScope("perm"), []int32{0, 2, 3, 1})), nhwc}
		}
	}
	return value{op.Reshape(s, h, shapeConst(s, to, sh)), to}
}

// adaptivePool is torch's AdaptiveAvgPool2d((out, out)) on an NHWC map h of
// shape in, returning the NCHW map [N, C, out, out]. TensorFlow has no
// adaptive pooling op (and AvgPool cannot make overlapping bins of
// different sizes), so the pooling is a constant matrix product: h is
// transposed to NCHW and reshaped to [N·C, H·W], and multiplied by
// poolMatrix(H, W, out) ([H·W, out·out]), whose column for output cell
// (i, j) holds 1/(rows·cols) over the input cells of the cell's bins
// (model.AdaptivePoolBins). Transpose, Reshape and MatMul all have C++
// gradients.
func adaptivePool(s *op.Scope, h tf.Output, in model.Shape, out int) tf.Output {
	h = op.Transpose(s, h, op.Const(s.SubScope("nchw"), []int32{0, 3, 1, 2}))
	h = op.Reshape(s.SubScope("rows"), h, op.Const(s.SubScope("rows_shape"), []int64{-1, int64(in.H * in.W)}))
	h = op.MatMul(s, h, op.Const(s.SubScope("bins"), poolMatrix(in.H, in.W, out)))
	return op.Reshape(s.SubScope("map"), h, op.Const(s.SubScope("map_shape"), []int64{-1, int64(in.C), int64(out), int64(out)}))
}

// poolMatrix returns the [inH·inW][out·out] matrix of adaptivePool: entry
// [h·inW+w][i·out+j] is 1/(|rows_i|·|cols_j|) when input row h is in output
// row i's bin and column w in output column j's bin, else 0.
func poolMatrix(inH, inW, out int) [][]float32 {
	rs, re := model.AdaptivePoolBins(inH, out)
	cs, ce := model.AdaptivePoolBins(inW, out)
	p := make([][]float32, inH*inW)
	for k := range p {
		p[k] = make([]float32, out*out)
	}
	for i := range out {
		for j := range out {
			w := float32(1 / float64((re[i]-rs[i])*(ce[j]-cs[j])))
			for h := rs[i]; h < re[i]; h++ {
				for x := cs[j]; x < ce[j]; x++ {
					p[h*inW+x][i*out+j] = w
				}
			}
		}
	}
	return p
}

// batchNorm is torch's BatchNorm2d as FusedBatchNormV3 (NHWC), the fused op
// whose gradient the C++ registry has (FusedBatchNorm's it lacks). TF's
// exponential_avg_factor is torch's momentum: both compute running ←
// (1−m)·running + m·batch, with the unbiased batch variance (n/(n−1)) for
// the running variance and the biased one for normalising.
func (f *forward) batchNorm(s *op.Scope, l model.Layer, x value, train bool) (value, []*tf.Operation) {
	v := func(leaf string) *variable { return f.vars[l.Name+"."+leaf] }
	mean, variance := v("running_mean"), v("running_var")
	y, newMean, newVar, _, _, _ := op.FusedBatchNormV3(s, x.out, v("weight").read, v("bias").read, mean.read, variance.read,
		op.FusedBatchNormV3Epsilon(model.BNEps), op.FusedBatchNormV3ExponentialAvgFactor(model.BNMomentum),
		op.FusedBatchNormV3DataFormat("NHWC"), op.FusedBatchNormV3IsTraining(train))
	if !train {
		return value{y, nhwc}, nil
	}
	return value{y, nhwc}, []*tf.Operation{
		op.AssignVariableOp(s.SubScope("update_mean"), mean.handle, newMean),
		op.AssignVariableOp(s.SubScope("update_var"), variance.handle, newVar),
	}
}

// newSlotFunc returns a function that makes an optimizer slot variable for
// a parameter, initialised to zeros by the returned init op.
func newSlotFunc(opt *op.Scope, prefix string) func(p *variable, slot string) (*variable, *tf.Operation) {
	return func(p *variable, slot string) (*variable, *tf.Operation) {
		name := p.name + "." + slot
		v := &variable{name: name, param: p.param, depthwise: p.depthwise, shape: p.shape}
		s := opt.SubScope(name)
		v.handle = op.VarHandleOp(s, tf.Float, tf.MakeShape(v.shape...), op.VarHandleOpSharedName(prefix+name))
		v.read = op.ReadVariableOp(s, v.handle, tf.Float)
		v.value = op.Placeholder(s.SubScope("value"), tf.Float, op.PlaceholderShape(tf.MakeShape(v.shape...)))
		v.assign = op.AssignVariableOp(s, v.handle, v.value)
		zeros := op.Fill(s, op.Const(s.SubScope("shape"), v.shape), op.Const(s.SubScope("zero"), float32(0)))
		return v, op.AssignVariableOp(s.SubScope("init"), v.handle, zeros)
	}
}

// buildOptimizer adds one update op per trained parameter. Each reproduces
// torch.optim's update exactly in exact arithmetic (float32 results differ
// in rounding only):
//
// Weight decay is torch's coupled L2 term for both SGD and Adam:
// g ← g + wd·w, added in the graph before the update, with w the value the
// forward pass read.
//
// SGD without momentum: ResourceApplyGradientDescent, w ← w − lr·g (torch:
// the same).
//
// SGD with momentum: ResourceApplyMomentum computes accum ← m·accum + g;
// w ← w − lr·accum, torch computes buf ← m·buf + g (dampening 0); w ← w −
// lr·buf. TF's accum starts at 0, so its first step gives accum = g, which
// is torch's first buf (torch initialises buf to g): the same. With
// Nesterov TF computes w ← w − lr·g − lr·m·accum (accum already updated),
// torch w ← w − lr·(g + m·buf): the same.
//
// Adam: ResourceApplyAdam computes lr_t = lr·√(1−β2^t)/(1−β1^t) and
// w ← w − lr_t·m/(√v + ε̂), torch w ← w − lr/(1−β1^t) · m/(√v/√(1−β2^t) + ε).
// Multiplying torch's numerator and denominator by √(1−β2^t) gives TF's
// form with ε̂ = ε·√(1−β2^t): TF's epsilon sits outside the bias correction
// ("epsilon hat" in Kingma & Ba §2). tfrun therefore feeds, per step t,
// ε̂ = ε·√(1−β2^t) and computes lr_t itself in float64 (fed as the lr
// input, with both beta-power inputs constant 0 so that TF's own correction
// is 1):
// rounding β2 = 0.999 to float32 before TF forms 1−β2^t would otherwise cost
// a relative 1e-5 in the step size. m and v are updated as in torch
// (m ← β1·m + (1−β1)·g, v ← β2·v + (1−β2)·g²).
func (m *netGraph) buildOptimizer(cfg recipe.Config, s *op.Scope, trained []*variable, grads []tf.Output,
	newSlot func(*variable, string) (*variable, *tf.Operation)) error {
	lr := op.Const(s.SubScope("lr"), float32(cfg.LR))
	var wd tf.Output
	if cfg.WeightDecay != 0 {
		wd = op.Const(s.SubScope("weight_decay"), float32(cfg.WeightDecay))
	}
	var mom, zero, b1, b2 tf.Output
	switch {
	case cfg.Optimizer == recipe.SGD && cfg.Momentum != 0:
		mom = op.Const(s.SubScope("momentum"), float32(cfg.Momentum))
	case cfg.Optimizer == recipe.Adam:
		zero = op.Const(s.SubScope("beta_power"), float32(0))
		b1 = op.Const(s.SubScope("beta1"), float32(cfg.Beta1))
		b2 = op.Const(s.SubScope("beta2"), float32(cfg.Beta2))
		m.adamLR = op.Placeholder(s.SubScope("adam_lr"), tf.Float, op.PlaceholderShape(tf.ScalarShape()))
		m.adamEps = op.Placeholder(s.SubScope("adam_eps"), tf.Float, op.PlaceholderShape(tf.ScalarShape()))
	}
	for i, v := range trained {
		// The update waits for every training op that holds the variable's value (see
		// valueReaders); it need not wait for the rest of the backward pass, so the updates
		// overlap it, as Keras' do.
		vs := s.WithControlDependencies(valueReaders(v.read)...).SubScope(v.name)
		g := grads[i]
		if cfg.WeightDecay != 0 {
			g = op.AddV2(vs.SubScope("decayed"), g, op.Mul(vs.SubScope("decay"), wd, v.read))
		}
		var upd *tf.Operation
		switch {
		case cfg.Optimizer == recipe.Adam:
			mv, mInit := newSlot(v, slotExpAvg)
			vv, vInit := newSlot(v, slotExpAvgSq)
			m.slots = append(m.slots, mv, vv)
			m.initSlots = append(m.initSlots, mInit, vInit)
			upd = op.ResourceApplyAdam(vs, v.handle, mv.handle, vv.handle, zero, zero, m.adamLR, b1, b2, m.adamEps, g)
		case cfg.Momentum != 0:
			acc, init := newSlot(v, slotMomentum)
			m.slots = append(m.slots, acc)
			m.initSlots = append(m.initSlots, init)
			upd = op.ResourceApplyMomentum(vs, v.handle, acc.handle, lr, g, mom, op.ResourceApplyMomentumUseNesterov(cfg.Nesterov))
		default:
			upd = op.ResourceApplyGradientDescent(vs, v.handle, lr, g)
		}
		m.train = append(m.train, upd)
	}
	if err := s.Err(); err != nil {
		return scopeError(err)
	}
	return nil
}

// aliasing are the ops whose output may share its input's buffer.
var aliasing = map[string]bool{"Identity": true, "IdentityN": true, "Reshape": true, "Squeeze": true,
	"ExpandDims": true, "EnsureShape": true, "StopGradient": true, "PreventGradient": true, "Bitcast": true,
	"Cast": true} // a Cast to its own type forwards its input

// valueReaders returns the ops of the training step (the forward pass and the gradients)
// that hold read, a variable's value, directly or through ops whose output shares its
// buffer. An update of the variable must wait for them: an update that runs while one of
// them still holds the value makes TensorFlow copy the variable first (copy-on-write), 411
// MB per step for VGG16's classifier.0 at 224 px (docs/benchmarks.md). Waiting for these
// only, not for the whole backward pass, lets each update start once its own gradient and
// the last reader of its value are done.
func valueReaders(read tf.Output) []*tf.Operation {
	var ops []*tf.Operation
	seen := map[string]bool{}
	var walk func(o tf.Output)
	walk = func(o tf.Output) {
		for _, c := range o.Consumers() {
			name := c.Op.Name()
			if seen[name] || !(strings.HasPrefix(name, "forward/") || strings.HasPrefix(name, "gradients/")) {
				continue
			}
			seen[name] = true
			ops = append(ops, c.Op)
			if aliasing[c.Op.Type()] {
				for i := range c.Op.NumOutputs() {
					walk(c.Op.Output(i))
				}
			}
		}
	}
	walk(read)
	return ops
}

// variables lists every variable of the graph: parameters, optimizer
// slots, and the loss scale's.
func (m *netGraph) variables() []*variable {
	vs := append(slices.Clone(m.params), m.slots...)
	if m.scaler != nil {
		vs = append(vs, m.scaler.scale, m.scaler.tracker)
	}
	return vs
}

// lossScaler is FP16's dynamic loss scaling, torch.amp.GradScaler's rule
// with its defaults (recipe.LossScale*), in the graph: the gradients are
// taken of the loss times scale, multiplied by 1/scale (GradScaler's
// float32 inv_scale), and checked for an inf or a NaN. On a step with a
// non-finite gradient no optimizer update runs: each update's gradient
// passes a Switch on finite (tf.cond v1's dead-tensor control flow), whose
// true output is dead on such a step, and an op with a dead input is not
// executed, so no weight, momentum or Adam slot changes (BatchNorm's
// running statistics still do, as in torch, whose forward pass updates
// them). The scale and its growth tracker are float32 scalar variables
// updated in the same step by torch._amp_update_scale_'s rule: a
// non-finite step multiplies the scale by LossScaleBackoff and zeroes the
// tracker; a finite one counts, and the LossScaleGrowthInterval-th in a row
// multiplies the scale by LossScaleGrowth (if that stays finite) and zeroes
// the tracker. The tracker counts up to 2000, exact in float32.
type lossScaler struct {
	scale, tracker *variable
	finite         tf.Output // bool scalar: every gradient of the step is finite
}

// newLossScaler makes the scale and tracker variables under s.
func newLossScaler(s *op.Scope, prefix string) *lossScaler {
	v := func(name string) *variable {
		vs := s.SubScope(name)
		v := &variable{name: name}
		v.handle = op.VarHandleOp(vs, tf.Float, tf.ScalarShape(), op.VarHandleOpSharedName(prefix+name))
		v.read = op.ReadVariableOp(vs, v.handle, tf.Float)
		v.value = op.Placeholder(vs.SubScope("value"), tf.Float, op.PlaceholderShape(tf.ScalarShape()))
		v.assign = op.AssignVariableOp(vs, v.handle, v.value)
		return v
	}
	return &lossScaler{scale: v(recipe.MetaLossScale), tracker: v(recipe.MetaLossScaleTracker)}
}

// unscale returns the gradients of the scaled loss divided by the scale,
// each behind a Switch on their common finiteness (see lossScaler).
func (ls *lossScaler) unscale(s *op.Scope, grads []tf.Output) []tf.Output {
	inv := op.Reciprocal(s.SubScope("inv_scale"), ls.scale.read)
	flat := op.Const(s.SubScope("flat"), []int32{-1})
	axis := op.Const(s.SubScope("axis"), int32(0))
	unscaled := make([]tf.Output, len(grads))
	finite := make([]tf.Output, len(grads))
	for i, g := range grads {
		gs := s.SubScope("grad")
		unscaled[i] = op.Mul(gs, g, inv)
		finite[i] = op.All(gs, op.IsFinite(gs, op.Reshape(gs, unscaled[i], flat)), axis)
	}
	fs := s.SubScope("finite")
	ls.finite = op.All(fs, op.Pack(fs, finite), axis)
	gated := make([]tf.Output, len(grads))
	for i, g := range unscaled {
		_, gated[i] = op.Switch(s.SubScope("gate"), g, ls.finite)
	}
	return gated
}

// update returns the assignments of the next scale and tracker.
func (ls *lossScaler) update(s *op.Scope) []*tf.Operation {
	c := func(name string, v float32) tf.Output { return op.Const(s.SubScope(name), v) }
	scale, zero := ls.scale.read, c("zero", 0)
	counted := op.AddV2(s.SubScope("counted"), ls.tracker.read, c("one", 1))
	grow := op.GreaterEqual(s, counted, c("interval", recipe.LossScaleGrowthInterval))
	grown := op.Mul(s.SubScope("grown"), scale, c("growth", recipe.LossScaleGrowth))
	grown = op.Select(s.SubScope("grown_finite"), op.IsFinite(s, grown), grown, scale)
	backedOff := op.Mul(s.SubScope("backed_off"), scale, c("backoff", recipe.LossScaleBackoff))
	next := op.Select(s.SubScope("next"), ls.finite, op.Select(s.SubScope("if_grow"), grow, grown, scale), backedOff)
	nextTracker := op.Select(s.SubScope("next_tracker"), ls.finite, op.Select(s.SubScope("tracker_if_grow"), grow, zero, counted), zero)
	return []*tf.Operation{
		op.AssignVariableOp(s.SubScope("assign_scale"), ls.scale.handle, next),
		op.AssignVariableOp(s.SubScope("assign_tracker"), ls.tracker.handle, nextTracker),
	}
}

// placeGraph copies m's graph into a new graph whose every node asks for
// dev, and points m's handles at the copies. op.Gradients refuses scopes
// with a device and the C++ gradient builder leaves its nodes unplaced, so
// the graph is built without devices and placed here, through the C API's
// default device for imported nodes. Soft placement (see sessionConfig) then
// moves the few ops without a kernel for dev to the CPU.
func (m *netGraph) placeGraph(dev string) error {
	var buf bytes.Buffer
	if _, err := m.graph.WriteTo(&buf); err != nil {
		return err
	}
	def, err := reluGradsFromOutputs(buf.Bytes())
	if err != nil {
		return err
	}
	g := tf.NewGraph()
	if err := g.ImportWithOptions(def, tf.GraphImportOptions{Device: dev}); err != nil {
		freeGraph(g)
		return err
	}
	var missing []string
	out := func(o *tf.Output) {
		if o.Op == nil {
			return
		}
		n := g.Operation(o.Op.Name())
		if n == nil {
			missing = append(missing, o.Op.Name())
			return
		}
		*o = n.Output(o.Index)
	}
	ops := func(list []*tf.Operation) {
		for i, o := range list {
			n := g.Operation(o.Name())
			if n == nil {
				missing = append(missing, o.Name())
				continue
			}
			list[i] = n
		}
	}
	for _, o := range []*tf.Output{&m.x, &m.labels, &m.adamLR, &m.adamEps, &m.gradWeight, &m.logits, &m.loss, &m.correct, &m.trainLoss, &m.trainCorrect} {
		out(o)
	}
	for i := range m.masks {
		out(&m.masks[i])
	}
	if m.scaler != nil {
		out(&m.scaler.finite)
	}
	for _, v := range m.variables() {
		out(&v.handle)
		out(&v.read)
		out(&v.value)
		a := []*tf.Operation{v.assign}
		ops(a)
		v.assign = a[0]
	}
	ops(m.train)
	ops(m.bnUpdates)
	ops(m.initSlots)
	ops(m.destroy)
	if len(missing) > 0 {
		freeGraph(g)
		return fmt.Errorf("placed graph lacks %s", strings.Join(missing, ", "))
	}
	freeGraph(m.graph)
	m.graph = g
	return nil
}

// reluGradsFromOutputs points the features input of every ReluGrad (Relu6Grad) of a
// serialised graph at the output of the Relu (Relu6) that read the same tensor. TensorFlow's
// C++ gradient of Relu (cc/gradients/nn_grad.cc) passes the activation's input, the
// pre-activation, where Python's passes its output. The result is the same bit for bit
// (ReluGrad is g·(f > 0), and relu(x) > 0 exactly when x > 0; Relu6Grad is g·(0 < f < 6), and
// 0 < relu6(x) < 6 exactly when 0 < x < 6), but with the pre-activation read twice grappler
// cannot fuse the Relu into the convolution before it, and the pre-activation stays alive
// until the backward pass: 15 extra passes over memory and 0.4 GiB more for VGG16 at 224 px ×
// 8 than Keras (scripts/bench/tfgap, docs/benchmarks.md).
func reluGradsFromOutputs(def []byte) ([]byte, error) {
	var g graphpb.GraphDef
	if err := proto.Unmarshal(def, &g); err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	act := map[string]map[string]string{"Relu": {}, "Relu6": {}} // op type → its input → the activation
	for _, n := range g.Node {
		if m, ok := act[n.Op]; ok && len(n.Input) > 0 && strings.HasPrefix(n.Name, "forward/") {
			m[strings.TrimSuffix(n.Input[0], ":0")] = n.Name
		}
	}
	grad := map[string]string{"ReluGrad": "Relu", "Relu6Grad": "Relu6"}
	for _, n := range g.Node {
		if fwd, ok := grad[n.Op]; ok && len(n.Input) > 1 {
			if r, ok := act[fwd][strings.TrimSuffix(n.Input[1], ":0")]; ok {
				n.Input[1] = r
			}
		}
	}
	return proto.Marshal(&g)
}

// scopeError drops the Go stack trace that op.Scope appends to the error of
// the first failed operation, keeping TensorFlow's message.
func scopeError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, " (Stacktrace:"); i >= 0 {
		msg = msg[:i]
	}
	return errors.New("graph: " + msg)
}
