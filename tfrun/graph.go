package tfrun

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	"github.com/galeone/tensorflow/tensorflow/go/op"

	"github.com/fwbench/fwbench/vgg"
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
	name   string    // canonical name: the parameter's, or "<parameter>.<slot>"
	param  vgg.Param // the parameter (a slot has its parameter's shape and layout)
	shape  []int64   // TensorFlow shape
	handle tf.Output // VarHandleOp
	read   tf.Output // ReadVariableOp: the value the forward pass and the weight decay use
	value  tf.Output // placeholder fed by assign
	assign *tf.Operation
}

// model is the built graph and the handles tfrun runs.
type model struct {
	graph *tf.Graph

	// Inputs. Evaluation feeds only x and labels (and Logits only x).
	x      tf.Output // float32 [N, S, S, 3] NHWC
	labels tf.Output // int32 [N]
	// masks are the dropout masks of a training step, float32 [N, width],
	// one per dropout layer of the head (masks[l] for HeadLayer.Dropout l),
	// fed from vgg.DropoutMask; none when Config.Dropout is 0.
	masks []tf.Output

	// Adam's per-step feeds (see buildOptimizer).
	adamLR, adamEps tf.Output

	params []*variable // in vgg.ParamsFor order
	slots  []*variable // optimizer state, in params order

	logits       tf.Output // evaluation mode: dropout off, BatchNorm running statistics
	loss         tf.Output // evaluation-mode mean cross-entropy
	correct      tf.Output // evaluation-mode count of top-1 hits
	trainCorrect tf.Output // training-mode (dropout on) count of top-1 hits
	trainLoss    tf.Output // training-mode mean cross-entropy, before the update

	train     []*tf.Operation // the optimizer updates and BatchNorm statistics: targets of a training step
	bnUpdates []*tf.Operation // the BatchNorm running-statistics assignments (part of train)
	initSlots []*tf.Operation // zero the optimizer slots
	destroy   []*tf.Operation // delete every variable's resource
}

