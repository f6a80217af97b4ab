// shim.cc: torchrun's libtorch side. See shim.h for the error contract.
//
// The model is torchvision's VGG built from the tables that Go passes in
// (features = Conv2d/BatchNorm2d/ReLU/MaxPool2d in torchvision's order; an optional
// 7x7 adaptive average pool; classifier = the head's Linear layers at their
// torchvision indices), so named_parameters() yields torchvision's state-dict names.
// Dropout is not drawn here: Go passes each step's masks (vgg.DropoutMask).
// Everything a step allocates is owned by C++ RAII and freed before the call
// returns; nothing per step is left for Go finalizers.
#include "shim.h"

#include <dlfcn.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <torch/cuda.h>
#include <torch/nn.h>
#include <torch/optim.h>
#include <torch/version.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace {

char *dup(const std::string &s) {
  char *p = static_cast<char *>(std::malloc(s.size() + 1));
  if (p == nullptr) return nullptr;
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = 0;
  return p;
}

// Static message for the one case where malloc itself fails.
char kNoMemory[] = "oom: out of memory (and no memory left to describe it)";

// fail returns a message for the caller to free (tr_free_error), or NULL when
// malloc fails; the catch clauses then return the static kNoMemory.
const char *fail(const std::string &s) { return dup(s); }

#define TR_TRY try {
#define TR_CATCH                                                                   \
  }                                                                                \
  catch (const c10::OutOfMemoryError &e) {                                         \
    const char *r = fail(std::string(TR_OOM_PREFIX) + e.what_without_backtrace()); \
    return r ? r : kNoMemory;                                                      \
  }                                                                                \
  catch (const c10::Error &e) {                                                    \
    const char *r = fail(e.what_without_backtrace());                              \
    return r ? r : kNoMemory;                                                      \
  }                                                                                \
  catch (const std::bad_alloc &e) {                                                \
    const char *r = fail(std::string(TR_OOM_PREFIX) + "std::bad_alloc");           \
    return r ? r : kNoMemory;                                                      \
  }                                                                                \
  catch (const std::exception &e) {                                                \
    const char *r = fail(e.what());                                                \
    return r ? r : kNoMemory;                                                      \
  }                                                                                \
  catch (...) {                                                                    \
    const char *r = fail("unknown C++ exception");                                 \
    return r ? r : kNoMemory;                                                      \
  }                                                                                \
  return nullptr;

// ---------------------------------------------------------------- threads

std::atomic<int> g_threads{0};

// at::set_num_threads is an OpenMP per-thread setting underneath: a cgo call may
// run on any OS thread, so every entry point re-applies the wanted count when the
// calling thread disagrees (an atomic load and one omp query when it agrees).
void apply_threads() {
  int n = g_threads.load();
  if (n > 0 && at::get_num_threads() != n) at::set_num_threads(n);
}

// ---------------------------------------------------------------- CUDA loading

std::once_flag g_cuda_once;
std::string g_cuda_err;  // empty when libtorch_cuda.so is loaded

// load_cuda dlopens libtorch_cuda.so once per process: its static initialisers
// register the CUDA hooks, kernels, allocator and device guard with the
// libtorch_cpu that is already linked. It must run before libtorch first asks
// for CUDA: getCUDAHooks() caches its answer for good (a process that asked
// before the library was loaded stays CPU-only), and the autograd engine sizes
// its device threads on the first backward pass. So every entry point that can
// come first calls it, whatever device was asked for. Returns the reason CUDA
// is unusable, or "".
const std::string &load_cuda() {
  std::call_once(g_cuda_once, [] {
    void *h = dlopen("libtorch_cuda.so", RTLD_NOW | RTLD_GLOBAL);
    if (h == nullptr) {
      const char *e = dlerror();
      g_cuda_err = std::string("cannot load libtorch_cuda.so: ") + (e ? e : "unknown dlopen error");
    }
  });
  return g_cuda_err;
}

// ---------------------------------------------------------------- the model

struct Holder : torch::nn::Module {
  template <typename M>
  void add(const std::string &name, M m) {
    register_module(name, m);
  }
};

}  // namespace

