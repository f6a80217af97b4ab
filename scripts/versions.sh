# Pinned versions of everything scripts/setup.sh provisions. Sourced by the other scripts.
# Change a version here and the cache prefix changes with it, so old and new never mix.
TORCH_VERSION=2.11.0
# torch 2.11's PyPI wheel is a CUDA 13 build: libtorch_cpu.so has DT_NEEDED entries for
# libcudart.so.13 and libcupti.so.13, which these two wheels ship. Both load without a GPU.
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
# torchrun's NCCL plugin (FWBENCH_NCCL_SITE) includes c10d's ProcessGroupNCCL.hpp, which pulls in
# cuda_runtime.h: its crt/ and nv/ headers come from these two small header-only wheels (a CUDA
# torch's own wheels do not ship them).
CUDA_CRT_VERSION=13.0.88
CUDA_CCCL_VERSION=13.0.85
TF_VERSION=2.21.0
GOTORCH_VERSION=v0.0.0-20201028015551-9afed2f3ad7b
FWBENCH_CACHE=${FWBENCH_CACHE:-$HOME/.cache/fwbench}
FWBENCH_PREFIX=${FWBENCH_PREFIX:-$FWBENCH_CACHE/rt-torch$TORCH_VERSION-tf$TF_VERSION}
