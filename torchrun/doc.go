// Package torchrun trains fwbench's models on libtorch, PyTorch's C++
// library, from Go: it takes one recipe.Config and the model it names
// (model.Net: VGG 11/13/16/19 with or without BatchNorm and their heads,
// ResNet-18, ResNet-50, MobileNetV2), builds the net in libtorch, trains it
// with torch::optim SGD or Adam on cross-entropy, evaluates it, and moves
// weights, checkpoints and optimizer state in and out in torchvision's
// canonical names and layouts (package weights).
//
// # One interpreter, no model code
//
// torchrun holds no code for any model. New hands the Net's layers to the C++
// side as a table (op, inputs, channels, kernel, stride, padding, groups,
// name, head flag); one generic interpreter creates each layer's tensors under
// its torchvision name (Name + ".weight", ".bias", ".running_mean",
// ".running_var") and runs the layers in order with ATen's functional ops:
// conv2d (stride, padding, groups: depthwise convolutions too), batch_norm
// (model.BNMomentum, model.BNEps; it updates the running statistics in place
// in training mode), relu and hardtanh(0, 6) (in place where torchvision's
// are: the input's only reader, and the producer's backward pass does not read
// its output), max_pool2d with padding, adaptive_avg_pool2d, add (a residual
// connection; in place, as torchvision's `out += identity`), flatten in
// torch's C×H×W order, linear, and a multiply by the step's dropout mask. A
// layer's output is freed as soon as its last reader has run. A new model is a
// new entry in package model, not a change here.
//
// # Initial weights and modes
//
// New takes the initial tensors as they are: every tensor of the Net and no
// other (weights.Arrange), else an error wrapping ErrWeights; nil means
// weights.InitParams(net.Params, Seed). Composing a weights file with the
// tensors a mode re-initialises is the caller's job, done once for all of
// fwbench by weights.Initial. What trains is model.Net.Trainable: everything
// in scratch and finetune mode; in features mode the head only, without its
// layers from the file when recipe.Config.FreezeLoadedHead is set. In
// features mode the layers outside the head also run without autograd and
// with BatchNorm in eval mode (a fixed feature extractor, as Keras keeps a
// frozen base).
//
// New checks the recipe with recipe.Config.Validate and returns its error
// unchanged, so torchrun refuses a bad recipe with the same message as every
// other entry point of fwbench.
//
// # Precision and the settings that decide speed
//
// recipe.Config.Precision fp32 (the default) trains in float32 with TF32 off
// for both cuBLAS and cuDNN (libtorch's own default leaves cuDNN's on); tf32
// (CUDA only) turns both on. bf16 and fp16 are mixed precision as
// torch.autocast and torch.amp.GradScaler make it: the forward pass of every
// step, evaluation and Logits runs inside an autocast scope (the C++ state that
// torch.autocast's __enter__ and __exit__ set: enabled and type for the device,
// nesting, cast cache cleared on exit, the previous state restored), so conv2d
// and linear compute in bf16/fp16 and every other op in the type that reaches
// it (the dropout multiply by a float32 mask promotes back to float32). The
// loss is the cross-entropy of the logits cast to float32, outside autocast;
// parameters, gradients, optimizer state and BatchNorm's running statistics
// stay float32, and Logits returns float32. fp16 adds dynamic loss scaling
// with recipe.LossScale*: the backward pass runs on the loss times the scale,
// the gradients are unscaled (at::_amp_foreach_non_finite_check_and_unscale_),
// a step with a non-finite gradient is skipped entirely (no parameter, slot or
// Adam step changes; the Trainer's step counter, the dropout mask index, still
// advances), and the scale is updated as GradScaler does
// (at::_amp_update_scale_). Trainer.LossScale reports it, and checkpoints carry
// it with its growth tracker (recipe.MetaLossScale, MetaLossScaleTracker).
//
// ChannelsLast stores the 4-D convolution weights and the input in
// torch.channels_last, as model.to(memory_format=torch.channels_last) and
// x.contiguous(memory_format=torch.channels_last) do, so activations follow;
// weights, optimizer state and checkpoints still move in and out in
// torchvision's layouts, bit for bit. CUDNNBenchmark sets cuDNN's autotuner.
// Deterministic calls setDeterministicAlgorithms(true, warn_only false), so an
// op without a deterministic kernel fails the step rather than run (on CUDA:
// VGG's adaptive average pool backward), and, on a CUDA device, sets
// CUBLAS_WORKSPACE_CONFIG=:4096:8 unless the environment already has it (cuBLAS
// reads it when it starts). XLA has no libtorch counterpart (torch.compile is
// Python-only) and is reported as recipe.NotApplicable. The TF32, autotuner
// and deterministic switches are process-wide: the latest New decides them for
// every Trainer in the process.
//
// Info().Settings reads every recipe.SettingKeys key back from libtorch after
// New has set it (tf32 is "true" only when cuBLAS's and cuDNN's switches are
// both on; memory_format is "channels_last" only when every 4-D tensor of the
// model is), with cudnn_allow_tf32, cublas_allow_tf32, mkldnn, autocast_dtype
// and inter_op_threads besides.
//
// # Data-parallel training
//
// NewParallel makes one rank of a data-parallel run (recipe.Parallel) on
// libtorch's c10d, from C++ without Python: rank 0 serves a c10d::TCPStore at
// Parallel.Store, every rank connects to it and joins a c10d::ProcessGroupGloo
// over it (parallel.cc). libtorch has no C++ DistributedDataParallel, so the
// gradient averaging is torchrun's own and follows DDP's rules: the trained
// parameters (frozen ones are not reduced) are grouped into buckets in reverse
// order (1 MiB for the first, 25 MiB for the others, DDP's caps); a hook on
// each parameter's gradient accumulator copies its gradient, times 1/world
// size, into its bucket as soon as the backward pass has produced it, and a
// full bucket is all-reduced (sum) at once, in bucket order on every rank, so
// communication overlaps the rest of the backward pass. After the backward
// pass the step waits for the buckets (Trainer.CommSeconds adds up these waits:
// the communication not hidden behind the backward pass), writes the averages
// back as the gradients and only then unscales them (fp16: every rank sees the
// same infinities and skips the same steps) and updates; every rank holds the
// same parameters after every step. Each rank trains on its shard of the
// global batch (dataset.LoaderConfig.Shard): BatchNorm uses the shard's own
// statistics (DDP's default; torchrun does not broadcast the running
// statistics, which only rank 0 saves and which DDP's broadcast would set to
// rank 0's anyway), and the dropout masks are the rows [Offset, Offset+N) of
// the masks a single process would draw for the whole global batch
// (model.DropoutMask over Global()·width values), so 2 ranks on 8 images each
// train as 1 process on 16. TrainStep returns the rank's own loss (mean over
// its shard) and correct count; Evaluate, Logits, Weights and checkpoints stay
// local. Info().Settings adds recipe.SettingBackend ("gloo"),
// recipe.SettingWorldSize and gloo_device (what Gloo binds).
//
// Gloo's device binds the interfaces in $GLOO_SOCKET_IFNAME when it is set, as
// torch does; otherwise 127.0.0.1 when the store's host is a loopback address
// or "localhost", else this machine's address on the route to the store's host
// (the local address of a UDP socket connected to it). torch's own default, the
// address this machine's hostname resolves to, is avoided: in containers it
// often is not reachable, which is why torch users set GLOO_SOCKET_IFNAME=lo.
// Parallel.CollectiveTimeout() bounds the store's waits, the join and every
// all-reduce: a peer that closes makes the other ranks' next step fail at once
// (Gloo sees the connection close), a peer that stops stepping makes it fail
// after the timeout; a rank whose step failed refuses further steps. Close
// leaves the group; rank 0 keeps serving the store until every rank has closed
// (at most the timeout, capped at 30 s), so the ranks may close in any order.
//
// ProcessGroupGloo.hpp includes gloo's headers, which libtorch does not ship;
// cinclude/gloo holds the few declarations it needs (gloo's types reach
// ProcessGroupGloo only through smart pointers, and torchrun calls nothing of
// gloo's itself; see cinclude/gloo/fwbench_decl.h). CUDA has no process group
// here: ProcessGroupNCCL is in libtorch_cuda.so, which torchrun loads at run
// time and does not link, so NewParallel refuses a CUDA device with an error
// wrapping errors.ErrUnsupported.
//
// # Native library
//
// torchrun is a cgo package. It needs libtorch (headers to build; libc10.so and
// libtorch_cpu.so to link and run) and nothing from TensorFlow: a program that
// imports torchrun does not need libtensorflow. scripts/setup.sh provisions
// libtorch and scripts/env.sh exports the compiler and linker flags that `go
// build` needs. CUDA is optional at run time: torchrun links libtorch_cpu only
// and, at its first native call in the process, loads libtorch_cuda.so by name
// with dlopen (libtorch must see its CUDA half before it first asks for CUDA,
// and caches the answer). When the library is missing, CPU work is unaffected,
// CUDADevices is empty and New reports the loader's message for a "cuda" device.
//
// # Design
//
// The C++ side (shim.cc, behind the C interface of shim.h) follows gotorch's
// error contract — every function returns NULL or a message, every body is in
// try/catch — but torchrun turns messages into Go errors and never panics, so a
// libtorch error (a shape mismatch, an unknown device, CUDA out of memory)
// comes back as "torchrun: <op>: <libtorch message>".
//
// A training step is one cgo call: the shim builds the input tensor from the
// batch's NHWC float32 buffer (from_blob, permuted to NCHW and copied in the
// model's memory format), runs the forward pass, the loss, the backward pass
// and the optimizer update (with fp16's loss scaling), and returns the loss. Every tensor the step creates is freed by C++ destructors
// before the call returns. gotorch instead hands each tensor to a Go finalizer
// and forces runtime.GC() on every step so that the finalizers free the native
// memory; on this project's 2-core test machine that forced collection cost
// measurable time per step (see BenchmarkGotorchGC) for no benefit when nothing
// native is left to the garbage collector, so torchrun's hot path uses neither
// gotorch tensors nor runtime.GC. Only the Trainer itself has a cleanup
// (runtime.AddCleanup), as a safety net behind Close.
//
// Dropout does not use libtorch's random generator: for every step Go draws
// each Dropout layer's mask with model.DropoutMask(Seed, step, layer's Mask)
// (values 0 or 1/(1-p), one per value of the layer's input) into a buffer the
// Trainer reuses, and the step's one native call multiplies the layer's input
// by it. The masks depend on (Seed, global step, layer) only, so a run resumed
// from a checkpoint draws the same masks as an uninterrupted one without
// saving any RNG state, two Trainers in one process do not disturb each
// other, the masks are the same on every device, and tfrun drops the very
// same units. With Dropout 0 no mask is drawn or applied; evaluation never
// applies one.
//
// # Threads
//
// Each Trainer makes all its native calls from one goroutine locked to one OS
// thread, so libtorch's per-thread state (its OpenMP team, its malloc arena)
// is created once rather than on every thread Go happens to run a call on;
// this keeps resident memory flat over a long run (see worker.go).
//
// New sets libtorch's intra-op thread count (recipe.Config.Threads, default
// runtime.NumCPU(); gotorch's init sets half that, New overrides it) and every
// native call re-applies it when the calling thread disagrees, because OpenMP
// keeps the setting per thread. The count is process-wide: with several
// Trainers in one process, the most recent New decides it for all of them.
// The inter-op pool can be sized once per process, before it is first used;
// later requests are ignored.
//
// # Concurrency
//
// A Trainer is not safe for concurrent use: overlapping calls on one Trainer
// return ErrBusy. Different Trainers may be used from different goroutines.
// Context cancellation is checked before each native call; a step in
// progress runs to its end.
package torchrun
