#!/usr/bin/env bash
# prepare.sh: build, here, everything the CUDA check needs on a GPU machine that has no Go and
# no TensorFlow (the lent device machine: torch 2.11 with CUDA in its python3), into .gpu/
# (git-ignored). Then run there:  bash scripts/gpu/run.sh   (carry .gpu)
#
# The binaries link libtorch_cpu/libc10 by name; run.sh puts the GPU machine's own torch/lib
# first on LD_LIBRARY_PATH, and torchrun loads libtorch_cuda.so from it by name.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/../.."
# The reference environment holds a CUDA torch with its nvidia-* wheels: the NCCL plugin
# (data-parallel on CUDA) is built against it.
py=$(scripts/bench/pyenv.sh)
FWBENCH_NCCL_SITE=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') SKIP_BUILD=1 scripts/setup.sh
. scripts/env.sh
rm -rf .gpu && mkdir -p .gpu
go build -tags "notensorflow nohdf5" -o .gpu/fwbench ./cmd/fwbench
go test -c -o .gpu/torchrun.test ./torchrun
go test -c -o .gpu/nvml.test ./internal/nvml
cp "$FWBENCH_CGOTORCH_DIR/libcgotorch.so" "$FWBENCH_CGOTORCH_DIR/libfwbench_nccl.so" .gpu/
.gpu/fwbench dataset synth --out .gpu/data --classes 3 --per-class 40 --size 64 --seed 1 >/dev/null
du -sh .gpu
