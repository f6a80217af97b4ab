// ncclplugin.h: the interface between parallel.cc and the NCCL plugin
// (nccl/plugin.cc, built into libfwbench_nccl.so by scripts/setup.sh when
// FWBENCH_NCCL_SITE is set).
//
// c10d's ProcessGroupNCCL lives in libtorch_cuda.so, and its header needs the
// CUDA and NCCL headers, which a CPU libtorch does not ship: torchrun itself
// is built without them and loads libtorch_cuda.so at run time. The plugin is
// compiled where a CUDA build of torch is installed with its nvidia-* wheels
// (headers included), and parallel.cc dlopens it by name when a data-parallel
// group is asked for on CUDA. Both sides are compiled against the same torch
// headers (the pinned version): the objects that cross are c10d's own.
#ifndef TORCHRUN_NCCLPLUGIN_H
#define TORCHRUN_NCCLPLUGIN_H

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <cstdint>

#define TR_NCCL_PLUGIN "libfwbench_nccl.so"

extern "C" {

// fwbench_nccl_built_for returns what the plugin was compiled against:
// "torch X.Y.Z nccl A.B.C".
typedef const char *(*tr_nccl_built_for_fn)();

// fwbench_nccl_check returns nullptr when the NCCL that is loaded (by
// libtorch_cuda.so) has the major and minor version the plugin was compiled
// against, else the reason, valid until the calling thread's next call.
typedef const char *(*tr_nccl_check_fn)();

// fwbench_nccl_new checks as fwbench_nccl_check does, then sets *out to a
// c10d::ProcessGroupNCCL of world ranks over store (its keys under the prefix
// "fwbench/nccl/"), with timeout_ms as its collectives' timeout. It returns
// nullptr, or an error message valid until the calling thread's next call.
typedef const char *(*tr_nccl_new_fn)(const c10::intrusive_ptr<c10d::Store> *store, int32_t rank, int32_t world,
                                      int64_t timeout_ms, c10::intrusive_ptr<c10d::Backend> *out);
}

#endif
