// Package tfrun trains fwbench's models on TensorFlow through its C API
// (libtensorflow, via the github.com/galeone/tensorflow Go binding). It owns
// the TensorFlow side of the comparison: interpreting a model.Net (VGG,
// ResNet, MobileNetV2, any entry of package model's table) as a TensorFlow
// graph, training it with a recipe.Config (SGD with or without momentum and
// Nesterov, Adam, torch-style weight decay), evaluating it, and reading its
// weights and saving and loading checkpoints in fwbench's canonical
// torchvision layout.
//
// It needs libtensorflow (TensorFlow 2.x C API: libtensorflow.so, or
// libtensorflow_cc.so.2 with libtensorflow_framework.so.2) at build and run
// time, and not libtorch: a Go program may import tfrun without torchrun.
// scripts/setup.sh provisions the library; . scripts/env.sh points cgo at it.
//
// # Model
//
// New builds the recipe's model (recipe.Config.Net) and walks its layers,
// in their topological order, with one generic builder that holds no
// per-model code. The graph is NHWC (TensorFlow's CPU convolutions and pools
// accept only NHWC); each layer becomes:
//
//   - Conv: Conv2D with an HWIO filter, or, for a depthwise convolution
//     (Groups = channels), DepthwiseConv2dNative with a [k, k, C, 1]
//     filter; BiasAdd when it has a bias. With stride 1 and padding (k−1)/2
//     TensorFlow's SAME padding is torch's; otherwise the map is
//     zero-padded explicitly (Pad) and convolved VALID, because SAME pads a
//     stride-2 map asymmetrically where torch pads both sides equally.
//   - BatchNorm: FusedBatchNormV3 (torch's eps 1e-5, and its momentum 0.1
//     as exponential_avg_factor), whose gradient the C++ registry has.
//   - ReLU, ReLU6: Relu, Relu6. Add (a residual connection): AddV2.
//   - MaxPool: padded with −∞ (PadV2), so that padding never wins, then
//     MaxPool VALID.
//   - AdaptiveAvgPool: at output side 1 the mean over H and W; otherwise,
//     since TensorFlow has no adaptive pooling op, a MatMul by a constant
//     matrix that Go builds from model.AdaptivePoolBins (torch's bins,
//     overlapping where the sides do not divide); at an input already of
//     the output's size, nothing.
//   - Flatten: a transpose to NCHW and a reshape, so that features are in
//     torch's C×H×W order and Linear weights need no row permutation.
//   - Linear: MatMul and BiasAdd. Dropout: a Mul by a mask input (below).
//
// Weights live in resource variables (VarHandleOp) with unique shared names.
// Gradients come from TensorFlow's C++ gradient registry
// (Graph.AddGradients), taken with respect to the trained variables'
// ReadVariableOp outputs; the loss is SoftmaxCrossEntropyWithLogits on
// one-hot labels (the sparse op has no C++ gradient). The evaluation pass
// shares the training pass's ops up to the first layer whose output differs
// in evaluation mode (a BatchNorm trained with batch statistics, a Dropout)
// and builds only the rest again.
//
// Dropout does not use TensorFlow's random numbers: each Dropout layer is a
// Mul by a [batch, width] float32 mask input, which TrainStep fills every
// step with model.DropoutMask(Seed, global step, layer.Mask, Dropout)
// straight into a reused native tensor. The masks depend on the seed and
// the global step only, so a resumed run draws the same masks, and torchrun
// draws the very same ones. With Dropout 0 the graph has no mask inputs and
// no dropout ops; evaluation and Logits never apply masks.
//
// Weights use torchvision's layout outside tfrun; it converts on the way in
// and out: convolution OIHW ↔ HWIO, depthwise OIHW ↔ HWOI, linear
// [out, in] ↔ [in, out].
//
// New takes the initial tensors composed by the caller (weights.Initial
// composes a weights file with the mode's re-initialised layers), or nil for
// every tensor seeded (weights.InitParams). What trains is Net.Trainable:
// everything in scratch and finetune modes; in features mode the base is
// frozen (the graph holds no backward op for it at all, and its BatchNorm
// layers stay in evaluation mode), and with FreezeLoadedHead so are the head
// layers from the file.
//
// The optimizers are TF's ResourceApplyGradientDescent, ResourceApplyMomentum
// and ResourceApplyAdam, fed so that each step equals torch.optim's (see
// buildOptimizer in graph.go for the derivation; Adam's epsilon is fed as
// ε·√(1−β2^t) because TF adds it outside the bias correction).
//
// # Devices and threads
//
// Device "cpu", "cuda" or "cuda:N" (TensorFlow's /device:GPU:N): the graph
// is built without devices (the gradient builder leaves its nodes unplaced)
// and imported into the session's graph with that default device. The
// session uses explicit intra- and inter-op thread counts in pools of its
// own, soft placement and on-demand GPU memory; on the CPU it hides any
// GPU. Asking a CPU-only libtensorflow for a GPU fails in New with
// TensorFlow's placement error and the list of devices the library has.
//
// TensorFlow sizes one process-wide intra-op pool from the first session
// unless TF_OVERRIDE_GLOBAL_THREADPOOL is set, so tfrun's init sets it to 1
// when the program has not set it; each Trainer then gets the Threads it
// asks for. TensorFlow's own C++ logging (oneDNN notices, rendezvous
// warnings after a failed step) goes to stderr; TF_CPP_MIN_LOG_LEVEL=2
// silences it. tfrun itself never prints.
//
// # Concurrency and memory
//
// A Trainer is not safe for concurrent use: a call that overlaps another on
// the same Trainer returns ErrBusy. Several Trainers may live in one process.
// Close frees the variables, the session and the graph at once; it is
// idempotent, and later calls return ErrClosed. Input tensors are allocated
// once and refilled in place, fetched tensors are freed as soon as they are
// read, so a training loop's native memory stays flat without waiting for
// Go's garbage collector.
//
// A step runs inside one Session.Run, which the C API cannot interrupt:
// a cancelled context is noticed before and between native calls.
//
// Trainer.GoOverhead reports the time TrainStep spends in Go outside
// Session.Run (checking and copying the batch, drawing the dropout masks,
// the feeds, reading the loss). For VGG16 with a batch of 8 on two cores it
// measured 0.09–0.2 ms of a 0.37 s step at 64 px and 0.3–1.3 ms of a 5.3 s
// step at 224 px before the masks were drawn in Go (BenchmarkTrainStep
// reports it). Drawing the two 8×4096 masks (model.DropoutMask, which
// torchrun calls as well) took 1.1–1.6 ms per step more on the same, busy,
// two cores: about 0.3% of a 64 px step, 0.03% at 224 px.
package tfrun
