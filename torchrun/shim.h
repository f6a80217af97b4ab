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

// One Linear layer of the head (vgg.HeadLayer).
typedef struct {
	int32_t index;   // torchvision index in "classifier": classifier.<index>.weight|bias
	int32_t in, out;
	int32_t hidden;  // 1: followed by ReLU and a dropout mask
} tr_head_layer;

typedef struct {
	const int32_t *layers; // output channels per convolution, -1 for a 2x2 max pool
	int32_t nlayers;
	int32_t batchnorm;   // BatchNorm2d after every convolution
	int32_t image_size;  // S
	const tr_head_layer *head;  // the head's Linear layers in order; the last gives the logits
	int32_t nhead;
	int32_t head_pool;   // 1: adaptive average pool to 7x7 between the base and the head
	int32_t features;    // 1: "features" mode (frozen base in eval mode, no graph through it)
	int32_t optimizer;   // 0: SGD, 1: Adam
	double lr, momentum, weight_decay;
	int32_t nesterov;
	double beta1, beta2, eps;
	const char *device;  // "cpu", "cuda", "cuda:N"
} tr_spec;

// Threads and library facts. The first call of any of these (or of tr_new)
// loads libtorch_cuda.so when the dynamic loader finds it.
const char *tr_set_threads(int32_t intra, int32_t interop, int32_t *interop_set);
const char *tr_get_threads(int32_t *intra, int32_t *interop);  // as the calling thread sees them
const char *tr_version(char **out);             // malloc'ed, from the loaded library
const char *tr_cuda_device_count(int64_t *out);  // loads libtorch_cuda.so on first call

// Model lifetime. tr_new builds the model on the CPU; set its tensors with
// tr_set_tensor and exclude parameters from training with tr_freeze, then
// tr_prepare moves it to the device and builds the optimizer over the
// parameters that are not frozen.
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

// One training step: forward, cross-entropy, backward, optimizer step.
// x is NHWC float32 (n*h*w*c values), labels n int32 class indices.
// masks: NULL for no dropout, else nmasks = n*(sum of the hidden layers' out) values, the
// [n, out] dropout mask of each hidden head layer in order, which multiplies the layer's
// activation after ReLU. correct receives the batch's top-1 hits in training mode (dropout
// on), as Keras reports training accuracy.
const char *tr_train_step(tr_model *m, const float *x, const int32_t *labels, int64_t n,
                          int64_t h, int64_t w, int64_t c, const float *masks, int64_t nmasks,
                          double *loss, int64_t *correct);
// Evaluation (eval mode, no gradients). labels may be NULL (then loss and
// correct are not computed); logits may be NULL, else it receives n*classes values.
const char *tr_evaluate(tr_model *m, const float *x, const int32_t *labels, int64_t n, int64_t h,
                        int64_t w, int64_t c, double *loss, int64_t *correct, float *logits);

const char *tr_sync(tr_model *m);
const char *tr_peak_gpu_bytes(tr_model *m, int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
