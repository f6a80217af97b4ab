// shim.h: the C interface between torchrun's Go code and libtorch (shim.cc).
//
// Contract (gotorch's, without its panics): every function that can fail returns
// const char*: NULL on success, else a message that the caller frees with
// tr_free_error.
// Every C++ body runs inside try/catch; no exception crosses extern "C".
// A message that starts with TR_OOM_PREFIX reports an out-of-memory condition.
#ifndef TORCHRUN_SHIM_H
#define TORCHRUN_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TR_OOM_PREFIX "oom: "

typedef struct tr_model tr_model;

// tr_free_error frees a message returned by any function below.
void tr_free_error(const char *e);

// Layer operations: the values of Go's model.Op.
enum {
	TR_CONV = 0,
	TR_BATCH_NORM = 1,
	TR_RELU = 2,
	TR_RELU6 = 3,
	TR_MAX_POOL = 4,
	TR_ADAPTIVE_AVG_POOL = 5,
	TR_ADD = 6,
	TR_FLATTEN = 7,
	TR_LINEAR = 8,
	TR_DROPOUT = 9,
};

// One layer of the net (model.Layer), in an order where every input comes
// first. Tensors are named name + ".weight", ".bias", ".running_mean",
// ".running_var" (torchvision's state-dict names).
typedef struct {
	int32_t op;                   // TR_*
	int32_t ninputs;              // 1, or 2 for TR_ADD
	int32_t in0, in1;             // indices of earlier layers, -1 for the image
	int32_t in_c;                 // input channels (TR_LINEAR: input features)
	int32_t width;                // TR_DROPOUT: mask values per image (C·H·W of the input)
	int32_t out;                  // TR_CONV: output channels; TR_LINEAR: output features
	int32_t kernel, stride, pad;  // TR_CONV, TR_MAX_POOL
	int32_t groups;               // TR_CONV
	int32_t bias;                 // TR_CONV: 1 with a bias (TR_LINEAR always has one)
	int32_t size;                 // TR_ADAPTIVE_AVG_POOL: output side
	int32_t head;                 // 1: part of the head (trains in features mode)
	const char *name;             // module path; may be "" for layers without tensors
} tr_layer;

typedef struct {
	const tr_layer *layers;  // the net, topologically ordered; the last layer gives the logits
	int32_t nlayers;
	int32_t features;        // 1: "features" mode (non-head layers: no graph, BatchNorm in eval mode)
	int32_t optimizer;       // 0: SGD, 1: Adam
	double lr, momentum, weight_decay;
	int32_t nesterov;
	double beta1, beta2, eps;
	double bn_momentum, bn_eps;
	const char *device;      // "cpu", "cuda:N"
	// Precision and the settings that decide speed (recipe.Config).
	int32_t precision;       // TR_FP32, TR_TF32, TR_BF16, TR_FP16
	int32_t channels_last;   // 1: 4-D conv weights and the input in torch.channels_last
	int32_t cudnn_benchmark; // process-wide: at::globalContext().setBenchmarkCuDNN
	int32_t deterministic;   // process-wide: setDeterministicAlgorithms(det, warn_only=false)
	// TR_FP16's dynamic loss scaling (torch.amp.GradScaler): initial scale,
	// growth and backoff factors, growth interval.
	double loss_scale, scale_growth, scale_backoff;
	int32_t scale_interval;
} tr_spec;

// Precisions (tr_spec.precision). TR_BF16 and TR_FP16 run the forward pass
// under autocast (torch.autocast's C++ state) with float32 parameters.
enum {
	TR_FP32 = 0,
	TR_TF32 = 1,
	TR_BF16 = 2,
	TR_FP16 = 3,
};

// Threads and library facts. The first call of any of these (or of tr_new)
// loads libtorch_cuda.so when the dynamic loader finds it.
const char *tr_set_threads(int32_t intra, int32_t interop, int32_t *interop_set);
const char *tr_get_threads(int32_t *intra, int32_t *interop);  // as the calling thread sees them
const char *tr_version(char **out);             // malloc'ed, from the loaded library
const char *tr_cuda_device_count(int64_t *out);  // loads libtorch_cuda.so on first call
// tr_settings describes settings that affect speed as malloc'ed "key=value\n"
// lines, read back from libtorch's global context; m (may be NULL) adds the
// model's own: precision and memory_format.
const char *tr_settings(tr_model *m, char **out);

// Model lifetime. tr_new sets the process-wide switches of the spec (TF32 for
// cuBLAS and cuDNN: on for TR_TF32, off otherwise; the cuDNN autotuner;
// deterministic algorithms) and creates every tensor on the device (zeros); set
// them with tr_set_tensor and exclude parameters from training with
// tr_freeze, then tr_prepare builds the optimizer over the parameters that
// are not frozen.
const char *tr_new(const tr_spec *spec, tr_model **out);
const char *tr_freeze(tr_model *m, const char *name);
const char *tr_prepare(tr_model *m);
void tr_free(tr_model *m);