struct tr_model {
  torch::Device device{torch::kCPU};
  std::shared_ptr<Holder> root;
  torch::nn::Sequential features;
  std::shared_ptr<Holder> classifier;
  std::vector<torch::nn::Linear> fc;  // the head's Linear layers in order
  std::vector<bool> hidden;           // fc[i] is followed by ReLU and a dropout mask
  int64_t mask_width = 0;             // sum of the hidden layers' widths: mask values per image
  bool head_pool = false;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::map<std::string, torch::Tensor> named;  // parameters and buffers by canonical name
  bool features_mode = false;
  int optimizer = 0;
  int64_t image_size = 0;
  tr_spec spec{};
};

namespace {

torch::Tensor lookup(tr_model *m, const char *name) {
  auto it = m->named.find(name);
  TORCH_CHECK(it != m->named.end(), "no tensor named ", name);
  return it->second;
}

// head runs the Linear layers; masks (NULL: no dropout) holds each hidden layer's
// [n, out] mask in turn. On the CPU the mask tensor is a view of the caller's
// buffer: autograd keeps it for the backward pass, which ends before the step
// returns, as does every tensor that refers to it.
torch::Tensor head(tr_model *m, torch::Tensor h, const float *masks) {
  int64_t n = h.size(0);
  for (size_t i = 0; i < m->fc.size(); i++) {
    h = m->fc[i]->forward(h);
    if (!m->hidden[i]) continue;
    h = h.relu_();
    if (masks != nullptr) {
      int64_t out = h.size(1);
      auto mask = torch::from_blob(const_cast<float *>(masks), {n, out}, torch::kFloat32);
      h = h * mask.to(h.device());
      masks += n * out;
    }
  }
  return h;
}

// input builds the NCHW device tensor from Go's NHWC buffer. The result never
// aliases Go memory: contiguous() copies the permuted view (clone when it was
// already contiguous, which only happens for 1x1 images), and to() copies again.
torch::Tensor input(tr_model *m, const float *x, int64_t n, int64_t h, int64_t w, int64_t c) {
  auto blob = torch::from_blob(const_cast<float *>(x), {n, h, w, c}, torch::kFloat32);
  auto t = blob.permute({0, 3, 1, 2}).contiguous();
  if (t.data_ptr() == blob.data_ptr()) t = t.clone();
  return t.to(m->device);
}

torch::Tensor targets(tr_model *m, const int32_t *labels, int64_t n) {
  auto blob = torch::from_blob(const_cast<int32_t *>(labels), {n}, torch::kInt32);
  return blob.to(m->device, torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
}

torch::Tensor forward(tr_model *m, const torch::Tensor &x, const float *masks) {
  torch::Tensor h;
  if (m->features_mode) {
    // The base is a fixed feature extractor: no graph, no gradients, BatchNorm in
    // eval mode (running statistics frozen, as Keras does for a frozen base).
    torch::NoGradGuard g;
    h = m->features->forward(x);
  } else {
    h = m->features->forward(x);
  }
  // torchvision's AdaptiveAvgPool2d((7, 7)); flatten in torch's C x H x W order.
  if (m->head_pool) h = at::adaptive_avg_pool2d(h, {7, 7});
  return head(m, h.flatten(1), masks);
}

void set_mode(tr_model *m, bool train) {
  m->root->train(train);
  if (m->features_mode) m->features->eval();
}

}  // namespace

extern "C" {

void tr_free_error(const char *e) {
  if (e != nullptr && e != kNoMemory) std::free(const_cast<char *>(e));
}

const char *tr_set_threads(int32_t intra, int32_t interop, int32_t *interop_set) {
  TR_TRY
  load_cuda();
  if (intra > 0) {
    g_threads.store(intra);
    at::set_num_threads(intra);
  }
  *interop_set = 0;
  if (interop > 0) {
    if (at::get_num_interop_threads() == interop) {
      *interop_set = 1;
    } else {
      // libtorch allows this once per process, before any inter-op work.
      try {
        at::set_num_interop_threads(interop);
        *interop_set = 1;
      } catch (const c10::Error &) {
      }
    }
  }
  TR_CATCH
}

const char *tr_get_threads(int32_t *intra, int32_t *interop) {
  TR_TRY
  load_cuda();
  apply_threads();
  *intra = at::get_num_threads();
  *interop = at::get_num_interop_threads();
  TR_CATCH
}

const char *tr_version(char **out) {
  TR_TRY
  load_cuda();  // show_config() asks whether CUDA is there
  // show_config() is generated into the library when it is built; its
  // "TORCH_VERSION=x.y.z" build setting is the loaded library's own version.
  std::string cfg = at::show_config();
  std::string v;
  auto i = cfg.find("TORCH_VERSION=");
  if (i != std::string::npos) {
    i += std::strlen("TORCH_VERSION=");
    auto j = cfg.find_first_of(", \n", i);
    v = cfg.substr(i, j == std::string::npos ? std::string::npos : j - i);
  }
  if (v.empty()) v = std::string(TORCH_VERSION) + " (headers)";
  *out = dup(v);
  TR_CATCH
}

const char *tr_cuda_device_count(int64_t *out) {
  TR_TRY
  *out = 0;
  const std::string &err = load_cuda();
  TORCH_CHECK(err.empty(), err);
  TORCH_CHECK(torch::cuda::is_available(), "libtorch_cuda.so is loaded but CUDA reports no usable device");
  *out = torch::cuda::device_count();
  TR_CATCH
}

const char *tr_new(const tr_spec *s, tr_model **out) {
  TR_TRY
  *out = nullptr;
  load_cuda();
  apply_threads();
  auto m = std::make_unique<tr_model>();
  m->spec = *s;
  m->spec.layers = nullptr;
  m->spec.device = nullptr;
  m->spec.head = nullptr;
  m->features_mode = s->features != 0;
  m->optimizer = s->optimizer;
  m->head_pool = s->head_pool != 0;
  m->image_size = s->image_size;
  TORCH_CHECK(s->nhead >= 1, "the head has no layers");

  torch::Device dev(std::string(s->device));  // throws on an unknown device string
  if (dev.is_cuda()) {
    const std::string &err = load_cuda();
    TORCH_CHECK(err.empty(), "device ", s->device, ": ", err);
    TORCH_CHECK(torch::cuda::is_available(), "device ", s->device,
                ": libtorch_cuda.so is loaded but CUDA reports no usable device");
    int64_t count = torch::cuda::device_count();
    int64_t idx = dev.has_index() ? dev.index() : 0;
    TORCH_CHECK(idx < count, "device ", s->device, ": only ", count, " CUDA device(s) present");
    dev = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(idx));
  } else {
    TORCH_CHECK(dev.is_cpu(), "device ", s->device, ": only cpu and cuda devices are supported");
  }
  m->device = dev;

  m->root = std::make_shared<Holder>();
  m->features = torch::nn::Sequential();
  int64_t in = 3, size = s->image_size;
  for (int i = 0; i < s->nlayers; i++) {
    int v = s->layers[i];
    if (v < 0) {
      m->features->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
      size /= 2;
      continue;
    }
    m->features->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, v, 3).padding(1)));
    if (s->batchnorm) m->features->push_back(torch::nn::BatchNorm2d(v));
    m->features->push_back(torch::nn::ReLU(torch::nn::ReLUOptions(true)));
    in = v;
  }
  TORCH_CHECK(size > 0, "image size ", s->image_size, " is too small for the model");
  int64_t flat = m->head_pool ? in * 7 * 7 : in * size * size;
  m->classifier = std::make_shared<Holder>();
  for (int i = 0; i < s->nhead; i++) {
    const tr_head_layer &l = s->head[i];
    TORCH_CHECK(l.in == flat, "head layer classifier.", l.index, ": ", l.in, " inputs, the layer before gives ", flat);
    TORCH_CHECK(l.out > 0, "head layer classifier.", l.index, ": ", l.out, " outputs");
    TORCH_CHECK((l.hidden != 0) == (i + 1 < s->nhead), "head layer classifier.", l.index,
                ": every layer but the last must be hidden");
    m->fc.push_back(torch::nn::Linear(l.in, l.out));
    m->hidden.push_back(l.hidden != 0);
    if (l.hidden != 0) m->mask_width += l.out;
    m->classifier->add(std::to_string(l.index), m->fc.back());
    flat = l.out;
  }
  m->root->add("features", m->features.ptr());
  m->root->add("classifier", m->classifier);

  for (auto &p : m->root->named_parameters()) m->named[p.key()] = p.value();
  for (auto &b : m->root->named_buffers()) {
    if (b.value().scalar_type() == torch::kFloat32) m->named[b.key()] = b.value();
  }
  *out = m.release();
  TR_CATCH
}

