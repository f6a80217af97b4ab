#!/usr/bin/env bash
# bench.sh: does driving the frameworks from Go cost anything? One table: for each framework,
# `fwbench train` (the Go driver) against the same training written in Python (the reference
# runs in scripts/reference/), on byte-identical batches and initial weights, in alternating
# repeats, with MFU against this machine's measured FP32 GEMM peak.
#
#   scripts/bench.sh            # the CPU grid below; writes docs/bench/*.json and the table in docs/benchmarks.md
#   scripts/bench.sh --quick    # a smoke run (64 px, batch 8, 2 repeats); writes only to the output folder
#   BENCH_PRECISION=fp32,bf16 BENCH_CELLS="64x8:2:6:5 224x8:1:2:5" scripts/bench.sh   # bf16 against fp32
#
# Every run, --quick and BENCH_DOC=0 included, leaves BENCH_OUT/summary.json (schema
# fwbench.bench-summary/v1): "rows", one per cell, precision and framework with the table's
# numbers (ratio_median and quiet_ratio_median: Go/Python step time, over all pairs and over
# quiet pairs; go_step_p50, python_step_p50, their ratios to the same cell's fp32 run,
# images/s, MFU, ...), "fairness" (one check per Go/Python pair: same first batch, weights
# and precision), "settings" (settings.txt) and "peak_gemm_gflops", so that the table can be
# re-checked by a program (scripts/bench/table.py writes it; see its doc).
#
# Environment (all optional):
#   BENCH_MODEL       the models to time, space-separated model.Names() entries (default vgg16,
#                     the table's model until now): every cell runs for each, with the same
#                     settings (--hidden applies to VGG only, --dropout to every dropout layer
#                     the model has: VGG's two, MobileNetV2's one, ResNet's none)
#   BENCH_HEAD        the head of every model (default: each model's own, model.Heads)
#   BENCH_CELLS       "SxB:warmup:timed:repeats ..." (default below)
#   BENCH_PRECISION   fp32 (default), bf16 or fp16 (tf32 needs a GPU), or a comma list such as
#                     "fp32,bf16": every cell runs in each, in the same repeats (repeat r runs
#                     every precision before repeat r+1), passed to `fwbench train --precision`,
#                     the bare driver and the Python references (--precision: torch autocast /
#                     Keras mixed policies, scripts/reference/README.md); the table has one row
#                     per cell, precision and framework, each with its own Go/Python ratio, and
#                     the step time of each precision against fp32's
#   BENCH_SPEED_FLAGS other settings that decide speed, passed to every Go and Python run alike:
#                     any of --channels-last --cudnn-benchmark --xla --deterministic (default none)
#   BENCH_THREADS     intra- and inter-op threads of every run (default: nproc)
#   BENCH_FRAMEWORKS  "torch tensorflow"
#   BENCH_OUT         output folder (default $FWBENCH_CACHE/bench/<UTC time>)
#   BENCH_PROFILE     1 (default): one extra profiled step in the last Python run of each cell
#                     and precision
#   BENCH_DOC         1 (default unless --quick): update docs/benchmarks.md and docs/bench/
#   BENCH_SECTION     the marked section of docs/benchmarks.md to rewrite (default "table"; raw
#                     JSON then goes to docs/bench/ for "table", docs/bench/<section>/ otherwise)
#   BENCH_BARE        1: also time the bare Go driver (scripts/bench/bare: the driver on the
#                     exported batches, no loader, no compare loop) in every repeat
#   BENCH_QUIET_MAX   wait (up to BENCH_QUIET_WAIT s, default 300) before each run until other
#                     processes use at most this percentage of the machine
#   FWBENCH_BIN       use this fwbench binary instead of building bin/fwbench
#
# Export, Go runs and Python runs take the model from BENCH_MODEL/BENCH_HEAD: the exporter
# writes its description (net.json) and the Python references build it with their generic
# builders (scripts/reference/torch_train.py, keras_train.py), so both sides train the same
# graph; every run record names the model and head. A cell's folder is s<S>-b<B> for vgg16
# with its default head (the names of docs/bench/cpu-s<S>-b<B>.json) and
# <model>[-<head>]-s<S>-b<B> otherwise; in it each run leaves <framework>-<precision>-<driver>-r<N>
# .json/.out/.err/.time (driver go, go-bare or python) and runs.tsv lists them all.
#
# Every run is a fresh process. Per cell and framework, repeat r runs Go then Python when r
# is odd and Python then Go when r is even (G P P G G P ...), so slow drifts of the machine
# hit both sides alike. The load average is logged before every run; measure on a quiet
# machine (load < 1.5 on 2 cores).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=env.sh
. "$here/env.sh"

