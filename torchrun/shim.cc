// shim.cc: torchrun's libtorch side. See shim.h for the error contract.
//
// The model is whatever layer table Go passes in (model.Net's layers, one
// tr_layer each): one generic interpreter creates each layer's tensors under
// its torchvision name and runs the layers in order with ATen's functional ops
// (conv2d with stride, padding and groups; batch_norm; relu and hardtanh(0, 6)
// in place where torchvision's are; max_pool2d; adaptive_avg_pool2d; add;
// flatten; linear; a multiply by the step's dropout mask). Nothing here knows
// a model by name.
// Dropout is not drawn here: Go passes each step's masks (model.DropoutMask).
// Mixed precision is torch.autocast's C++ state around the forward pass (conv2d
// and linear in bf16/fp16, every other op in the type that reaches it), with
// float32 parameters, loss and optimizer; fp16 adds GradScaler's loss scaling.
// Everything a step allocates is owned by C++ RAII and freed before the call
// returns; nothing per step is left for Go finalizers.
#include "shim.h"

#include "parallel.h"

#include <dlfcn.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <ATen/autocast_mode.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
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

// Layer is one tr_layer with its tensors (undefined where it has none).
struct Layer {
  int32_t op = 0;
  int32_t in0 = -1, in1 = -1;
  int64_t in_c = 0, width = 0, out = 0, kernel = 0, stride = 0, pad = 0, groups = 1, size = 0;
  bool bias = false, head = false;
  torch::Tensor w, b, mean, var;
  // inplace: the op may overwrite its input (ReLU, ReLU6; Add: its second input),
  // as torchvision's inplace=True and `out += identity` do. Only when this layer is
  // that input's one reader and the input's producer does not need its own output
  // for the backward pass (autograd would refuse the step otherwise).
  bool inplace = false;
  // release: the layers whose outputs this one reads last; forward drops them after
  // it, so that (without autograd holding them) memory stays as low as a chain's.
  std::vector<int> release;
};

}  // namespace

struct tr_model {
  torch::Device device{torch::kCPU};
  int32_t precision = TR_FP32;
  bool autocast = false;                   // TR_BF16, TR_FP16
  at::ScalarType low = at::kFloat;         // autocast's type
  bool channels_last = false;
  torch::Tensor scale, tracker;            // TR_FP16: GradScaler's _scale (float32) and _growth_tracker (int32)
  bool record = false;                     // tr_record
  std::string recorded;
  std::vector<Layer> layers;
  int64_t mask_width = 0;  // the dropout layers' widths summed: mask values per image
  std::map<std::string, torch::Tensor> named;  // parameters and buffers by canonical name
  std::vector<torch::Tensor> params;           // the parameters, in layer order
  std::unique_ptr<torch::optim::Optimizer> opt;
  bool features_mode = false;
  int optimizer = 0;
  double bn_momentum = 0.1, bn_eps = 1e-5;
  tr_spec spec{};
  std::shared_ptr<trddp::Reducer> reducer;  // tr_attach_group; null in a single-process run
};

