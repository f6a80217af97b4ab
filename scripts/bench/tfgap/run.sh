#!/usr/bin/env bash
# Issue #18 item 1: what tfrun's Session.Run executes for a VGG16 training step against what
# Keras' tf.function step executes (see README.md). Builds tfdump in a snapshot of the
# repository's HEAD (tfrun plus tfrun_trace.go.in, placeGraph patched to pass its GraphDef
# through tfgapDef), runs it and keras_trace.py on an export of scripts/bench/export, and
# writes summarize.py's report.
#
#   scripts/bench/tfgap/run.sh EXPORT OUT [variant...]
#
# variants (each a tfrun run into OUT/<variant>/, Keras once into OUT/keras/):
#   base      tfrun as committed
#   relu      + TFGAP_RELU_OUTPUT=1 (ReluGrad reads the Relu's output, as Python's gradient)
#   both      + TFGAP_UPDATE_DEPS=readers (updates wait only for their variable's readers)
# Default: base relu both. Set TF_ENABLE_ONEDNN_OPTS=1 on a CPU without AVX-512 to get the
# oneDNN graph that TensorFlow uses by default on AVX-512 machines (the benchmark's).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
export_dir=${1:?usage: run.sh EXPORT OUT [variant...]}
out=${2:?usage: run.sh EXPORT OUT [variant...]}
shift 2
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(base relu both)
steps=${TFGAP_STEPS:-4}
threads=${TFGAP_THREADS:-2}
py=${FWBENCH_PY:-$HOME/.cache/fwbench/pyref/bin/python}
. "$repo/scripts/env.sh"
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/tfgap.XXXXXX)
trap 'rm -rf "$work"' EXIT
git -C "$repo" archive HEAD | tar -x -C "$work"
cp "$here/tfrun_trace.go.in" "$work/tfrun/zz_tfgap_trace.go"
mkdir -p "$work/cmd/tfdump"
cp "$here/tfdump.go.in" "$work/cmd/tfdump/main.go"
anchor='g.ImportWithOptions(def.Bytes(), '
[ "$(grep -c "$anchor" "$work/tfrun/graph.go")" = 1 ] || { echo "run.sh: placeGraph's import line changed; update the patch" >&2; exit 1; }
sed -i "s/g.ImportWithOptions(def.Bytes(), /g.ImportWithOptions(tfgapDef(def.Bytes()), /" "$work/tfrun/graph.go"
(cd "$work" && go build -o "$work/tfdump" ./cmd/tfdump)
for v in "${variants[@]}"; do
	mkdir -p "$out/$v"
	case $v in
	base) envs=() ;;
	relu) envs=(TFGAP_RELU_OUTPUT=1) ;;
	both) envs=(TFGAP_RELU_OUTPUT=1 TFGAP_UPDATE_DEPS=readers) ;;
	*) echo "run.sh: unknown variant $v" >&2; exit 1 ;;
	esac
	env "${envs[@]}" "$work/tfdump" --export "$export_dir" --out "$out/$v" --steps "$steps" --threads "$threads" 2> "$out/$v/tfdump.log"
done
mkdir -p "$out/keras"
"$py" "$here/keras_trace.py" --export "$export_dir" --out "$out/keras" --steps "$steps" --threads "$threads" 2> "$out/keras/keras.log"
for v in "${variants[@]}"; do
	"$py" "$here/summarize.py" "$out/$v" "$out/keras" > "$out/summary-$v.md" 2>/dev/null
done
echo "run.sh: reports in $out/summary-*.md"
