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
// # Precision and the settings that decide speed
//
// recipe.Config.Precision: FP32 (the default) and TF32 build the graph in
// float32; TF32 only turns TensorFloat-32 products on. BF16 and FP16 are
// mixed precision with float32 master weights, built as explicit casts
// with torch autocast's semantics (so that both frameworks round the same
// values), not by grappler's auto-mixed-precision rewrite: Conv2D,
// DepthwiseConv2dNative and MatMul (with their BiasAdd) take casts of
// their input, weight and bias to bfloat16 or float16; FusedBatchNormV3
// takes the low map with float32 scale, offset and statistics (T low, U
// float32); ReLU, Relu6, the paddings, MaxPool and the residual AddV2 run
// in whatever type reaches them (AddV2 of two types promotes both to
// float32); the adaptive pool accumulates in float32 and rounds its result
// back to the type it got; a Dropout mask multiply promotes to float32 as
// torch's does; the logits are cast to float32 before the cross-entropy,
// and Logits and Evaluate see float32 logits. Variables, gradients as the
// optimizer sees them (Cast's gradient casts back), optimizer slots and
// BatchNorm statistics stay float32. The CPU kernels of
// tensorflow-cpu 2.21 exist for bfloat16 and float16 for every op the
// graph and its gradients use. Evaluation runs in the training precision.
//
// FP16 adds dynamic loss scaling in the graph, torch.amp.GradScaler's rule
// with its defaults (recipe.LossScale*): the gradients are taken of the
// loss times a scale variable and multiplied by its float32 reciprocal; a
// step with an inf or a NaN among them runs no optimizer update (each
// update's gradient passes a Switch whose live output is dead on such a
// step, tf.cond v1's control flow), so no weight, momentum or Adam slot
// changes and Adam's step count stays; BatchNorm's running statistics and
// the dropout step still advance, as in torch. The scale is halved on such
// a step and doubled after 2000 finite ones in a row; scale and tracker are
// variables, saved in checkpoints (recipe.MetaLossScale,
// MetaLossScaleTracker). Trainer.LossScale reads the scale.
//
// XLA (recipe.Config.XLA) compiles the step by auto-clustering: the
// session's global_jit_level is ON_1 (OFF without --xla). On the CPU XLA
// also needs MarkForCompilationPassFlags.tf_xla_cpu_global_jit, which
// TensorFlow reads once, when the first graph of the process is optimized;
// tfrun's init therefore sets it (TF_SetTfXlaCpuGlobalJit, as
// TF_XLA_FLAGS=--tf_xla_cpu_global_jit would), which changes nothing for
// sessions whose jit level is OFF. TestXLA finds the _XlaCompile and
// _XlaRun nodes in the partition graph and _XlaRun in the step stats.
// libtorch has no counterpart.
//
// Op determinism (recipe.Config.Deterministic, what
// tf.config.experimental.enable_op_determinism sets), TF32 (on only for
// precision tf32; TensorFlow's default is on) and, on a GPU, cuDNN
// autotuning (recipe.Config.CUDNNBenchmark as TF_CUDNN_USE_AUTOTUNE; the
// default is on) are process-wide in TensorFlow. The C API has no call for
// them, so switches.cc calls tsl::EnableOpDeterminism,
// tsl::enable_tensor_float_32_execution and tsl::CudnnUseAutotune, which
// libtensorflow_framework.so.2 exports (a C++ compiler builds tfrun). New
// sets them before its session runs and reads them back; while a Trainer
// lives, a New that asks for other values fails with ErrSwitches.
//
// Info().Settings holds every recipe.SettingKeys key: precision; tf32 and
// deterministic as the library reads them back; memory_format "NHWC", the
// layout tfrun builds (on a GPU grappler's layout optimizer may still
// transpose convolutions to NCHW inside the session, which tfrun does not
// read back); cudnn_benchmark as the kernels read it on a GPU, "false" on
// the CPU, where TensorFlow autotunes nothing; xla.
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
