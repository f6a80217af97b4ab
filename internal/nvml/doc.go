// Package nvml measures how much GPU memory a process holds, through NVIDIA's
// management library (NVML, libnvidia-ml.so.1, which the NVIDIA driver
// installs). compare uses it to report the same peak-memory figure for every
// framework, whatever its allocator.
//
// # No link-time dependency
//
// The library is loaded at run time with dlopen, never linked: fwbench builds,
// and this package's tests run, on machines without a GPU or a driver. Open
// then fails with an error wrapping ErrUnavailable; so does everything in a
// build without cgo.
//
// # What is measured
//
// Lib.ProcessUsedBytes is NVML's per-process figure: the usedGpuMemory of the
// process's entry in nvmlDeviceGetComputeRunningProcesses (the _v3 entry
// point where the driver has it, else _v2, else the first version). It is
// what nvidia-smi's process table shows: all device memory the driver has
// mapped for the process, its CUDA context (a few hundred MiB: kernels,
// cuBLAS/cuDNN workspaces) included, and everything a framework's caching
// allocator has reserved, in use or not. It is therefore larger than an
// allocator's own "peak allocated" figure (torch.cuda.max_memory_allocated),
// and it is the same measurement for every framework.
//
// NVML reports current use, not a peak. StartPeak samples the figure in a
// goroutine (compare: every 20 ms) and keeps the largest value; a peak
// shorter than the interval can be missed, which caching allocators make
// unlikely (they keep what they reserved). A sampling error ends the
// sampling and is returned by Peak.Stop.
//
// The struct that the process query fills changed size between drivers
// (16 bytes in the first version, 24 in _v2 and _v3, 32 in the _v3 of the
// 535.43 to 535.86 drivers); pid and usedGpuMemory sit at the same offsets
// in all of them. Only the stride between entries differs, and it is read
// from the bytes the driver wrote (parseProcs), not assumed.
//
// # Limits
//
// NVML names processes by their pid in the host's PID namespace. A process
// in a container with its own PID namespace is not found under os.Getpid():
// ProcessUsedBytes then returns ErrNotListed, and so does Peak.Stop when the
// process was never listed. Processes under MPS are listed by another call
// and are not seen. On Windows (WDDM) NVML has no per-process figure.
package nvml
