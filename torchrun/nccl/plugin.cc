// plugin.cc: libfwbench_nccl.so, torchrun's bridge to c10d's ProcessGroupNCCL
// (see ../ncclplugin.h for why it is a separate library). scripts/setup.sh
// builds it when FWBENCH_NCCL_SITE names the site-packages of a CUDA build of
// torch with the nvidia-* wheels it was made with.
#define USE_C10D_NCCL 1

#include "../ncclplugin.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/headeronly/version.h>

#include <nccl.h>

#include <chrono>
#include <exception>
#include <string>

namespace {

#define TR_STR2(x) #x
#define TR_STR(x) TR_STR2(x)

thread_local std::string g_err;

const char *fail(const std::string &s) {
  g_err = s;
  return g_err.c_str();
}

}  // namespace

extern "C" {

// fwbench_nccl_built_for: see tr_nccl_built_for_fn.
__attribute__((visibility("default"))) const char *fwbench_nccl_built_for() {
  return "torch " TORCH_VERSION " nccl " TR_STR(NCCL_MAJOR) "." TR_STR(NCCL_MINOR) "." TR_STR(NCCL_PATCH);
}

// fwbench_nccl_check: see tr_nccl_check_fn.
__attribute__((visibility("default"))) const char *fwbench_nccl_check() {
  // ProcessGroupNCCL::Options' layout depends on the NCCL version the header
  // saw (NCCLUtils.hpp's NCCL_HAS_* switches): the NCCL that libtorch_cuda.so
  // loaded must be the one this plugin was compiled against.
  int v = 0;
  ncclResult_t r = ncclGetVersion(&v);
  if (r != ncclSuccess) return fail(std::string("ncclGetVersion: ") + ncclGetErrorString(r));
  int major = v / 10000, minor = (v / 100) % 100;
  if (v < 10000) major = v / 1000, minor = (v / 100) % 10;  // before 2.9, 2.8.x was 2800 + x
  if (major != NCCL_MAJOR || minor != NCCL_MINOR) {
    return fail("the loaded NCCL is " + std::to_string(major) + "." + std::to_string(minor) +
                ", the NCCL plugin was built for " TR_STR(NCCL_MAJOR) "." TR_STR(NCCL_MINOR) +
                " (rebuild it against this torch: FWBENCH_NCCL_SITE=<site-packages> scripts/setup.sh)");
  }
  return nullptr;
}

// fwbench_nccl_new: see tr_nccl_new_fn.
__attribute__((visibility("default"))) const char *fwbench_nccl_new(const c10::intrusive_ptr<c10d::Store> *store,
                                                                     int32_t rank, int32_t world, int64_t timeout_ms,
                                                                     c10::intrusive_ptr<c10d::Backend> *out) {
  try {
    if (const char *e = fwbench_nccl_check()) return e;
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    // NCCL's keys (the unique id) under their own prefix in the shared store.
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("fwbench/nccl/", *store);
    *out = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world, opts);
    return nullptr;
  } catch (const c10::Error &e) {
    return fail(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown C++ exception");
  }
}

}  // extern "C"