quick=0
[ "${1:-}" = "--quick" ] && quick=1

# S x batch : warm-up steps : timed steps : repeats. 224 px × 32 is ~40 s a step on 2 cores:
# it gets the fewest steps and repeats.
default_cells="64x8:2:6:5 64x32:1:3:5 224x8:1:2:5 224x32:1:2:2"
[ $quick = 1 ] && default_cells="64x8:1:3:2"
cells=${BENCH_CELLS:-$default_cells}
threads=${BENCH_THREADS:-$(nproc)}
frameworks=${BENCH_FRAMEWORKS:-torch tensorflow}
profile=${BENCH_PROFILE:-1}
doc=${BENCH_DOC:-$((1 - quick))}
out=${BENCH_OUT:-$FWBENCH_CACHE/bench/$(date -u +%Y%m%dT%H%M%SZ)}
seed=1 lr=0.01 hidden=4096
models=${BENCH_MODEL:-vgg16}
precisions=$(tr ',' ' ' <<<"${BENCH_PRECISION:-fp32}")
for prec in $precisions; do
	case $prec in fp32 | tf32 | bf16 | fp16) ;; *)
		echo "bench: BENCH_PRECISION: $prec: want fp32, tf32, bf16 or fp16" >&2
		exit 2
		;;
	esac
done
read -r -a speed_flags <<<"${BENCH_SPEED_FLAGS:-}"
for f in "${speed_flags[@]}"; do
	case $f in --channels-last | --cudnn-benchmark | --xla | --deterministic) ;; *)
		echo "bench: BENCH_SPEED_FLAGS: $f: want --channels-last, --cudnn-benchmark, --xla or --deterministic" >&2
		exit 2
		;;
	esac
done
head=${BENCH_HEAD:-}

log() { printf 'bench: %s\n' "$*" >&2; }
mkdir -p "$out"
log "output in $out"

PY=$("$here/bench/pyenv.sh")
ref=$root/scripts/reference

# Build what Go runs.
fwbench=${FWBENCH_BIN:-}
if [ -z "$fwbench" ]; then
	log "building bin/fwbench"
	(cd "$root" && go build -o bin/fwbench ./cmd/fwbench)
	fwbench=$root/bin/fwbench
fi
(cd "$root" && go build -o "$out/export" ./scripts/bench/export)
bare=${BENCH_BARE:-0}
[ "$bare" = 1 ] && (cd "$root" && go build -o "$out/bare" ./scripts/bench/bare)
section=${BENCH_SECTION:-table}

# One synthetic pre-split tree for every cell: 64 training images per class (192 in all,
# enough for 6 batches of 32) and one validation image per class.
data=$FWBENCH_CACHE/bench-data-c3-n64-s224-seed$seed
"$out/export" --synth "$data" --per-class 64 --synth-size 224 --seed $seed

# Settings every run shares, recorded with the results.
{
	echo "threads=$threads"
	echo "interop_threads=$threads"
	echo "TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-(unset: TensorFlow decides by CPU; 2.21 left its oneDNN rewrites off on the AVX2-only EPYC of docs/benchmarks.md)}"
	echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-(unset)}"
	echo "GOMAXPROCS=${GOMAXPROCS:-(unset)}"
	echo "GOGC=${GOGC:-(unset)}"
	echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
	echo "cores=$(nproc)"
	echo "mem_total=$(grep MemTotal /proc/meminfo | awk '{print $2" "$3}')"
	echo "kernel=$(uname -r)"
	echo "go=$(go version | awk '{print $3}')"
	echo "python=$("$PY" -c 'import sys; print(sys.version.split()[0])')"
	echo "torch=$TORCH_VERSION"
	echo "tensorflow=$TF_VERSION"
	echo "fwbench_commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
	echo "worktree_dirty=$(cd "$root" && [ -n "$(git status --porcelain 2>/dev/null)" ] && echo yes || echo no)"
	echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "cells=$cells"
	echo "models=$models"
	echo "precisions=$precisions"
	echo "speed_flags=${speed_flags[*]:-(none)}"
	echo "head=${head:-(default of each model)}"
	echo "command=$(env | grep -E '^(BENCH_[A-Z_]+|FWBENCH_BIN)=' | sort | tr '\n' ' ')scripts/bench.sh${1:+ $1}"
} >"$out/settings.txt"

