#!/usr/bin/env bash
# prepare.sh: build, here, everything the CUDA check needs on a GPU machine that has no Go and
# no TensorFlow (the lent device machine: torch 2.11 with CUDA in its python3), into .gpu/
# (git-ignored): the torch-only fwbench, the exporter, the torchrun, NVML and dataset test
# binaries, gotorch's library and the NCCL plugin. Then run there:  bash scripts/gpu/run.sh
# (carry .gpu). Rehearse it here first:  GPU_REHEARSAL=1 bash scripts/gpu/run.sh
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
# Stripped (-s -w): the device takes at most 64 MiB of carried files.
strip=(-ldflags "-s -w")
go build -tags "notensorflow nohdf5" "${strip[@]}" -o .gpu/fwbench ./cmd/fwbench
go build -tags "notensorflow nohdf5" "${strip[@]}" -o .gpu/export ./scripts/bench/export
go test -c "${strip[@]}" -o .gpu/torchrun.test ./torchrun
go test -c "${strip[@]}" -o .gpu/nvml.test ./internal/nvml
go test -c -tags nohdf5 "${strip[@]}" -o .gpu/dataset.test ./dataset
cp "$FWBENCH_CGOTORCH_DIR/libcgotorch.so" "$FWBENCH_CGOTORCH_DIR/libfwbench_nccl.so" .gpu/
du -sh .gpu