namespace {

torch::Tensor lookup(tr_model *m, const char *name) {
  auto it = m->named.find(name);
  TORCH_CHECK(it != m->named.end(), "no tensor named ", name);
  return it->second;
}

// overwritable reports whether an op's output may be changed in place by its one
// reader: the op's backward pass does not read its output.
bool overwritable(int32_t op) {
  return op == TR_CONV || op == TR_BATCH_NORM || op == TR_ADD || op == TR_LINEAR;
}

// build checks the layer table and creates the tensors, zero-filled, on m->device.
void build(tr_model *m, const tr_layer *ls, int32_t n) {
  TORCH_CHECK(n >= 1 && ls != nullptr, "the net has no layers");
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(m->device);
  std::vector<int> readers(n, 0), last(n, -1);
  for (int32_t i = 0; i < n; i++) {
    const tr_layer &s = ls[i];
    std::string name = s.name ? s.name : "";
    std::string what = "layer " + std::to_string(i) + " (" + (name.empty() ? "unnamed" : name) + ")";
    TORCH_CHECK(s.op >= TR_CONV && s.op <= TR_DROPOUT, what, ": unknown op ", s.op);
    TORCH_CHECK(s.ninputs == (s.op == TR_ADD ? 2 : 1), what, ": ", s.ninputs, " inputs");
    int32_t ins[2] = {s.in0, s.in1};
    for (int k = 0; k < s.ninputs; k++) {
      TORCH_CHECK(ins[k] >= -1 && ins[k] < i, what, ": input ", ins[k], " is not an earlier layer");
      if (ins[k] >= 0) {
        readers[ins[k]]++;
        last[ins[k]] = i;
      }
    }
    Layer l;
    l.op = s.op;
    l.in0 = s.in0;
    l.in1 = s.ninputs == 2 ? s.in1 : -1;
    l.in_c = s.in_c;
    l.width = s.width;
    l.out = s.out;
    l.kernel = s.kernel;
    l.stride = s.stride;
    l.pad = s.pad;
    l.groups = s.groups;
    l.size = s.size;
    l.bias = s.bias != 0;
    l.head = s.head != 0;
    // channels_last: as model.to(memory_format=torch.channels_last) does to 4-D tensors.
    auto param = [&](const std::string &leaf, torch::IntArrayRef shape, bool trainable, bool cl = false) {
      TORCH_CHECK(!name.empty(), what, ": a layer with tensors needs a name");
      auto t = torch::zeros(shape, opts);  // (zeros ignores a memory format in opts)
      if (cl) t = t.contiguous(at::MemoryFormat::ChannelsLast);
      if (trainable) {
        t.set_requires_grad(true);
        m->params.push_back(t);
      }
      TORCH_CHECK(m->named.emplace(name + "." + leaf, t).second, "tensor ", name, ".", leaf, " defined twice");
      return t;
    };
    switch (s.op) {
      case TR_CONV:
        TORCH_CHECK(l.out > 0 && l.in_c > 0 && l.kernel > 0 && l.stride > 0 && l.pad >= 0 && l.groups > 0 &&
                        l.in_c % l.groups == 0 && l.out % l.groups == 0,
                    what, ": conv ", l.in_c, "->", l.out, " kernel ", l.kernel, " stride ", l.stride, " pad ", l.pad,
                    " groups ", l.groups);
        l.w = param("weight", {l.out, l.in_c / l.groups, l.kernel, l.kernel}, true, m->channels_last);
        if (l.bias) l.b = param("bias", {l.out}, true);
        break;
      case TR_BATCH_NORM:
        TORCH_CHECK(l.in_c > 0, what, ": batch norm over ", l.in_c, " channels");
        l.w = param("weight", {l.in_c}, true);
        l.b = param("bias", {l.in_c}, true);
        l.mean = param("running_mean", {l.in_c}, false);
        l.var = param("running_var", {l.in_c}, false);
        break;
      case TR_LINEAR:
        TORCH_CHECK(l.out > 0 && l.in_c > 0, what, ": linear ", l.in_c, "->", l.out);
        l.w = param("weight", {l.out, l.in_c}, true);
        l.b = param("bias", {l.out}, true);
        break;
      case TR_MAX_POOL:
        TORCH_CHECK(l.kernel > 0 && l.stride > 0 && l.pad >= 0 && 2 * l.pad <= l.kernel, what, ": max pool kernel ",
                    l.kernel, " stride ", l.stride, " pad ", l.pad);
        break;
      case TR_ADAPTIVE_AVG_POOL:
        TORCH_CHECK(l.size > 0, what, ": adaptive pool to ", l.size);
        break;
      case TR_DROPOUT:
        TORCH_CHECK(l.width > 0, what, ": dropout over ", l.width, " values");
        m->mask_width += l.width;
        break;
    }
    m->layers.push_back(std::move(l));
  }
  TORCH_CHECK(m->layers.back().op == TR_LINEAR, "the last layer is not a linear layer");
  for (int32_t i = 0; i < n; i++) {
    Layer &l = m->layers[i];
    int32_t target = -1;
    if (l.op == TR_RELU || l.op == TR_RELU6) target = l.in0;
    if (l.op == TR_ADD && l.in0 != l.in1) target = l.in1;
    l.inplace = target >= 0 && readers[target] == 1 && overwritable(m->layers[target].op);
  }
  for (int32_t j = 0; j + 1 < n; j++) {
    if (last[j] >= 0) m->layers[last[j]].release.push_back(j);
  }
}

// forward runs the net on x (NCHW, on the device). train selects BatchNorm's batch
// statistics; masks (NULL: no dropout) holds each dropout layer's [n, width] mask in
// layer order. In features mode the layers outside the head run without autograd
// and with BatchNorm in eval mode: the base is a fixed feature extractor, as Keras
// keeps a frozen base. On the CPU a mask tensor is a view of the caller's buffer:
// autograd keeps it for the backward pass, which ends before the step returns.
torch::Tensor forward(tr_model *m, const torch::Tensor &x, const float *masks, bool train) {
  const bool grad = at::GradMode::is_enabled();
  const int64_t n = x.size(0);
  std::vector<torch::Tensor> outs(m->layers.size());
  auto input = [&](int32_t i) -> torch::Tensor { return i < 0 ? x : outs[i]; };
  for (size_t i = 0; i < m->layers.size(); i++) {
    const Layer &l = m->layers[i];
    const bool frozen = m->features_mode && !l.head;
    at::AutoGradMode g(grad && !frozen);
    torch::Tensor a = input(l.in0);
    torch::Tensor y;
    switch (l.op) {
      case TR_CONV:
        y = at::conv2d(a, l.w, l.b, {l.stride, l.stride}, {l.pad, l.pad}, {1, 1}, l.groups);
        break;
      case TR_BATCH_NORM:
        y = at::batch_norm(a, l.w, l.b, l.mean, l.var, train && !frozen, m->bn_momentum, m->bn_eps,
                           at::globalContext().userEnabledCuDNN());
        break;
      case TR_RELU:
        y = l.inplace ? at::relu_(a) : at::relu(a);
        break;
      case TR_RELU6:
        y = l.inplace ? at::hardtanh_(a, 0, 6) : at::hardtanh(a, 0, 6);
        break;
      case TR_MAX_POOL:
        y = at::max_pool2d(a, {l.kernel, l.kernel}, {l.stride, l.stride}, {l.pad, l.pad});
        break;
      case TR_ADAPTIVE_AVG_POOL:
        y = at::adaptive_avg_pool2d(a, {l.size, l.size});
        break;
      case TR_ADD: {
        torch::Tensor b = input(l.in1);
        y = l.inplace ? b.add_(a) : at::add(a, b);
        break;
      }
      case TR_FLATTEN:
        y = a.flatten(1);
        break;
      case TR_LINEAR:
        y = at::linear(a, l.w, l.b);
        break;
      case TR_DROPOUT:
        if (masks == nullptr) {
          y = a;
          break;
        }
        TORCH_CHECK(a.numel() == n * l.width, "dropout: input of ", a.numel(), " values, want ", n * l.width);
        y = a * torch::from_blob(const_cast<float *>(masks), a.sizes(), torch::kFloat32).to(a.device());
        masks += n * l.width;
        break;
    }
    if (m->record) {
      const bool four = y.dim() == 4;
      m->recorded += "layer " + std::to_string(i) + " " + std::string(c10::toString(y.scalar_type())) + " " +
                     (four && y.is_contiguous(at::MemoryFormat::ChannelsLast) ? "1" : "0") + " " +
                     (y.is_contiguous() ? "1" : "0") + "\n";
    }
    outs[i] = std::move(y);
    for (int j : l.release) outs[j].reset();
  }
  return outs.back();
}

// input builds the NCHW device tensor from Go's NHWC buffer, in the model's
// memory format (contiguous, or channels_last as x.contiguous(memory_format=
// torch.channels_last)). The result never aliases Go memory: clone copies the
// permuted view (which is already channels_last-strided), and to() keeps the format.
torch::Tensor input(tr_model *m, const float *x, int64_t n, int64_t h, int64_t w, int64_t c) {
  auto blob = torch::from_blob(const_cast<float *>(x), {n, h, w, c}, torch::kFloat32);
  auto t = blob.permute({0, 3, 1, 2}).clone(m->channels_last ? at::MemoryFormat::ChannelsLast
                                                              : at::MemoryFormat::Contiguous);
  return t.to(m->device);
}

// Autocast is torch.autocast(device_type, dtype) as a scope: __enter__ saves the
// device type's enabled flag and type and the cache flag, enables autocast with
// the model's type and increments the nesting; __exit__ clears the cast cache
// when the nesting drops to 0 and restores what it saved. Inactive (no change at
// all) for fp32 and tf32. The state is per thread; every call of a model runs on
// its worker's thread.
class Autocast {
 public:
  explicit Autocast(const tr_model *m) : active_(m->autocast), type_(m->device.type()) {
    if (!active_) return;
    prev_cache_ = at::autocast::is_autocast_cache_enabled();
    prev_enabled_ = at::autocast::is_autocast_enabled(type_);
    prev_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, m->low);
    at::autocast::increment_nesting();
    at::autocast::set_autocast_cache_enabled(prev_cache_);  // autocast's cache_enabled default
  }
  ~Autocast() {
    if (!active_) return;
    try {
      if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
      at::autocast::set_autocast_enabled(type_, prev_enabled_);
      at::autocast::set_autocast_dtype(type_, prev_dtype_);
      at::autocast::set_autocast_cache_enabled(prev_cache_);
    } catch (...) {
    }
  }
  Autocast(const Autocast &) = delete;
  Autocast &operator=(const Autocast &) = delete;

