// The process-wide switches of TensorFlow that its C API does not expose:
// op determinism (what tf.config.experimental.enable_op_determinism sets),
// TensorFloat-32 execution (tf.config.experimental.enable_tensor_float_32_execution)
// and cuDNN autotuning (TF_CUDNN_USE_AUTOTUNE as the kernels read it). All
// four are exported, unversioned, by libtensorflow_framework.so.2 (nm -D);
// the extern "C" wrappers keep C++ out of cgo. None of them throws.

#include "switches.h"

namespace tsl {
void EnableOpDeterminism(bool enabled);
bool OpDeterminismRequired();
void enable_tensor_float_32_execution(bool enabled);
bool tensor_float_32_execution_enabled();
bool CudnnUseAutotune();
}  // namespace tsl

extern "C" {

void tfrun_enable_op_determinism(int on) { tsl::EnableOpDeterminism(on != 0); }
int tfrun_op_determinism_required(void) { return tsl::OpDeterminismRequired() ? 1 : 0; }
void tfrun_enable_tf32(int on) { tsl::enable_tensor_float_32_execution(on != 0); }
int tfrun_tf32_enabled(void) { return tsl::tensor_float_32_execution_enabled() ? 1 : 0; }
int tfrun_cudnn_use_autotune(void) { return tsl::CudnnUseAutotune() ? 1 : 0; }

}  // extern "C"