index=$out/runs.tsv
printf 'cell\tframework\tprecision\tdriver\trepeat\tjson\tstatus\twall_seconds\tload1_before\tload1_after\tgc_log\tbusy_before\tothers_cpu\n' >"$index"

# busy: the share of CPU time (all cores) that was not idle over the last second, in percent:
# what other processes take from a run that starts now. The load average lags by minutes.
busy() {
	local a b
	a=($(head -1 /proc/stat))
	sleep 1
	b=($(head -1 /proc/stat))
	local idle=$(((b[4] + b[5]) - (a[4] + a[5]))) total=0 i
	for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
	echo $((total > 0 ? 100 * (total - idle) / total : 0))
}

# wait_quiet: with BENCH_QUIET_MAX=P (percent), wait up to BENCH_QUIET_WAIT seconds (default
# 300) until busy() is at most P; report what it was.
wait_quiet() {
	local b waited=0
	b=$(busy)
	while [ -n "${BENCH_QUIET_MAX:-}" ] && [ "$b" -gt "$BENCH_QUIET_MAX" ] && [ $waited -lt "${BENCH_QUIET_WAIT:-300}" ]; do
		sleep 4
		waited=$((waited + 5))
		b=$(busy)
	done
	echo "$b"
}

# cpu_busy_ticks: busy (non-idle) CPU ticks of the whole machine since boot.
cpu_busy_ticks() {
	local a
	a=($(head -1 /proc/stat))
	echo $((a[1] + a[2] + a[3] + a[6] + a[7] + a[8]))
}
hz=$(getconf CLK_TCK)

