// C declarations of switches.cc's wrappers around TensorFlow's process-wide
// switches (tsl::EnableOpDeterminism, tsl::enable_tensor_float_32_execution,
// tsl::CudnnUseAutotune).
#ifndef TFRUN_SWITCHES_H
#define TFRUN_SWITCHES_H
#ifdef __cplusplus
extern "C" {
#endif
void tfrun_enable_op_determinism(int on);
int tfrun_op_determinism_required(void);
void tfrun_enable_tf32(int on);
int tfrun_tf32_enabled(void);
int tfrun_cudnn_use_autotune(void);
#ifdef __cplusplus
}
#endif
#endif
