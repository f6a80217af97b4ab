#!/usr/bin/env bash
# run.sh: #19's GPU check, on the lent GPU machine (torch 2.11 with CUDA, numpy and safetensors
# in its python3; no Go, no TensorFlow), from what prepare.sh built into .gpu/. One script, about
# 5 minutes on an H200 (GPU_DEADLINE, default 330 s: a command that would end past it is cut short,
# and one that would start within 15 s of it is skipped, so that the script ends in time and a
# re-run fits the device's 15 minutes), each part under its own timeout as well:
#   1. the torchrun CUDA and NCCL tests and the NVML test;
#   2. VGG16 at 224 px, `fwbench train --framework torch --gpu` against Python torch
#      (scripts/reference/torch_train.py) on the same exported batches and weights, alternating
#      Go and Python: batch 64 and 128 in fp32, tf32 and bf16, then bf16 at 128 with
#      channels_last and cuDNN autotune each on and off;
#   3. the Go loader alone at 224 px on the machine's cores, with and without augmentation
#      (dataset's BenchmarkLoader224);
#   4. bf16 parity: the first batch's loss and logits, bf16 on the GPU against fp32 on the CPU;
#   5. CUDA out of memory (VGG16, 448 px, batch 1024) must be the batch-size hint; data-parallel
#      on NCCL, world size 1.
# Results go to ./gpu-out (the data and exports to $GPU_WORK, default /tmp/fwbench-gpu) and, packed after every part (a run stopped at its limit still returns
# what it finished; the device returns at most 8 files), to $OUT/gpu-results.tgz.
# scripts/gpu/report.py turns them into docs/bench/gpu-*.json and the GPU table.
#
#   bash scripts/gpu/run.sh                  # on the GPU machine
#   GPU_REHEARSAL=1 bash scripts/gpu/run.sh  # here, on the CPU at toy sizes: checks the script
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${GPU_OUT:-gpu-out}
rm -rf "$out" && mkdir -p "$out"
py=${PYTHON:-python3}
[ -x /opt/torch/.venv/bin/python3 ] && [ -z "${PYTHON:-}" ] && py=/opt/torch/.venv/bin/python3
torchlib=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torchlib:$PWD/.gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONUNBUFFERED=1
fwb=$PWD/.gpu/fwbench
ref=$PWD/scripts/reference

# The grid: VGG16 at 224 px, 3 warm-up and 10 timed steps (13 distinct batches; the data has 1680
# training images, enough for 13 batches of 128). Rehearsal: the same commands on the CPU.
rehearsal=${GPU_REHEARSAL:-0}
S=224 per_class=560 warm=3 timed=10 batches="64 128" big=128 parity_batch=8
device=(--gpu) pydev=cuda precisions="fp32 tf32 bf16" tmo=1
if [ "$rehearsal" = 1 ]; then
	S=32 per_class=12 warm=1 timed=2 batches="4 8" big=8 parity_batch=4
	device=(--device cpu) pydev=cpu precisions="fp32 bf16" tmo=3
fi
steps=$((warm + timed))
t_start=$(date +%s)

deadline=$((${GPU_DEADLINE:-330} * tmo))
pack() { [ -z "${OUT:-}" ] || { mkdir -p "$OUT" && tar -czf "$OUT/gpu-results.tgz" "$out"; }; }
part() { echo "== [$(($(date +%s) - t_start)) s] $*" | tee -a "$out/parts.txt"; }
# limit SECONDS CMD...: run CMD under a timeout (scaled up in rehearsal, on 2 slow cores), cut to
# what is left before the deadline; status 124 without running it when less than 15 s is left.
limit() {
	local s=$(($1 * tmo)) left=$((deadline - ($(date +%s) - t_start)))
	shift
	if [ $left -lt 15 ]; then
		echo "skipped (past the deadline): ${*:1:3} ..." | tee -a "$out/parts.txt" >&2
		return 124
	fi
	[ $s -gt $((left - 5)) ] && s=$((left - 5))
	timeout -k 5 "$s" "$@"
}
# status: the grid's word for a command's exit status.
status() { case $1 in 0) echo ok ;; 124 | 137) echo timeout ;; *) echo failed ;; esac; }