// buildModel constructs the whole graph for cfg: variables, the forward
// pass, the loss, its gradients and the optimizer. Variables get shared
// names prefixed with prefix: a VarHandleOp with an empty shared_name is
// named after its node, and handles with equal shared names alias one
// resource (tensorflow#15058), so each Trainer uses its own prefix.
// The graph carries no device; the caller places it by importing it with
// a default device (see placeGraph).
func buildModel(cfg Config, prefix string) (m *model, err error) {
	head := cfg.head()
	params, err := vgg.ParamsFor(cfg.Model, head, cfg.ImageSize, cfg.NumClasses, cfg.Hidden)
	if err != nil {
		return nil, err
	}
	layers, err := cfg.Model.FeatureLayers(cfg.ImageSize)
	if err != nil {
		return nil, err
	}
	headLayers, err := head.Layers(cfg.ImageSize, cfg.NumClasses, cfg.Hidden)
	if err != nil {
		return nil, err
	}
	root := op.NewScope()
	m = &model{}
	in := root.SubScope("input")
	m.x = op.Placeholder(in.SubScope("x"), tf.Float, op.PlaceholderShape(tf.MakeShape(-1, -1, -1, 3)))
	m.labels = op.Placeholder(in.SubScope("labels"), tf.Int32, op.PlaceholderShape(tf.MakeShape(-1)))
	for _, l := range dropoutLayers(cfg, headLayers) {
		ms := in.SubScope(fmt.Sprintf("classifier.%d.mask", l.Index+2))
		m.masks = append(m.masks, op.Placeholder(ms, tf.Float, op.PlaceholderShape(tf.MakeShape(-1, int64(l.Out)))))
	}

	vars := root.SubScope("vars")
	newVar := func(name string, p vgg.Param) *variable {
		v := &variable{name: name, param: p, shape: tfShape(p)}
		s := vars.SubScope(name)
		v.handle = op.VarHandleOp(s, tf.Float, tf.MakeShape(v.shape...), op.VarHandleOpSharedName(prefix+name))
		v.read = op.ReadVariableOp(s, v.handle, tf.Float)
		v.value = op.Placeholder(s.SubScope("value"), tf.Float, op.PlaceholderShape(tf.MakeShape(v.shape...)))
		v.assign = op.AssignVariableOp(s, v.handle, v.value)
		return v
	}
	byName := map[string]*variable{}
	for _, p := range params {
		v := newVar(p.Name, p)
		m.params = append(m.params, v)
		byName[p.Name] = v
	}

	// The training forward pass, layer for layer as torchvision's
	// VGG.features, VGG.avgpool (HeadTorchvision only) and VGG.classifier.
	// The evaluation pass shares what it can: with BatchNorm trained in
	// batch mode it is a second forward over the same variable reads, with
	// BatchNorm in inference mode; otherwise it shares the base's output
	// and only the head is built again, without the dropout masks (and
	// with dropout 0 one pass serves both).
	f := forwardSpec{cfg: cfg, layers: layers, head: head, headLayers: headLayers, vars: byName}
	fs := root.SubScope("forward")
	feat, bnUpdates := f.base(fs, m.x, true)
	m.bnUpdates = bnUpdates
	trainLogits := f.classifier(fs, feat, m.masks)
	evalLogits := trainLogits
	switch {
	case len(bnUpdates) > 0:
		es := root.SubScope("eval")
		evalFeat, _ := f.base(es, m.x, false)
		evalLogits = f.classifier(es, evalFeat, nil)
	case len(m.masks) > 0:
		evalLogits = f.classifier(root.SubScope("eval"), feat, nil)
	}
	m.logits = evalLogits

	ls := root.SubScope("loss")
	// SparseSoftmaxCrossEntropyWithLogits has no C++ gradient; the dense op
	// on one-hot labels computes the same loss and has one.
	oneHot := op.OneHot(ls, m.labels, op.Const(ls.SubScope("depth"), int32(cfg.NumClasses)),
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
	pred := op.ArgMax(ls, m.logits, op.Const(ls.SubScope("class_axis"), int32(1)), op.ArgMaxOutputType(tf.Int32))
	m.correct = op.Sum(ls, op.Cast(ls, op.Equal(ls, pred, m.labels), tf.Int32), axis)
	// Training accuracy as Keras reports it: the training forward pass (dropout on).
	ts := ls.SubScope("train")
	trainPred := op.ArgMax(ts, trainLogits, op.Const(ts.SubScope("class_axis"), int32(1)), op.ArgMaxOutputType(tf.Int32))
	m.trainCorrect = op.Sum(ts, op.Cast(ts, op.Equal(ts, trainPred, m.labels), tf.Int32), axis)

	if err := root.Err(); err != nil {
		return nil, scopeError(err)
	}

	// Gradients only for the trained parameters (vgg.Trainable): in
	// "features" mode the base gets none, so no backward pass through it
	// is built or run.
	var trained []*variable
	for _, v := range m.params {
		if vgg.Trainable(cfg.Mode, head, cfg.FreezeLoadedHead, v.param) {
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
	grads, err := g.AddGradients("gradients", []tf.Output{m.trainLoss}, reads, nil)
	if err != nil {
		return nil, fmt.Errorf("gradients: %w", err)
	}
	m.train = append(m.train, m.bnUpdates...)
	for i, gr := range grads {
		// The C API reports "no gradient" (x does not reach y) as a null
		// operation with index −1; the binding wraps it without checking.
		if gr.Op == nil || gr.Index < 0 {
			return nil, fmt.Errorf("gradients: none for %s", trained[i].name)
		}
	}

	// The scope is finalized; the optimizer continues on the graph itself.
	opt := op.NewScopeWithGraph(g).SubScope("optimizer")
	if err := m.buildOptimizer(cfg, opt, trained, grads, newSlotFunc(opt, prefix)); err != nil {
		return nil, err
	}
	del := op.NewScopeWithGraph(g).SubScope("destroy")
	for _, v := range append(append([]*variable(nil), m.params...), m.slots...) {
		m.destroy = append(m.destroy, op.DestroyResourceOp(del.SubScope(v.name), v.handle, op.DestroyResourceOpIgnoreLookupError(true)))
	}
	if err := del.Err(); err != nil {
		return nil, scopeError(err)
	}
	m.graph = g
	return m, nil
}

// forwardSpec holds what a forward pass needs.
type forwardSpec struct {
	cfg        Config
	layers     []vgg.Layer
	head       vgg.Head
	headLayers []vgg.HeadLayer
	vars       map[string]*variable
}

// dropoutLayers returns the head layers followed by a Dropout that does
// something: the Hidden ones when cfg.Dropout > 0, none otherwise. Their
// order is that of their Dropout numbers (0, 1, ...).
func dropoutLayers(cfg Config, ls []vgg.HeadLayer) []vgg.HeadLayer {
	if cfg.Dropout <= 0 {
		return nil
	}
	var out []vgg.HeadLayer
	for _, l := range ls {
		if l.Hidden {
			out = append(out, l)
		}
	}
	return out
}

// base adds the convolutional base from x to its NHWC feature map under s.
// In training mode, except in "features" mode, whose base stays in
// evaluation mode as in torchrun, BatchNorm normalises with batch
// statistics, and base returns the assignments of the updated running
// statistics; otherwise it uses the running statistics.
func (f *forwardSpec) base(s *op.Scope, x tf.Output, train bool) (h tf.Output, bnUpdates []*tf.Operation) {
	S := int64(f.cfg.ImageSize)
	// EnsureShape makes TensorFlow itself refuse images of another size,
	// with its own message; without it a 33×33 batch at S = 32 would pool
	// down to the same 1×1 map and pass unnoticed.
	h = op.EnsureShape(s.SubScope("images"), x, tf.MakeShape(-1, S, S, 3))
	bnTrain := train && f.cfg.Mode != ModeFeatures
	for _, l := range f.layers {
		ls := s.SubScope(fmt.Sprintf("features.%d", l.Index))
		if l.Pool {
			h = op.MaxPool(ls, h, []int64{1, 2, 2, 1}, []int64{1, 2, 2, 1}, "VALID")
			continue
		}
		w := f.vars[fmt.Sprintf("features.%d.weight", l.Index)]
		b := f.vars[fmt.Sprintf("features.%d.bias", l.Index)]
		h = op.Conv2D(ls, h, w.read, []int64{1, 1, 1, 1}, "SAME")
		h = op.BiasAdd(ls, h, b.read)
		if l.BN >= 0 {
			var upd []*tf.Operation
			h, upd = f.batchNorm(s.SubScope(fmt.Sprintf("features.%d", l.BN)), h, l.BN, bnTrain)
			bnUpdates = append(bnUpdates, upd...)
		}
		h = op.Relu(ls, h)
	}
	return h, bnUpdates
}

// classifier adds the head from the base's NHWC feature map h to the
// logits under s: the adaptive pool when the head has one (its output
// flattened in torch's C×H×W order), else a flatten in NHWC's H×W×C order
// (the first layer's rows are permuted to match, see layout.go), then each
// Linear layer, with ReLU after a hidden one and, when masks is not nil,
// the hidden activation multiplied by its dropout mask (masks[l.Dropout]).
// A dropout rate of 0 has no masks and so no dropout ops at all.
func (f *forwardSpec) classifier(s *op.Scope, h tf.Output, masks []tf.Output) tf.Output {
	side := f.cfg.ImageSize / 32
	if f.head.AdaptivePool() {
		h = adaptivePool(s.SubScope("avgpool"), h, side, vgg.PoolSize, 512)
	} else {
		h = op.Reshape(s.SubScope("flatten"), h, op.Const(s.SubScope("flatten_shape"), []int32{-1, int32(512 * side * side)}))
	}
	for _, l := range f.headLayers {
		ls := s.SubScope(fmt.Sprintf("classifier.%d", l.Index))
		w := f.vars[fmt.Sprintf("classifier.%d.weight", l.Index)]
		b := f.vars[fmt.Sprintf("classifier.%d.bias", l.Index)]
		h = op.BiasAdd(ls, op.MatMul(ls, h, w.read), b.read)
		if !l.Hidden {
			break
		}
		h = op.Relu(ls, h)
		if masks != nil && l.Dropout < len(masks) {
			// torch's nn.Dropout in training mode with the mask drawn in Go:
			// each element is 0 or 1/(1−p) (vgg.DropoutMask).
			h = op.Mul(s.SubScope(fmt.Sprintf("classifier.%d", l.Index+2)), h, masks[l.Dropout])
		}
	}
	return h
}

// adaptivePool is torch's AdaptiveAvgPool2d((out, out)) on an NHWC map h of
// side in with c channels, returning [N, c·out·out] in torch's C×H×W
// flattening order. TensorFlow has no adaptive pooling op (and AvgPool
// cannot make overlapping bins of different sizes), so the pooling is a
// constant matrix product: h is transposed to NCHW and reshaped to
// [N·c, in·in], and multiplied by poolMatrix(in, out) ([in·in, out·out]),
// whose column for output cell (i, j) holds 1/(rows·cols) over the input
// cells of the cell's bins (vgg.AdaptivePoolBins). Transpose, Reshape and
// MatMul all have C++ gradients. At in = out the matrix is the identity.
func adaptivePool(s *op.Scope, h tf.Output, in, out, c int) tf.Output {
	h = op.Transpose(s, h, op.Const(s.SubScope("nchw"), []int32{0, 3, 1, 2}))
	h = op.Reshape(s.SubScope("rows"), h, op.Const(s.SubScope("rows_shape"), []int32{-1, int32(in * in)}))
	h = op.MatMul(s, h, op.Const(s.SubScope("bins"), poolMatrix(in, out)))
	return op.Reshape(s.SubScope("flatten"), h, op.Const(s.SubScope("flatten_shape"), []int32{-1, int32(c * out * out)}))
}

// poolMatrix returns the [in·in][out·out] matrix of adaptivePool: entry
// [h·in+w][i·out+j] is 1/(|rows_i|·|cols_j|) when input row h is in output
// row i's bin and column w in output column j's bin, else 0.
func poolMatrix(in, out int) [][]float32 {
	start, end := vgg.AdaptivePoolBins(in, out)
	p := make([][]float32, in*in)
	for k := range p {
		p[k] = make([]float32, out*out)
	}
	for i := range out {
		for j := range out {
			w := float32(1 / float64((end[i]-start[i])*(end[j]-start[j])))
			for h := start[i]; h < end[i]; h++ {
				for x := start[j]; x < end[j]; x++ {
					p[h*in+x][i*out+j] = w
				}
			}
		}
	}
	return p
}

// bnMomentum and bnEps are torch's BatchNorm2d defaults (momentum 0.1,
// eps 1e-5). TF's exponential_avg_factor is torch's momentum: both compute
// running ← (1−m)·running + m·batch, with the unbiased batch variance
// (n/(n−1)) for the running variance and the biased one for normalising.
const (
	bnMomentum = 0.1
	bnEps      = 1e-5
)

// batchNorm is torchvision's BatchNorm2d as FusedBatchNormV3 (NHWC), the
// fused op whose gradient the C++ registry has (FusedBatchNorm's it lacks).
func (f *forwardSpec) batchNorm(s *op.Scope, h tf.Output, index int, train bool) (tf.Output, []*tf.Operation) {
	v := func(leaf string) *variable { return f.vars[fmt.Sprintf("features.%d.%s", index, leaf)] }
	mean, variance := v("running_mean"), v("running_var")
	y, newMean, newVar, _, _, _ := op.FusedBatchNormV3(s, h, v("weight").read, v("bias").read, mean.read, variance.read,
		op.FusedBatchNormV3Epsilon(bnEps), op.FusedBatchNormV3ExponentialAvgFactor(bnMomentum),
		op.FusedBatchNormV3DataFormat("NHWC"), op.FusedBatchNormV3IsTraining(train))
	if !train {
		return y, nil
	}
	return y, []*tf.Operation{
		op.AssignVariableOp(s.SubScope("update_mean"), mean.handle, newMean),
		op.AssignVariableOp(s.SubScope("update_var"), variance.handle, newVar),
	}
}

// newSlotFunc returns a function that makes an optimizer slot variable for
// a parameter, initialised to zeros by the returned init op.
func newSlotFunc(opt *op.Scope, prefix string) func(p *variable, slot string) (*variable, *tf.Operation) {
	return func(p *variable, slot string) (*variable, *tf.Operation) {
		name := p.name + "." + slot
		v := &variable{name: name, param: p.param, shape: p.shape}
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
func (m *model) buildOptimizer(cfg Config, s *op.Scope, trained []*variable, grads []tf.Output,
	newSlot func(*variable, string) (*variable, *tf.Operation)) error {
	lr := op.Const(s.SubScope("lr"), float32(cfg.LR))
	var wd tf.Output
	if cfg.WeightDecay != 0 {
		wd = op.Const(s.SubScope("weight_decay"), float32(cfg.WeightDecay))
	}
	var mom, zero, b1, b2 tf.Output
	switch {
	case cfg.Optimizer == "sgd" && cfg.Momentum != 0:
		mom = op.Const(s.SubScope("momentum"), float32(cfg.Momentum))
	case cfg.Optimizer == "adam":
		zero = op.Const(s.SubScope("beta_power"), float32(0))
		b1 = op.Const(s.SubScope("beta1"), float32(cfg.Beta1))
		b2 = op.Const(s.SubScope("beta2"), float32(cfg.Beta2))
		m.adamLR = op.Placeholder(s.SubScope("adam_lr"), tf.Float, op.PlaceholderShape(tf.ScalarShape()))
		m.adamEps = op.Placeholder(s.SubScope("adam_eps"), tf.Float, op.PlaceholderShape(tf.ScalarShape()))
	}
	// Every update waits for the whole backward pass. Without this an update can run while
	// a gradient still reads the variable's value, and TensorFlow then copies the variable
	// before updating it (copy-on-write): 411 MB per step for VGG16's classifier.0 at 224 px,
	// measured as the page-zeroing that made tfrun 5-12% slower than Keras (docs/benchmarks.md).
	backward := make([]*tf.Operation, len(grads))
	for i, g := range grads {
		backward[i] = g.Op
	}
	us := s.WithControlDependencies(backward...)
	for i, v := range trained {
		vs := us.SubScope(v.name)
		g := grads[i]
		if cfg.WeightDecay != 0 {
			g = op.AddV2(vs.SubScope("decayed"), g, op.Mul(vs.SubScope("decay"), wd, v.read))
		}
		var upd *tf.Operation
		switch {
		case cfg.Optimizer == "adam":
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

// placeGraph copies m's graph into a new graph whose every node asks for
// dev, and points m's handles at the copies. op.Gradients refuses scopes
// with a device and the C++ gradient builder leaves its nodes unplaced, so
// the graph is built without devices and placed here, through the C API's
// default device for imported nodes. Soft placement (see sessionConfig) then
// moves the few ops without a kernel for dev to the CPU.
func (m *model) placeGraph(dev string) error {
	var def bytes.Buffer
	if _, err := m.graph.WriteTo(&def); err != nil {
		return err
	}
	g := tf.NewGraph()
	if err := g.ImportWithOptions(def.Bytes(), tf.GraphImportOptions{Device: dev}); err != nil {
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
	for _, o := range []*tf.Output{&m.x, &m.labels, &m.adamLR, &m.adamEps, &m.logits, &m.loss, &m.correct, &m.trainLoss, &m.trainCorrect} {
		out(o)
	}
	for i := range m.masks {
		out(&m.masks[i])
	}
	for _, v := range append(append([]*variable(nil), m.params...), m.slots...) {
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

// scopeError drops the Go stack trace that op.Scope appends to the error of
// the first failed operation, keeping TensorFlow's message.
func scopeError(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, " (Stacktrace:"); i >= 0 {
		msg = msg[:i]
	}
	return errors.New("graph: " + msg)
}