// Tensors by canonical torchvision name (parameters and BatchNorm buffers).
const char *tr_set_tensor(tr_model *m, const char *name, const float *data, int64_t numel);
const char *tr_get_tensor(tr_model *m, const char *name, float *out, int64_t numel);

// Optimizer state of one parameter. kind: 0 momentum_buffer (SGD), 1 exp_avg,
// 2 exp_avg_sq (Adam). *present is 0 when the optimizer holds no state for it yet.
const char *tr_get_state(tr_model *m, const char *name, int32_t kind, float *out, int64_t numel,
                         int64_t *step, int32_t *present);
// Sets the whole state of one parameter: SGD uses a (momentum buffer); Adam uses
// a (exp_avg), b (exp_avg_sq) and step.
const char *tr_set_state(tr_model *m, const char *name, const float *a, const float *b,
                         int64_t numel, int64_t step);
const char *tr_clear_state(tr_model *m);

// Data-parallel training (parallel.cc, libtorch's c10d). tr_group_new joins a
// process group: a c10d::TCPStore at host:port (rank 0 serves it; every rank
// waits for all world ranks to connect) and, over it, a c10d::ProcessGroupNCCL
// when nccl is not 0 (made by the NCCL plugin, ncclplugin.h; CUDA tensors only)
// or else a c10d::ProcessGroupGloo, whose device binds the comma-separated
// network interfaces ifaces when that is not empty, else the local address
// address. timeout_ms bounds the store's
// waits and every collective. tr_group_free closes the process group, then adds
// the rank to the store's count of closed ranks; rank 0, whose process serves
// the store, then waits (wait_peers 1, at most wait_ms) until every rank has
// closed before it stops serving. wait_peers 0 says the group failed: NCCL's
// communicators are then aborted rather than finalized. It frees g even when
// it returns a message.
typedef struct tr_group tr_group;
const char *tr_group_new(const char *host, int32_t port, int32_t rank, int32_t world, int64_t timeout_ms,
                         int32_t nccl, const char *address, const char *ifaces, tr_group **out);
// tr_nccl_probe loads libtorch_cuda.so and the NCCL plugin (once per process)
// and sets *built_for (malloc'ed) to what the plugin was compiled against,
// "torch X.Y.Z nccl A.B.C"; its message says why NCCL cannot be used.
const char *tr_nccl_probe(char **built_for);
const char *tr_group_free(tr_group *g, int32_t wait_peers, int64_t wait_ms);
// tr_attach_group makes m's training steps average the gradients of its trained
// parameters over g's ranks before the optimizer's update (torch DDP's bucketed
// all-reduce, overlapped with the backward pass). Call it after tr_prepare. g
// must outlive m's last training step; m keeps the process group itself alive.
const char *tr_attach_group(tr_model *m, tr_group *g);

// One training step: forward (under autocast for TR_BF16 and TR_FP16),
// cross-entropy on the float32 logits, backward, optimizer step. TR_FP16 scales
// the loss, unscales the gradients and skips the optimizer step when one of them
// is not finite, then updates the scale (GradScaler's scale, unscale_, step, update).
// x is NHWC float32 (n*h*w*c values), labels n int32 class indices.
// masks: NULL for no dropout, else nmasks = n * (sum of the TR_DROPOUT layers' width)
// values: the [n, width] mask of each dropout layer in layer order, which multiplies
// that layer's input. correct receives the batch's top-1 hits in training mode.
// With a process group (tr_attach_group) the gradients are averaged over the ranks
// after the backward pass and before fp16's unscaling and the update; comm receives
// the seconds the step waited for those all-reduces after its backward pass (0
// without a group).
const char *tr_train_step(tr_model *m, const float *x, const int32_t *labels, int64_t n,
                          int64_t h, int64_t w, int64_t c, const float *masks, int64_t nmasks,
                          double *loss, int64_t *correct, double *comm);
// Evaluation (eval mode, no gradients, no dropout, the model's autocast; logits
// and loss in float32). labels may be NULL (then loss
// and correct are not computed); logits may be NULL, else it receives n*classes values.
const char *tr_evaluate(tr_model *m, const float *x, const int32_t *labels, int64_t n, int64_t h,
                        int64_t w, int64_t c, double *loss, int64_t *correct, float *logits,
                        int64_t nlogits);

// TR_FP16's loss scale and growth tracker (GradScaler's _scale and
// _growth_tracker); both 0 for other precisions, where set is refused.
const char *tr_get_loss_scale(tr_model *m, double *scale, int64_t *tracker);
const char *tr_set_loss_scale(tr_model *m, double scale, int64_t tracker);

// A debug record of the calls that follow tr_record(m, 1) (until tr_record(m, 0)):
// tr_recorded returns, as malloc'ed text, what the last such tr_train_step or
// tr_evaluate saw: one line per layer output, "layer <index> <dtype>
// <channels_last-contiguous 0|1> <contiguous 0|1>", and after a training step one
// line per named tensor, "tensor <name> <dtype> <grad dtype or ->".
const char *tr_record(tr_model *m, int32_t on);
const char *tr_recorded(tr_model *m, char **out);

const char *tr_sync(tr_model *m);
const char *tr_peak_gpu_bytes(tr_model *m, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