part "machine"
{
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
	"$py" -c 'import sys, torch, numpy; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "nccl", torch.cuda.nccl.version() if torch.cuda.is_available() else "-", "numpy", numpy.__version__)'
	echo "cores $(nproc), rehearsal $rehearsal, load $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$out/machine.txt"
limit 60 "$fwb" doctor --json >"$out/doctor.json" 2>&1
pack

part "1. CUDA, NCCL and NVML tests"
(cd torchrun && limit 150 ../.gpu/torchrun.test -test.run 'CUDA|NCCL' -test.v -test.count=1) >"$out/cuda-tests.log" 2>&1
(cd internal/nvml && limit 60 ../../.gpu/nvml.test -test.run 'GPU' -test.v -test.count=1) >>"$out/cuda-tests.log" 2>&1
grep -E '^(--- |ok|FAIL|PASS)' "$out/cuda-tests.log" | tee -a "$out/parts.txt"
pack

part "2. VGG16 $S px: Go against Python torch, alternating"
work=${GPU_WORK:-/tmp/fwbench-gpu} # the data and exports (GBs at 224 px): never carried back
rm -rf "$work" && mkdir -p "$work"
data=$work/bench-data
limit 120 .gpu/export --synth "$data" --per-class "$per_class" --synth-size "$S" --seed 1 2>&1 | tail -1
printf 'config\tdriver\tstatus\twall_seconds\n' >"$out/grid.tsv"
# go_run NAME BATCH EXPORT FLAGS...: one fwbench run; py_run: the same in Python.
go_run() {
	local name=$1 b=$2 exp=$3 t0 rc=0
	shift 3
	t0=$(date +%s.%N)
	limit 90 "$fwb" train --framework torch "${device[@]}" --data "$data" --model vgg16 --image-size "$S" \
		--batch-size "$b" --hidden 4096 --dropout 0.5 --epochs 1 --steps-per-epoch "$steps" --warmup-steps "$warm" \
		--mode scratch --optimizer sgd --lr 0.01 --momentum 0.9 --weight-decay 0 --nesterov=false \
		--normalize rescale --augment=false --weights "$exp/init.safetensors" --seed 1 --quiet \
		--json "$out/go-$name.json" "$@" >"$out/go-$name.log" 2>&1 || rc=$?
	printf '%s\tgo\t%s\t%s\n' "$name" "$(status $rc)" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" >>"$out/grid.tsv"
}
py_run() {
	local name=$1 exp=$2 t0 rc=0
	shift 2
	t0=$(date +%s.%N)
	limit 90 "$py" "$ref/torch_train.py" --export "$exp" --steps "$steps" --warmup-steps "$warm" \
		--threads "$(nproc)" --interop-threads "$(nproc)" --lr 0.01 --momentum 0.9 --dropout 0.5 \
		--device "$pydev" --json "$out/python-$name.json" "$@" >"$out/python-$name.log" 2>&1 || rc=$?
	printf '%s\tpython\t%s\t%s\n' "$name" "$(status $rc)" "$(awk "BEGIN{print $(date +%s.%N) - $t0}")" >>"$out/grid.tsv"
}
# pair NAME BATCH EXPORT FLAGS...: Go then Python for odd pairs, Python then Go for even ones.
n_pair=0
pair() {
	local name=$1 b=$2 exp=$3
	shift 3
	n_pair=$((n_pair + 1))
	if [ $((n_pair % 2)) = 1 ]; then
		go_run "$name" "$b" "$exp" "$@"
		py_run "$name" "$exp" "$@"
	else
		py_run "$name" "$exp" "$@"
		go_run "$name" "$b" "$exp" "$@"
	fi
	tail -n 2 "$out/grid.tsv" | tr '\n' ' ' | tee -a "$out/parts.txt"
	echo | tee -a "$out/parts.txt"
}
for b in $batches; do
	exp=$work/export-b$b
	limit 120 .gpu/export --data "$data" --out "$exp" --model vgg16 --image-size "$S" --batch-size "$b" \
		--steps "$steps" --hidden 4096 --seed 1 --normalize rescale --warm >"$out/export-b$b.log" 2>&1 ||
		echo "export b$b failed: $(tail -1 "$out/export-b$b.log")"
	for prec in $precisions; do
		pair "b$b-$prec" "$b" "$exp" --precision "$prec"
	done
	pack
done
exp=$work/export-b$big
pair "b$big-bf16-cl" "$big" "$exp" --precision bf16 --channels-last
pair "b$big-bf16-bench" "$big" "$exp" --precision bf16 --cudnn-benchmark
pair "b$big-bf16-cl-bench" "$big" "$exp" --precision bf16 --channels-last --cudnn-benchmark
rm -rf "$work"/export-b*
pack

part "3. the Go loader alone at 224 px, $(nproc) cores"
limit 120 .gpu/dataset.test -test.run '^$' -test.bench 'Loader224' -test.benchtime 4x >"$out/loader.txt" 2>&1
grep -E 'Benchmark|ok|FAIL' "$out/loader.txt" | tee -a "$out/parts.txt"
pack

part "4. bf16 parity: first batch on the GPU (bf16) against the CPU (fp32)"
for d in gpu cpu; do
	flags=("${device[@]}" --precision bf16)
	[ $d = cpu ] && flags=(--device cpu --precision fp32)
	limit 120 "$fwb" train --framework torch "${flags[@]}" --data "$data" --model vgg16 --image-size "$S" \
		--batch-size "$parity_batch" --hidden 4096 --epochs 1 --steps-per-epoch 1 --warmup-steps 0 --seed 1 \
		--normalize rescale --augment=false --quiet --json "$out/parity-$d.json" >"$out/parity-$d.log" 2>&1 ||
		echo "parity run on $d failed: $(tail -1 "$out/parity-$d.log")"
done
[ -s "$out/parity-gpu.json" ] && [ -s "$out/parity-cpu.json" ] &&
	"$py" - "$out/parity-gpu.json" "$out/parity-cpu.json" <<'PY' 2>&1 | tee "$out/parity.txt"
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:3])
lg, lc = g["first_batch_logits"], c["first_batch_logits"]
scale = max(abs(v) for v in lc) or 1.0
print(f"initial loss: gpu bf16 {g['initial_loss']:.6f}, cpu fp32 {c['initial_loss']:.6f}, "
      f"relative difference {abs(g['initial_loss'] - c['initial_loss']) / abs(c['initial_loss']):.3g}")
