// Package tfrun trains fwbench's VGG models on TensorFlow through its C API
// (libtensorflow, via the github.com/galeone/tensorflow Go binding). It owns
// the TensorFlow side of the comparison: building VGG layer for layer from
// package vgg's table as a TensorFlow graph, training it (SGD with or
// without momentum and Nesterov, Adam, torch-style weight decay), evaluating
// it, and saving and loading weights and checkpoints in fwbench's canonical
// torchvision layout.
//
// It needs libtensorflow (TensorFlow 2.x C API: libtensorflow.so, or
// libtensorflow_cc.so.2 with libtensorflow_framework.so.2) at build and run
// time, and not libtorch: a Go program may import tfrun without torchrun.
// scripts/setup.sh provisions the library; . scripts/env.sh points cgo at it.
//
// # Model
//
// The graph is NHWC (TensorFlow's CPU Conv2D and MaxPool accept only NHWC),
// with the same layers, sizes, dropout and head as torchrun: 3×3 SAME
// convolutions with bias and ReLU, 2×2 max pooling, then the head that
// Config.Head names, built from vgg.Head.Layers: with vgg.HeadTorchvision
// torch's AdaptiveAvgPool2d((7, 7)) first, then flatten and the Linear
// layers, ReLU and Dropout after each hidden one (flatten and torchvision:
// Linear → ReLU → Dropout → Linear → ReLU → Dropout → Linear; keras:
// Linear → ReLU → Dropout → Linear). TensorFlow has no adaptive pooling
// op: the pool is a MatMul by a constant matrix that Go builds from
// vgg.AdaptivePoolBins (torch's bins, overlapping where the sides do not
// divide), after a transpose to NCHW so that its output is already in
// torch's C×H×W order. Weights live in resource variables (VarHandleOp)
// with unique shared names. Gradients come from TensorFlow's C++ gradient
// registry (Graph.AddGradients), taken with respect to the trained
// variables' ReadVariableOp outputs; the loss is
// SoftmaxCrossEntropyWithLogits on one-hot labels (the sparse op has no C++
// gradient).
//
// Dropout does not use TensorFlow's random numbers: each dropout layer is a
// Mul by a [batch, width] float32 mask input, which TrainStep fills every
// step with vgg.DropoutMask(Config.Seed, global step, layer, Config.Dropout)
// straight into a reused native tensor. The masks depend on the seed and
// the global step only, so a resumed run draws the same masks, and torchrun
// draws the very same ones. With Config.Dropout 0 the graph has no mask
// inputs and no dropout ops; evaluation and Logits never apply masks.
//
// Weight files use torchvision's layout; tfrun converts on load and save:
// convolution OIHW ↔ HWIO, linear [out, in] ↔ [in, out], and with the
// flattening heads the rows of the first classifier layer are permuted
// between torch's C×H×W flattening and NHWC's H×W×C (after the adaptive
// pool the graph flattens C×H×W itself).
//
// Initial weights are weights.Initial(Config.Weights, vgg.ParamsFor(...),
// Mode, Head, Seed, false), as in torchrun: without a file every tensor is
// seeded (per-name streams, so HeadFlatten's seeded values are those of
// earlier releases); with one, every tensor comes from the file except
// those the mode re-initialises on purpose (vgg.Reinitialised: in
// "finetune" and "features" the output layer always, with vgg.HeadKeras the
// whole head), and a missing, mis-shaped or unexpected tensor is an error
// wrapping ErrWeights that names each one. "scratch" takes every tensor
// from the file. What trains is vgg.Trainable: everything in "scratch" and
// "finetune"; in "features" the convolutional base is frozen (the graph
// holds no backward op for it at all, and its BatchNorm layers stay in
// evaluation mode), and with Config.FreezeLoadedHead so are the head layers
// from the file (torchvision's fc6 and fc7).
//
// The optimizers are TF's ResourceApplyGradientDescent, ResourceApplyMomentum
// and ResourceApplyAdam, fed so that each step equals torch.optim's (see
// buildOptimizer in graph.go for the derivation; Adam's epsilon is fed as
// ε·√(1−β2^t) because TF adds it outside the bias correction).
//
// Batch-normalised models (vgg*_bn) use FusedBatchNormV3 (NHWC, torch's
// eps 1e-5 and momentum 0.1 as exponential_avg_factor), whose gradient the
// C++ registry has (FusedBatchNorm's it lacks). Their evaluation graph is a
// second forward pass over the same variables with BatchNorm in inference
// mode; a training step also assigns the updated running statistics.
//
// # Devices and threads
//
// Config.Device "cpu", "cuda" or "cuda:N" (TensorFlow's /device:GPU:N): the
// graph is built without devices (the gradient builder leaves its nodes
// unplaced) and imported into the session's graph with that default
// device. The session uses explicit intra- and inter-op thread counts in
// pools of its own, soft placement and on-demand GPU memory; on the CPU it
// hides any GPU. Asking a CPU-only libtensorflow for a GPU fails in New with
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
// reports it). Drawing the two 8×4096 masks (vgg.DropoutMask, which
// torchrun calls as well) took 1.1–1.6 ms per step more on the same, busy,
// two cores: about 0.3% of a 64 px step, 0.03% at 224 px.
package tfrun