 private:
  bool active_;
  at::DeviceType type_;
  bool prev_cache_ = true, prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
};

// run_logits runs the forward pass under the model's autocast and returns float32
// logits (logits.float(), outside autocast).
torch::Tensor run_logits(tr_model *m, const torch::Tensor &x, const float *masks, bool train) {
  torch::Tensor out;
  {
    Autocast ac(m);
    out = forward(m, x, masks, train);
  }
  return out.to(torch::kFloat32);
}

// scaled_step is GradScaler's unscale_, step and update after a backward pass of
// the scaled loss: divide every gradient the optimizer holds by the scale, step
// only when they are all finite, then grow or back off the scale.
void scaled_step(tr_model *m) {
  std::vector<torch::Tensor> grads;
  for (auto &g : m->opt->param_groups()) {
    for (auto &p : g.params()) {
      if (p.grad().defined()) grads.push_back(p.mutable_grad());
    }
  }
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32).device(m->device);
  auto found_inf = torch::zeros({}, f32);
  auto inv_scale = m->scale.to(torch::kFloat64).reciprocal().to(torch::kFloat32);
  {
    torch::NoGradGuard g;
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
  }
  if (found_inf.item<float>() == 0) m->opt->step();
  const tr_spec &s = m->spec;
  at::_amp_update_scale_(m->scale, m->tracker, found_inf, s.scale_growth, s.scale_backoff, s.scale_interval);
}