print(f"first-batch logits: max |gpu - cpu| {max(abs(a - b) for a, b in zip(lg, lc)):.4g} "
      f"({max(abs(a - b) for a, b in zip(lg, lc)) / scale:.3g} of max |logit| {scale:.4g}); "
      f"same batch: {g['first_batch_sha256'] == c['first_batch_sha256']}")
PY
pack

part "5. CUDA out of memory, and data-parallel on NCCL (world size 1)"
if [ "$rehearsal" != 1 ]; then
	# VGG16 keeps ~100 MB of activations per 224 px image; at 448 px, 1024 images (the data has
	# 1680: a batch larger than the training set is refused before any step) need ~400 GB.
	limit 90 "$fwb" train --framework torch --gpu --data "$data" --image-size 448 --hidden 4096 \
		--batch-size 1024 --epochs 1 --steps-per-epoch 1 --quiet >"$out/oom.txt" 2>&1
	echo "exit status: $?" >>"$out/oom.txt"
	tail -n 2 "$out/oom.txt" | tee -a "$out/parts.txt"
fi
limit 90 "$fwb" train --framework torch "${device[@]}" --rank 0 --world-size 1 --master 127.0.0.1:29731 \
	--data "$data" --image-size 64 --batch-size 32 --epochs 1 --steps-per-epoch 10 --quiet \
	--json "$out/go-nccl.json" >"$out/nccl.log" 2>&1
echo "exit status: $?" >>"$out/nccl.log"
tail -n 2 "$out/nccl.log" | tee -a "$out/parts.txt"
part "done"
pack
[ -n "${OUT:-}" ] && echo "results: $OUT/gpu-results.tgz"
exit 0
