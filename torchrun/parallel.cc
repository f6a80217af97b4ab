// parallel.cc: torchrun's data-parallel side on libtorch's c10d, without
// Python: a c10d::TCPStore rendezvous (rank 0 serves it), a
// c10d::ProcessGroupGloo over it, and a gradient reducer with torch DDP's
// semantics (libtorch has no C++ DistributedDataParallel). See shim.h for the
// error contract and parallel.h for the reducer.
//
// ProcessGroupGloo.hpp is only compiled with USE_C10D_GLOO and includes gloo's
// headers, which libtorch does not ship; cinclude/gloo/ declares the little
// the header needs (see cinclude/gloo/fwbench_decl.h for why that is sound).
// On CUDA the process group is c10d's ProcessGroupNCCL, made by the NCCL
// plugin (ncclplugin.h), which this file dlopens.
#define USE_C10D_GLOO 1

#include "parallel.h"
#include "ncclplugin.h"

#include <dlfcn.h>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstring>
#include <exception>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

// The catch clauses of shim.cc's TR_CATCH: no exception leaves extern "C".
#define TRP_TRY try {
#define TRP_CATCH                                                          \
  }                                                                        \
  catch (const c10::Error &e) {                                            \
    return trddp::message(e.what_without_backtrace());                     \
  }                                                                        \
  catch (const std::exception &e) {                                        \
    return trddp::message(e.what());                                       \
  }                                                                        \
  catch (...) {                                                            \
    return trddp::message("unknown C++ exception");                        \
  }                                                                        \
  return nullptr;

// The store key every rank adds 1 to when it closes: rank 0, whose process
// serves the store, waits for all of them before it stops serving.
const char kClosedKey[] = "fwbench/closed";

// DDP's bucket caps: 1 MiB for the first bucket (the last layers, whose
// gradients come first), 25 MiB for the others (bucket_cap_mb).
constexpr int64_t kFirstBucketBytes = 1 << 20;
constexpr int64_t kBucketBytes = 25 << 20;

}  // namespace

struct tr_group {
  int rank = 0, world = 0;
  bool nccl = false;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> pg;
};

namespace trddp {

class Reducer {
 public:
  Reducer(c10::intrusive_ptr<c10d::Backend> pg, int world, std::chrono::milliseconds timeout)
      : pg_(std::move(pg)), inv_world_(1.0 / world), timeout_(timeout) {}

  ~Reducer() {
    for (auto &s : slots_) {
      try {
        if (s.acc) s.acc->del_post_hook(s.hook);
      } catch (...) {
      }
    }
  }

  void attach(const std::vector<at::Tensor> &params, const std::shared_ptr<Reducer> &self);
  void begin();
  double finish();
  void ready(size_t slot);

 private:
  struct Slot {
    at::Tensor param;
    size_t bucket = 0;
    int64_t offset = 0, numel = 0;
    bool ready = false;
    std::shared_ptr<torch::autograd::Node> acc;  // the parameter's AccumulateGrad: kept alive, as DDP does
    uintptr_t hook = 0;
  };
  struct Bucket {
    at::Tensor flat;  // float32, on the parameters' device
    std::vector<size_t> slots;
    size_t pending = 0;
    bool launched = false;
    c10::intrusive_ptr<c10d::Work> work;
  };

  at::Tensor view(const Slot &s) { return buckets_[s.bucket].flat.narrow(0, s.offset, s.numel).view(s.param.sizes()); }
  void launch_in_order();

  c10::intrusive_ptr<c10d::Backend> pg_;
  double inv_world_;
  std::chrono::milliseconds timeout_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  size_t next_ = 0;  // the next bucket to launch: buckets go out in index order on every rank
  bool active_ = false;
};

namespace {

// ReadyHook tells the reducer that a parameter's gradient has been accumulated.
class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(std::weak_ptr<Reducer> r, size_t slot) : r_(std::move(r)), slot_(slot) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list &outputs,
                                            const torch::autograd::variable_list &) override {
    if (auto r = r_.lock()) r->ready(slot_);
    return outputs;
  }

 private:
  std::weak_ptr<Reducer> r_;
  size_t slot_;
};

}  // namespace

