// Package torchrun trains fwbench's VGG models on libtorch, PyTorch's C++
// library, from Go: it builds torchvision's VGG (11/13/16/19, with or without
// BatchNorm, from package vgg's table) as a torch::nn module, trains it with
// torch::optim SGD or Adam on cross-entropy, evaluates it, and moves weights,
// checkpoints and optimizer state in and out in torchvision's canonical layout
// (package weights).
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
// Dropout masks come from a generator private to each Trainer, reseeded at
// every step from (Config.Seed, step number): a run resumed from a checkpoint
// draws the same masks as an uninterrupted one without saving any RNG state,
// and two Trainers in one process do not disturb each other's masks. Masks are
// drawn on the CPU, so they are the same on every device.
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