const char *tr_freeze(tr_model *m, const char *name) {
  TR_TRY
  TORCH_CHECK(!m->opt, "tr_freeze after tr_prepare");
  lookup(m, name).set_requires_grad(false);
  TR_CATCH
}

const char *tr_prepare(tr_model *m) {
  TR_TRY
  apply_threads();
  m->root->to(m->device);
  // to() may replace the storage behind each parameter; refresh the name table.
  m->named.clear();
  for (auto &p : m->root->named_parameters()) m->named[p.key()] = p.value();
  for (auto &b : m->root->named_buffers()) {
    if (b.value().scalar_type() == torch::kFloat32) m->named[b.key()] = b.value();
  }
  // tr_freeze marked what does not train (in features mode: the whole base, and
  // perhaps head layers); to() keeps requires_grad.
  std::vector<torch::Tensor> params;
  for (auto &p : m->root->parameters()) {
    if (p.requires_grad()) params.push_back(p);
  }
  TORCH_CHECK(!params.empty(), "no parameter is trained");
  const tr_spec &s = m->spec;
  if (s.optimizer == 1) {
    m->opt = std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(s.lr).betas({s.beta1, s.beta2}).eps(s.eps).weight_decay(s.weight_decay));
  } else {
    m->opt = std::make_unique<torch::optim::SGD>(
        params,
        torch::optim::SGDOptions(s.lr).momentum(s.momentum).weight_decay(s.weight_decay).nesterov(s.nesterov != 0));
  }
  if (m->device.is_cuda()) {
    c10::getDeviceAllocator(c10::kCUDA)->resetPeakStats(m->device.index());
  }
  TR_CATCH
}