void Reducer::attach(const std::vector<at::Tensor> &params, const std::shared_ptr<Reducer> &self) {
  TORCH_CHECK(!params.empty(), "no parameter to reduce");
  // Buckets in reverse parameter order, the order the backward pass produces
  // the gradients in (DDP's compute_bucket_assignment_by_size): a bucket is
  // closed once it holds at least its cap.
  slots_.resize(params.size());
  int64_t bytes = 0;
  for (size_t k = params.size(); k-- > 0;) {
    const at::Tensor &p = params[k];
    TORCH_CHECK(p.scalar_type() == at::kFloat, "parameter ", k, " is ", p.scalar_type(), ", want float32");
    if (buckets_.empty() || bytes >= (buckets_.size() == 1 ? kFirstBucketBytes : kBucketBytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket &b = buckets_.back();
    Slot &s = slots_[k];
    s.param = p;
    s.bucket = buckets_.size() - 1;
    s.numel = p.numel();
    s.offset = 0;
    for (size_t j : b.slots) s.offset += slots_[j].numel;
    b.slots.push_back(k);
    bytes += s.numel * static_cast<int64_t>(sizeof(float));
  }
  for (auto &b : buckets_) {
    int64_t n = 0;
    for (size_t j : b.slots) n += slots_[j].numel;
    b.flat = at::zeros({n}, params[0].options().requires_grad(false));
  }
  for (size_t k = 0; k < slots_.size(); k++) {
    Slot &s = slots_[k];
    s.acc = torch::autograd::impl::grad_accumulator(s.param);
    TORCH_CHECK(s.acc, "parameter ", k, " has no gradient accumulator (does it require grad?)");
    s.hook = s.acc->add_post_hook(std::make_unique<ReadyHook>(self, k));
  }
}

void Reducer::begin() {
  for (auto &s : slots_) s.ready = false;
  for (auto &b : buckets_) {
    b.pending = b.slots.size();
    b.launched = false;
    b.work.reset();
  }
  next_ = 0;
  active_ = true;
}

void Reducer::ready(size_t k) {
  if (!active_) return;
  Slot &s = slots_[k];
  if (s.ready) return;  // a second accumulation in one backward pass: already counted
  const at::Tensor &g = s.param.grad();
  at::Tensor v = view(s);
  if (g.defined()) {
    v.copy_(g);
    v.mul_(inv_world_);
  } else {
    v.zero_();
  }
  s.ready = true;
  if (--buckets_[s.bucket].pending == 0) launch_in_order();
}

void Reducer::launch_in_order() {
  while (next_ < buckets_.size() && buckets_[next_].pending == 0) {
    Bucket &b = buckets_[next_];
    std::vector<at::Tensor> ts{b.flat};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = timeout_;
    b.work = pg_->allreduce(ts, opts);
    b.launched = true;
    next_++;
  }
}

double Reducer::finish() {
  struct Off {
    bool &a;
    ~Off() { a = false; }
  } off{active_};
  for (auto &s : slots_) {
    if (!s.ready) {
      view(s).zero_();
      s.ready = true;
      buckets_[s.bucket].pending--;
    }
  }
  launch_in_order();
  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < buckets_.size(); i++) {
    try {
      TORCH_CHECK(buckets_[i].work, "bucket ", i, " was not launched");
      buckets_[i].work->wait(timeout_);
    } catch (const c10::Error &e) {
      TORCH_CHECK(false, "gradient all-reduce (bucket ", i + 1, " of ", buckets_.size(), ", ",
                  buckets_[i].slots.size(), " tensors): ", e.what_without_backtrace());
    } catch (const std::exception &e) {
      TORCH_CHECK(false, "gradient all-reduce (bucket ", i + 1, " of ", buckets_.size(), ", ",
                  buckets_[i].slots.size(), " tensors): ", e.what());
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  at::NoGradGuard ng;
  for (auto &s : slots_) {
    at::Tensor &g = s.param.mutable_grad();
    if (!g.defined()) g = at::zeros_like(s.param, at::MemoryFormat::Preserve);
    g.copy_(view(s));
  }
  return secs;
}

std::shared_ptr<Reducer> make_reducer(tr_group *g, const std::vector<at::Tensor> &params) {
  TORCH_CHECK(g != nullptr && g->pg, "no process group");
  auto r = std::make_shared<Reducer>(g->pg, g->world, g->timeout);
  r->attach(params, r);
  return r;
}

void begin(Reducer &r) { r.begin(); }
double finish(Reducer &r) { return r.finish(); }

}  // namespace trddp

namespace {

std::vector<std::string> split(const std::string &s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, sep)) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

// Plugin is the NCCL plugin, loaded once per process.
struct Plugin {
  std::string err;  // why it cannot be used; empty when it can
  tr_nccl_built_for_fn built_for = nullptr;
  tr_nccl_check_fn check = nullptr;
  tr_nccl_new_fn make = nullptr;
};

const Plugin &plugin() {
  static std::once_flag once;
  static Plugin p;
  std::call_once(once, [] {
    const std::string &cuda = trddp::cuda_unavailable();
    if (!cuda.empty()) {
      p.err = cuda;
      return;
    }
    void *h = dlopen(TR_NCCL_PLUGIN, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      const char *e = dlerror();
      p.err = std::string("cannot load the NCCL plugin " TR_NCCL_PLUGIN " (build it against this CUDA torch: "
                          "FWBENCH_NCCL_SITE=<site-packages> scripts/setup.sh): ") +
              (e ? e : "unknown dlopen error");
      return;
    }
    p.built_for = reinterpret_cast<tr_nccl_built_for_fn>(dlsym(h, "fwbench_nccl_built_for"));
    p.check = reinterpret_cast<tr_nccl_check_fn>(dlsym(h, "fwbench_nccl_check"));
    p.make = reinterpret_cast<tr_nccl_new_fn>(dlsym(h, "fwbench_nccl_new"));
    if (p.built_for == nullptr || p.check == nullptr || p.make == nullptr) {
      p.err = TR_NCCL_PLUGIN " lacks one of fwbench_nccl_built_for, fwbench_nccl_check, fwbench_nccl_new";
    } else if (const char *e = p.check()) {
      p.err = e;
    }
  });
  return p;
}

}  // namespace

extern "C" {

const char *tr_nccl_probe(char **built_for) {
  TRP_TRY
  *built_for = nullptr;
  const Plugin &p = plugin();
  TORCH_CHECK(p.err.empty(), p.err);
  *built_for = strdup(p.built_for());
  TORCH_CHECK(*built_for != nullptr, "out of memory");
  TRP_CATCH
}

const char *tr_group_new(const char *host, int32_t port, int32_t rank, int32_t world, int64_t timeout_ms,
                         int32_t nccl, const char *address, const char *ifaces, tr_group **out) {
  TRP_TRY
  *out = nullptr;
  TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " outside world size ", world);
  TORCH_CHECK(port > 0 && port < 65536, "store port ", port);
  TORCH_CHECK(timeout_ms > 0, "timeout ", timeout_ms, " ms");
  auto g = std::make_unique<tr_group>();
  g->rank = rank;
  g->world = world;
  g->timeout = std::chrono::milliseconds(timeout_ms);

  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(port);
  so.isServer = rank == 0;
  so.numWorkers = static_cast<size_t>(world);
  so.waitWorkers = true;
  so.timeout = g->timeout;
  try {
    g->store = c10::make_intrusive<c10d::TCPStore>(std::string(host), so);
  } catch (const c10::Error &e) {
    TORCH_CHECK(false, "tcp store ", host, ":", port, rank == 0 ? " (served by this rank)" : "", ": ",
                e.what_without_backtrace());
  }
  g->store->setTimeout(g->timeout);

  if (nccl != 0) {
    const Plugin &p = plugin();
    TORCH_CHECK(p.err.empty(), p.err);
    g->nccl = true;
    const char *e = p.make(&g->store, rank, world, timeout_ms, &g->pg);
    TORCH_CHECK(e == nullptr, "nccl process group: ", e);
    *out = g.release();
    return nullptr;
  }
  auto opts = c10d::ProcessGroupGloo::Options::create(g->timeout);
  std::string ifs = ifaces ? ifaces : "";
  if (!ifs.empty()) {
    for (const auto &i : split(ifs, ',')) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(i));
  } else {
    TORCH_CHECK(address != nullptr && *address != 0, "no address for gloo's device");
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(address));
  }
  opts->threads = 2;  // ProcessGroupGloo's default
  try {
    g->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(g->store, rank, world, opts);
  } catch (const c10::Error &e) {
    TORCH_CHECK(false, "gloo process group: ", e.what_without_backtrace());
  }
  *out = g.release();
  TRP_CATCH
}

const char *tr_group_free(tr_group *g, int32_t wait_peers, int64_t wait_ms) {
  if (g == nullptr) return nullptr;
  std::unique_ptr<tr_group> own(g);
  TRP_TRY
  // The process group first (its threads joined, its connections closed),
  // then tell the store; rank 0 serves the store, so it waits until every
  // rank has said so before it stops serving. ProcessGroupNCCL's communicators
  // are shut down first, as destroy_process_group does (finalized when the
  // group is healthy, wait_peers 1; aborted, which does not block, when it is
  // not).
  if (g->nccl && g->pg) {
    if (wait_peers != 0) {
      g->pg->shutdown();
    } else {
      g->pg->abort();
    }
  }
  g->pg.reset();
  if (!g->store) return nullptr;
  int64_t closed = g->store->add(kClosedKey, 1);
  if (g->rank == 0 && wait_peers != 0) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    while (closed < g->world) {
      TORCH_CHECK(std::chrono::steady_clock::now() < deadline, "close: ", g->world - closed, " of ", g->world,
                  " ranks had not closed after ", wait_ms, " ms; stopped serving the store");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      closed = g->store->add(kClosedKey, 0);
    }
  }
  TRP_CATCH
}

}  // extern "C"
