// Package torchrun trains fwbench's VGG models on libtorch, PyTorch's C++
// library, from Go: it builds torchvision's VGG (11/13/16/19, with or without
// BatchNorm, from package vgg's table) with one of package vgg's heads
// (Config.Head) as a torch::nn module, trains it with torch::optim SGD or
// Adam on cross-entropy, evaluates it, and moves weights, checkpoints and
// optimizer state in and out in torchvision's canonical layout (package
// weights).
//
// # Initial weights and modes
//
// New composes the initial tensors with weights.Initial, the one place fwbench
// does it: without Config.Weights every tensor is seeded; with them, the model
// takes every tensor from them except those the mode re-initialises
// (vgg.Reinitialised: in finetune and features mode the output layer, and with
// HeadKeras the whole head, always start from the seed, even when the file's
// layer would fit; scratch takes everything from the file), and a tensor
// missing, of another shape or unknown to the model is an error wrapping
// ErrWeights. What trains is vgg.Trainable: everything in scratch and
// finetune mode; in features mode the head only, without its layers from the
// file when Config.FreezeLoadedHead is set.
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
// The head is built from vgg.Head.Layers with no per-head code: after the
// base, at::adaptive_avg_pool2d to 7×7 when Head.AdaptivePool (torchvision's
// AdaptiveAvgPool2d((7, 7))), then flatten in torch's C×H×W order, then the
// Linear layers, each hidden one followed by ReLU and dropout.
//
// A training step is one cgo call: the shim builds the input tensor from the
// batch's NHWC float32 buffer (from_blob, permuted to NCHW and copied), runs the
// forward pass, the loss, the backward pass and the optimizer update, and
// returns the loss. Every tensor the step creates is freed by C++ destructors
// before the call returns. gotorch instead hands each tensor to a Go finalizer
// and forces runtime.GC() on every step so that the finalizers free the native
// memory; on this project's 2-core test machine that forced collection cost
// measurable time per step (see BenchmarkGotorchGC) for no benefit when nothing
// native is left to the garbage collector, so torchrun's hot path uses neither
// gotorch tensors nor runtime.GC. Only the Trainer itself has a cleanup
// (runtime.AddCleanup), as a safety net behind Close.
//
// Dropout does not use libtorch's random generator: for every step Go draws
// each hidden head layer's mask with vgg.DropoutMask(Config.Seed, step, layer)
// (values 0 or 1/(1-p)) into a buffer the Trainer reuses, and the step's one
// native call multiplies the layer's activation after ReLU by it. The masks
// depend on (Seed, global step, layer) only, so a run resumed from a
// checkpoint draws the same masks as an uninterrupted one without saving any
// RNG state, two Trainers in one process do not disturb each other, the masks
// are the same on every device, and tfrun drops the very same units. With
// Dropout 0 no mask is drawn or applied; evaluation never applies one.
//
// # Threads
//
// Each Trainer makes all its native calls from one goroutine locked to one OS
// thread, so libtorch's per-thread state (its OpenMP team, its malloc arena)
// is created once rather than on every thread Go happens to run a call on;
// this keeps resident memory flat over a long run (see worker.go).
//
// New sets libtorch's intra-op thread count (Config.Threads, default
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
