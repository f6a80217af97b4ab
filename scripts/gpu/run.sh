#!/usr/bin/env bash
# run.sh: the CUDA check, on the GPU machine, from what prepare.sh built. Writes its results
# under ./gpu-out (the CUDA tests' log, run records at 224 px, the OOM check, and a Python
# PyTorch baseline on the same card when torch_train.py is present) and, the device machine
# returning at most 8 files, one archive of them: $OUT/gpu-results.tgz.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=gpu-out
mkdir -p "$out"
py=${PYTHON:-python3}
torchlib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torchlib:$PWD/.gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
"$py" -c 'import torch; print("python torch", torch.__version__, torch.version.cuda)' | tee -a "$out/gpu.txt"

echo "== doctor"
.gpu/fwbench doctor --json | tee "$out/doctor.json"
echo "== CUDA tests"
(cd torchrun && ../.gpu/torchrun.test -test.run 'CUDA|NCCL' -test.v -test.count=1) 2>&1 | tee "$out/cuda-tests.log"
echo "== NVML (peak GPU memory for both frameworks)"
(cd internal/nvml && ../../.gpu/nvml.test -test.run 'GPU' -test.v -test.count=1) 2>&1 | tee -a "$out/cuda-tests.log"
echo "== precision and speed settings, VGG16 224 px, batch 128 (#15)"
i=0
for flags in "--precision fp32" "--precision tf32" "--precision bf16" "--precision bf16 --channels-last" \
	"--precision bf16 --cudnn-benchmark" "--precision bf16 --channels-last --cudnn-benchmark"; do
	i=$((i + 1))
	echo "-- $flags"
	# shellcheck disable=SC2086 # $flags is a list of flags
	.gpu/fwbench train --framework torch --gpu --data .gpu/data --model vgg16 --image-size 224 \
		--hidden 4096 --batch-size 128 --epochs 1 --steps-per-epoch 15 --warmup-steps 5 \
		--optimizer sgd --lr 0.01 $flags --quiet --json "$out/go-settings-$i.json" 2>&1 | tail -2
done
for b in 64 128; do
	echo "== train --gpu, VGG16 224 px, batch $b"
	.gpu/fwbench train --framework torch --gpu --data .gpu/data --model vgg16 --image-size 224 \
		--hidden 4096 --batch-size $b --epochs 1 --steps-per-epoch 15 --warmup-steps 5 \
		--optimizer sgd --lr 0.01 --json "$out/go-b$b.json" 2>&1 | tail -4
done
echo "== data-parallel on NCCL, world size 1 (#16: the wiring on one GPU)"
.gpu/fwbench train --framework torch --gpu --rank 0 --world-size 1 --master 127.0.0.1:29731 --data .gpu/data \
	--image-size 64 --batch-size 32 --epochs 1 --steps-per-epoch 10 --json "$out/go-nccl.json" 2>&1 | tail -3
echo "== out of memory must be a clear error (batch 4096 at 224 px)"
.gpu/fwbench train --framework torch --gpu --data .gpu/data --image-size 224 --hidden 4096 \
	--batch-size 4096 --epochs 1 --steps-per-epoch 1 --quiet 2>&1 | tail -3 | tee "$out/oom.txt"
echo "exit status: ${PIPESTATUS[0]}" | tee -a "$out/oom.txt"
if [ -f scripts/reference/torch_train.py ]; then
	echo "== Python PyTorch on the same card (see scripts/reference/README.md)"
	"$py" scripts/reference/torch_train.py --help >/dev/null 2>&1 && echo "run it by hand with the bench settings" | tee "$out/python.txt"
fi
if [ -n "${OUT:-}" ]; then
	tar -czf "$OUT/gpu-results.tgz" "$out" && echo "results: $OUT/gpu-results.tgz"
fi
