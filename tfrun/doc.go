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
// # Data parallel
//
// NewParallel makes a Trainer one rank of a data-parallel run
// (recipe.Parallel) on TensorFlow's distributed runtime, through the C API
// only. It starts an in-process gRPC server (TF_NewServer, TF_ServerStart)
// for task Rank of a cluster with one job, "worker", whose tasks are
// Parallel.Workers, and opens the session against that server's target
// ("grpc://host:port") with device_filters "/job:worker/task:Rank" (the
// session uses only this rank's devices) and
// experimental.collective_group_leader "/job:worker/replica:0/task:0"
// (without a leader graph collectives never resolve their group); the
// ServerDef's default session config is the same ConfigProto, so the
// server's devices get the recipe's threads (a distributed session refuses
// per-session thread pools). The graph is the single-process one placed on
// "/job:worker/replica:0/task:Rank/device:CPU:0" (or GPU:N), plus, after
// the gradients: each trained parameter's gradient times a fed weight
// N·W/G (N this rank's images, W the world size, G the global batch: 1 for
// equal shards) goes through a CollectiveReduceV2 (group key 1, group size
// W, instance key the gradient's index + 1, merge_op Add, final_op Div,
// communication_hint ring, no timeout_seconds: see Failures),
// so that every rank applies Σ_r (N_r/G)·g_r, the gradient of the global
// batch's mean loss. The average comes before FP16's unscaling and inf/NaN
// check, so all ranks skip a step together. Each training step runs with
// RunOptions.experimental.collective_graph_key 1 (the ranks' masters then
// take the step's id from the leader's sequence; a graph whose instance
// keys are inputs gets no key of its own) and at FULL_TRACE.
//
// TrainStep takes this rank's shard of the global batch
// (dataset.Batch.Offset, GlobalN; a batch without GlobalN is refused when
// W > 1) and returns the rank's own loss (the mean over its shard) and
// correct count: the caller combines them over ranks. A Dropout layer's
// mask is rows [Offset, Offset+N) of model.DropoutMask over the global
// batch, the rows a single process would use for these images. BatchNorm
// normalises with the rank's own batch statistics and updates the rank's
// running statistics (torch DDP's default). Evaluate, Logits, Weights and
// checkpoints run no collective and see only this rank; the caller decides
// that rank 0 writes. Every rank must run the same number of training
// steps: a step whose peers never come fails after the collective timeout.
// With two ranks of global batch 16 the weights after 3 SGD steps of VGG11
// at 32 px equal one process's within 2.1e-6 (relative to each tensor's
// largest value), rank 0 and rank 1 bit for bit; one rank of world size 1
// trains bit for bit as New (TestParallelEqualsSingleProcess,
// TestParallelSettings). Info().Settings adds recipe.SettingBackend
// ("grpc+collective") and recipe.SettingWorldSize.
//
// CommSeconds is the time the training steps spent in the all-reduces and
// nothing else: per step, from the step's trace (a distributed session
// returns step stats only under FULL_TRACE), the time during which some
// CollectiveReduceV2 ran and no other node of the step did. It includes
// waiting for a slower rank; the part of an all-reduce hidden behind the
// backward pass does not count.
//
// Failures: a peer that dies while this rank waits in an all-reduce fails
// the step within about a second: gRPC reports the reset connection and
// TensorFlow aborts the server's collective executor ("Restart your
// program to reset"); the Trainer cannot train any more and should be
// closed. A peer that is alive but never joins is noticed in Go, not by
// CollectiveReduceV2's timeout_seconds, whose abort in TensorFlow 2.21
// completes the op before the ring's calls to the silent peer return and
// then crashes the process when they do (SIGSEGV or SIGABRT; once in CI,
// and here under load after 36 stalls, and after 2 with all gradients in
// one collective). A step that has run for
// Parallel.CollectiveTimeout() plus the longest step this rank has
// completed (twice the timeout for the first step) is abandoned: TrainStep
// returns an error, the Session.Run stays blocked in a goroutine, every
// later call returns ErrStalled, and Close frees nothing, leaving the
// session to the process's exit. So for TensorFlow the timeout bounds a
// step's wait beyond its usual length, where torch's bounds each
// collective. TestParallelPeerVanishes: 0.5 s after a peer is killed, 6.4 s
// for a peer that stalls with a 5 s timeout, and a peer 2 s late does not
// fail the step.
//
// A started gRPC server cannot be stopped: TF_ServerStop answers
// Unimplemented ("Clean shutdown is not currently implemented") and
// TF_DeleteServer would CHECK-fail on that answer and abort the process.
// Close therefore closes the session and frees the graph (it returns at
// once, also after a peer died) and leaves the server serving its port
// until the process exits; a later NewParallel in the same process needs
// other addresses (the same one fails with "Could not start gRPC server").
// Apart from that, several parallel Trainers may live in one process, each
// with its own server (the tests run two ranks in one process); the
// process-wide switches are shared as for New.
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