# run_one CELL FW PRECISION DRIVER REPEAT CMD...: run one process, log it in the index. Besides its
# wall time it records how busy the machine was just before it (busy_before, %) and how
# much CPU other processes used while it ran (others_cpu: their CPU seconds divided by
# wall time × cores): a run with a large others_cpu was measured on a shared machine.
run_one() {
	local cell=$1 fw=$2 prec=$3 driver=$4 rep=$5
	shift 5
	local base=$out/$cell/$fw-$prec-$driver-r$rep
	local l0 l1 t0 t1 b0 k0 k1 wall own others status=ok
	b0=$(wait_quiet)
	l0=$(cut -d' ' -f1 /proc/loadavg)
	k0=$(cpu_busy_ticks)
	t0=$(date +%s.%N)
	if ! /usr/bin/time -f '%U %S' -o "$base.time" "$@" >"$base.out" 2>"$base.err"; then
		status=failed
		log "  $cell $fw $prec $driver r$rep FAILED (see $base.err)"
	fi
	t1=$(date +%s.%N)
	k1=$(cpu_busy_ticks)
	l1=$(cut -d' ' -f1 /proc/loadavg)
	wall=$(awk "BEGIN{print $t1 - $t0}")
	own=$(awk '{s = $1 + $2} END {print s + 0}' "$base.time")
	others=$(awk "BEGIN{o = ($k1 - $k0) / $hz - $own; if (o < 0) o = 0; printf \"%.3f\", o / ($wall * $(nproc))}")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cell" "$fw" "$prec" "$driver" "$rep" "$base.json" "$status" \
		"$wall" "$l0" "$l1" "$base.err" "$b0" "$others" >>"$index"
	log "  $cell $fw $prec $driver r$rep: $status in $(awk "BEGIN{printf \"%.1f\", $wall}") s (busy before $b0%, others' CPU during ${others}, load $l0 -> $l1)"
}

b0=$(wait_quiet)
echo "peak_gemm_busy_before=$b0" >>"$out/settings.txt"
log "peak FP32 GEMM (torch.mm, tf.linalg.matmul; $threads threads)"
"$PY" "$ref/peak_gemm.py" --threads "$threads" --json "$out/peak-gemm.json" 2> >(grep -v -e oneDNN -e absl -e cpu_feature_guard -e 'rebuild TensorFlow' >&2)

for c in $cells; do
	IFS=: read -r sb warm timed reps <<<"$c"
	S=${sb%x*} B=${sb#*x}
	steps=$((warm + timed))
	for model in $models; do
		cell=s${S}-b$B
		if [ "$model" != vgg16 ] || [ -n "$head" ]; then
			cell=$model${head:+-$head}-$cell
		fi
		mkdir -p "$out/$cell"
		log "cell $cell ($model${head:+, head $head}): $warm warm-up + $timed timed steps, $reps repeats"
		"$out/export" --data "$data" --out "$out/$cell/export" --model "$model" --head "$head" --image-size "$S" \
			--batch-size "$B" --steps "$steps" --hidden $hidden --seed $seed --normalize rescale --warm
		for rep in $(seq 1 "$reps"); do
			for prec in $precisions; do
				for fw in $frameworks; do
					name=$fw-$prec
					# Every setting spelled out: the defaults of `fwbench train` may change.
					go_cmd=(env GODEBUG=gctrace=1 "$fwbench" train --framework "$fw" --data "$data" --model "$model"
						--head "$head" --image-size "$S" --batch-size "$B" --hidden $hidden --dropout 0.5 --epochs 1
						--steps-per-epoch "$steps" --warmup-steps "$warm" --threads "$threads" --mode scratch
						--optimizer sgd --lr $lr --momentum 0.9 --weight-decay 0 --nesterov=false
						--normalize rescale --augment=false --device cpu --precision "$prec" "${speed_flags[@]}"
						--weights "$out/$cell/export/init.safetensors" --seed $seed --quiet --json "$out/$cell/$name-go-r$rep.json")
					script=torch_train.py
					[ "$fw" = tensorflow ] && script=keras_train.py
					py_cmd=("$PY" "$ref/$script" --export "$out/$cell/export" --steps "$steps" --warmup-steps "$warm"
						--threads "$threads" --interop-threads "$threads" --lr $lr --momentum 0.9 --dropout 0.5
						--precision "$prec" "${speed_flags[@]}" --json "$out/$cell/$name-python-r$rep.json")
					if [ "$profile" = 1 ] && [ "$rep" = "$reps" ]; then
						py_cmd+=(--profile "$out/$cell/$name-python-profile.json")
					fi
					bare_cmd=(env GODEBUG=gctrace=1 "$out/bare" --framework "$fw" --export "$out/$cell/export" --steps "$steps"
						--warmup-steps "$warm" --threads "$threads" --lr $lr --momentum 0.9 --dropout 0.5
						--precision "$prec" "${speed_flags[@]}" --json "$out/$cell/$name-go-bare-r$rep.json")
					if [ $((rep % 2)) = 1 ]; then
						run_one "$cell" "$fw" "$prec" go "$rep" "${go_cmd[@]}"
						[ "$bare" = 1 ] && run_one "$cell" "$fw" "$prec" go-bare "$rep" "${bare_cmd[@]}"
						run_one "$cell" "$fw" "$prec" python "$rep" "${py_cmd[@]}"
					else
						run_one "$cell" "$fw" "$prec" python "$rep" "${py_cmd[@]}"
						[ "$bare" = 1 ] && run_one "$cell" "$fw" "$prec" go-bare "$rep" "${bare_cmd[@]}"
						run_one "$cell" "$fw" "$prec" go "$rep" "${go_cmd[@]}"
					fi
				done
			done
		done
	done
done
echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/settings.txt"

# table.py always writes $out/summary.json; with BENCH_DOC=1 also the doc's table and raw JSON.
table_args=(--run-dir "$out" --section "$section")
if [ "$doc" = 1 ]; then
	raw=$root/docs/bench
	[ "$section" != table ] && raw=$raw/$section
	table_args+=(--doc "$root/docs/benchmarks.md" --raw "$raw")
fi
"$PY" "$here/bench/table.py" "${table_args[@]}"
log "done: $out"