void tr_free(tr_model *m) {
  try {
    delete m;
  } catch (...) {
  }
}

const char *tr_set_tensor(tr_model *m, const char *name, const float *data, int64_t numel) {
  TR_TRY
  auto t = lookup(m, name);
  TORCH_CHECK(t.numel() == numel, "tensor ", name, ": got ", numel, " values, want ", t.numel());
  torch::NoGradGuard g;
  auto src = torch::from_blob(const_cast<float *>(data), t.sizes(), torch::kFloat32);
  t.copy_(src);  // synchronous for a pageable CPU source
  TR_CATCH
}

const char *tr_get_tensor(tr_model *m, const char *name, float *out, int64_t numel) {
  TR_TRY
  auto t = lookup(m, name);
  TORCH_CHECK(t.numel() == numel, "tensor ", name, ": got room for ", numel, " values, want ", t.numel());
  torch::NoGradGuard g;
  auto dst = torch::from_blob(out, t.sizes(), torch::kFloat32);
  dst.copy_(t.detach());
  TR_CATCH
}

const char *tr_get_state(tr_model *m, const char *name, int32_t kind, float *out, int64_t numel,
                         int64_t *step, int32_t *present) {
  TR_TRY
  *present = 0;
  *step = 0;
  TORCH_CHECK(m->opt, "optimizer not built");
  auto p = lookup(m, name);
  auto &st = m->opt->state();
  auto it = st.find(p.unsafeGetTensorImpl());
  if (it == st.end()) return nullptr;
  torch::Tensor src;
  if (m->optimizer == 1) {
    auto &as = static_cast<torch::optim::AdamParamState &>(*it->second);
    *step = as.step();
    TORCH_CHECK(kind == 1 || kind == 2, "adam has no state kind ", kind);
    src = kind == 1 ? as.exp_avg() : as.exp_avg_sq();
  } else {
    auto &ss = static_cast<torch::optim::SGDParamState &>(*it->second);
    TORCH_CHECK(kind == 0, "sgd has no state kind ", kind);
    src = ss.momentum_buffer();
  }
  if (!src.defined()) return nullptr;
  TORCH_CHECK(src.numel() == numel, "state of ", name, ": got room for ", numel, " values, want ", src.numel());
  auto dst = torch::from_blob(out, src.sizes(), torch::kFloat32);
  dst.copy_(src);
  *present = 1;
  TR_CATCH
}