void record_tensors(tr_model *m) {
  for (auto &[name, t] : m->named) {
    const auto &g = t.grad();
    m->recorded += "tensor " + name + " " + std::string(c10::toString(t.scalar_type())) + " " +
                   (g.defined() ? std::string(c10::toString(g.scalar_type())) : std::string("-")) + "\n";
  }
}

torch::Tensor targets(tr_model *m, const int32_t *labels, int64_t n) {
  auto blob = torch::from_blob(const_cast<int32_t *>(labels), {n}, torch::kInt32);
  return blob.to(m->device, torch::kInt64, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace

namespace trddp {

const char *message(const std::string &s) {
  const char *r = fail(s);
  return r ? r : kNoMemory;
}

const std::string &cuda_unavailable() { return load_cuda(); }

}  // namespace trddp

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

const char *tr_settings(tr_model *m, char **out) {
  TR_TRY
  load_cuda();
  auto &ctx = at::globalContext();
  auto b = [](bool v) { return v ? "true" : "false"; };
  // tf32: what torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
  // read; "true" only when both are on.
  std::string s = std::string("mkldnn=") + b(ctx.userEnabledMkldnn()) + "\n" +
                  "cudnn_benchmark=" + b(ctx.benchmarkCuDNN()) + "\n" +
                  "cudnn_allow_tf32=" + b(ctx.allowTF32CuDNN()) + "\n" +
                  "cublas_allow_tf32=" + b(ctx.allowTF32CuBLAS()) + "\n" +
                  "tf32=" + b(ctx.allowTF32CuDNN() && ctx.allowTF32CuBLAS()) + "\n" +
                  "deterministic=" + b(ctx.deterministicAlgorithms()) + "\n" +
                  "xla=n/a\n";
  if (m != nullptr) {
    static const char *names[] = {"fp32", "tf32", "bf16", "fp16"};
    s += std::string("precision=") + names[m->precision] + "\n";
    bool cl = true;  // every 4-D tensor in channels_last
    for (auto &[name, t] : m->named) {
      if (t.dim() == 4 && !t.is_contiguous(at::MemoryFormat::ChannelsLast)) cl = false;
    }
    s += std::string("memory_format=") + (m->channels_last && cl ? "channels_last" : "contiguous") + "\n";
    if (m->autocast) s += std::string("autocast_dtype=") + c10::toString(m->low) + "\n";
  }
  *out = dup(s);
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
  m->features_mode = s->features != 0;
  m->optimizer = s->optimizer;
  m->bn_momentum = s->bn_momentum;
  m->bn_eps = s->bn_eps;
  TORCH_CHECK(s->precision >= TR_FP32 && s->precision <= TR_FP16, "unknown precision ", s->precision);
  m->precision = s->precision;
  m->autocast = s->precision == TR_BF16 || s->precision == TR_FP16;
  m->low = s->precision == TR_FP16 ? at::kHalf : s->precision == TR_BF16 ? at::kBFloat16 : at::kFloat;
  m->channels_last = s->channels_last != 0;

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
  // Process-wide switches, as torch.backends.cuda.matmul.allow_tf32,
  // torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark and
  // torch.use_deterministic_algorithms set them.
  auto &ctx = at::globalContext();
  const bool tf32 = s->precision == TR_TF32;
  ctx.setAllowTF32CuBLAS(tf32);
  ctx.setAllowTF32CuDNN(tf32);
  ctx.setBenchmarkCuDNN(s->cudnn_benchmark != 0);
  ctx.setDeterministicAlgorithms(s->deterministic != 0, /*warn_only=*/false);
  build(m.get(), s->layers, s->nlayers);
  if (s->precision == TR_FP16) {
    TORCH_CHECK(s->loss_scale > 0 && s->scale_growth > 0 && s->scale_backoff > 0 && s->scale_interval > 0,
                "loss scaling: scale ", s->loss_scale, ", growth ", s->scale_growth, ", backoff ",
                s->scale_backoff, ", interval ", s->scale_interval);
    m->scale = torch::full({}, s->loss_scale, torch::TensorOptions().dtype(torch::kFloat32).device(dev));
    m->tracker = torch::zeros({}, torch::TensorOptions().dtype(torch::kInt32).device(dev));
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
  // tr_freeze marked what does not train (in features mode: the whole base, and
  // perhaps head layers).
  std::vector<torch::Tensor> params;
  for (auto &p : m->params) {
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
  // In the parameter's memory format, as the optimizer's own state would be.
  auto load = [&](const float *src) {
    auto t = torch::empty_like(p.detach(), at::MemoryFormat::Preserve);
    t.copy_(torch::from_blob(const_cast<float *>(src), p.sizes(), torch::kFloat32));
    return t;
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
                          int64_t *correct, double *comm) {
  TR_TRY
  *comm = 0;
  apply_threads();
  TORCH_CHECK(m->opt, "optimizer not built");
  TORCH_CHECK(masks == nullptr || nmasks == n * m->mask_width, "dropout masks: got ", nmasks,
              " values, want ", n * m->mask_width);
  auto xt = input(m, x, n, h, w, c);
  auto yt = targets(m, labels, n);
  if (m->record) m->recorded.clear();
  m->opt->zero_grad();
  auto out = run_logits(m, xt, masks, /*train=*/true);
  auto l = torch::nn::functional::cross_entropy(out, yt);
  // With a process group the reducer's hooks all-reduce the (scaled, under
  // fp16) gradients during the backward pass; finish waits and writes the
  // averages back, so that every rank unscales and checks the same values.
  if (m->reducer) trddp::begin(*m->reducer);
  (m->precision == TR_FP16 ? l * m->scale : l).backward();
  if (m->reducer) *comm = trddp::finish(*m->reducer);
  if (m->precision == TR_FP16) {
    scaled_step(m);
  } else {
    m->opt->step();
  }
  if (m->record) record_tensors(m);
  *loss = l.item<double>();
  *correct = out.detach().argmax(1).eq(yt).sum().item<int64_t>();
  TR_CATCH
}

const char *tr_attach_group(tr_model *m, tr_group *g) {
  TR_TRY
  TORCH_CHECK(m->opt, "optimizer not built");
  TORCH_CHECK(!m->reducer, "a process group is already attached");
  TORCH_CHECK(m->device.is_cpu(), "device ", m->device.str(), ": only the cpu has a process group (gloo)");
  std::vector<torch::Tensor> params;  // the trained ones only: frozen parameters are not reduced
  for (auto &p : m->params) {
    if (p.requires_grad()) params.push_back(p);
  }
  m->reducer = trddp::make_reducer(g, params);
  TR_CATCH
}

const char *tr_evaluate(tr_model *m, const float *x, const int32_t *labels, int64_t n, int64_t h,
                        int64_t w, int64_t c, double *loss, int64_t *correct, float *logits,
                        int64_t nlogits) {
  TR_TRY
  apply_threads();
  torch::NoGradGuard g;
  auto xt = input(m, x, n, h, w, c);
  if (m->record) m->recorded.clear();
  auto out = run_logits(m, xt, nullptr, /*train=*/false);
  if (labels != nullptr) {
    auto yt = targets(m, labels, n);
    *loss = torch::nn::functional::cross_entropy(out, yt).item<double>();
    *correct = out.argmax(1).eq(yt).sum().item<int64_t>();
  }
  if (logits != nullptr) {
    TORCH_CHECK(out.numel() == nlogits, "logits: got room for ", nlogits, " values, want ", out.numel());
    auto dst = torch::from_blob(logits, out.sizes(), torch::kFloat32);
    dst.copy_(out);
  }
  TR_CATCH
}

const char *tr_get_loss_scale(tr_model *m, double *scale, int64_t *tracker) {
  TR_TRY
  *scale = 0;
  *tracker = 0;
  if (m->scale.defined()) {
    *scale = m->scale.item<double>();
    *tracker = m->tracker.item<int64_t>();
  }
  TR_CATCH
}

const char *tr_set_loss_scale(tr_model *m, double scale, int64_t tracker) {
  TR_TRY
  TORCH_CHECK(m->scale.defined(), "no loss scale: the precision is not fp16");
  TORCH_CHECK(scale > 0 && tracker >= 0, "loss scale ", scale, ", growth tracker ", tracker);
  m->scale.fill_(scale);
  m->tracker.fill_(tracker);
  TR_CATCH
}

const char *tr_record(tr_model *m, int32_t on) {
  TR_TRY
  m->record = on != 0;
  m->recorded.clear();
  TR_CATCH
}

const char *tr_recorded(tr_model *m, char **out) {
  TR_TRY
  *out = dup(m->recorded);
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