const char *tr_set_state(tr_model *m, const char *name, const float *a, const float *b, int64_t numel,
                         int64_t step) {
  TR_TRY
  TORCH_CHECK(m->opt, "optimizer not built");
  auto p = lookup(m, name);
  TORCH_CHECK(p.numel() == numel, "state of ", name, ": got ", numel, " values, want ", p.numel());
  auto load = [&](const float *src) {
    return torch::from_blob(const_cast<float *>(src), p.sizes(), torch::kFloat32).to(m->device, true, true);
  };
  auto &st = m->opt->state();
  if (m->optimizer == 1) {
    auto s = std::make_unique<torch::optim::AdamParamState>();
    s->step(step);
    s->exp_avg(load(a));
    s->exp_avg_sq(load(b));
    st[p.unsafeGetTensorImpl()] = std::move(s);
  } else {
    auto s = std::make_unique<torch::optim::SGDParamState>();
    s->momentum_buffer(load(a));
    st[p.unsafeGetTensorImpl()] = std::move(s);
  }
  TR_CATCH
}

const char *tr_clear_state(tr_model *m) {
  TR_TRY
  if (m->opt) m->opt->state().clear();
  TR_CATCH
}

const char *tr_train_step(tr_model *m, const float *x, const int32_t *labels, int64_t n, int64_t h,
                          int64_t w, int64_t c, const float *masks, int64_t nmasks, double *loss,
                          int64_t *correct) {
  TR_TRY
  apply_threads();
  TORCH_CHECK(m->opt, "optimizer not built");
  TORCH_CHECK(masks == nullptr || nmasks == n * m->mask_width, "dropout masks: got ", nmasks,
              " values, want ", n * m->mask_width);
  auto xt = input(m, x, n, h, w, c);
  auto yt = targets(m, labels, n);
  set_mode(m, true);
  m->opt->zero_grad();
  auto logits = forward(m, xt, masks);
  auto l = torch::nn::functional::cross_entropy(logits, yt);
  l.backward();
  m->opt->step();
  *loss = l.item<double>();
  *correct = logits.detach().argmax(1).eq(yt).sum().item<int64_t>();
  TR_CATCH
}

const char *tr_evaluate(tr_model *m, const float *x, const int32_t *labels, int64_t n, int64_t h,
                        int64_t w, int64_t c, double *loss, int64_t *correct, float *logits) {
  TR_TRY
  apply_threads();
  torch::NoGradGuard g;
  auto xt = input(m, x, n, h, w, c);
  set_mode(m, false);
  auto out = forward(m, xt, nullptr);
  if (labels != nullptr) {
    auto yt = targets(m, labels, n);
    *loss = torch::nn::functional::cross_entropy(out, yt).item<double>();
    *correct = out.argmax(1).eq(yt).sum().item<int64_t>();
  }
  if (logits != nullptr) {
    auto dst = torch::from_blob(logits, out.sizes(), torch::kFloat32);
    dst.copy_(out);
  }
  TR_CATCH
}

const char *tr_sync(tr_model *m) {
  TR_TRY
  if (m->device.is_cuda()) torch::cuda::synchronize(m->device.index());
  TR_CATCH
}

const char *tr_peak_gpu_bytes(tr_model *m, int64_t *out) {
  TR_TRY
  *out = 0;
  if (m->device.is_cuda()) {
    auto stats = c10::getDeviceAllocator(c10::kCUDA)->getDeviceStats(m->device.index());
    *out = stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  }
  TR_CATCH
}

}  // extern "C"
