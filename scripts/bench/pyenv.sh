#!/usr/bin/env bash
# pyenv.sh: make (once) the Python environment of the reference runs and print its python.
#
#   PY=$(scripts/bench/pyenv.sh)        # idempotent; prints e.g. ~/.cache/fwbench/pyref/bin/python
#   scripts/bench/pyenv.sh --check      # exit 1 unless the environment is there and right
#
# The venv lives in $FWBENCH_CACHE/pyref and holds torch==$TORCH_VERSION (the PyPI wheel,
# a CUDA build that runs on the CPU) and tensorflow-cpu==$TF_VERSION from scripts/versions.sh:
# the very wheels whose libraries scripts/setup.sh unpacks for the Go build (pip installs
# them from $FWBENCH_CACHE/wheels when they are cached there), plus numpy, safetensors and
# torchvision (the release made for that torch: scripts/reference/make_model_fixtures.py
# builds its ResNets and MobileNetV2) at the versions pinned below. torch's CUDA dependency
# wheels are downloaded once on a fresh machine (about 3 GB): that is acceptable for
# benchmarks and never done by tests or CI.
#
# Inputs: FWBENCH_CACHE (default ~/.cache/fwbench), PYTHON (default: python3.11 if present,
# else python3; the cached wheels are cp311 builds).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../versions.sh
. "$here/../versions.sh"

NUMPY_VERSION=2.4.6
SAFETENSORS_VERSION=0.8.0
# h5py comes with Keras anyway; pinned so that make_keras_fixtures.py's h5py-written files do not drift.
H5PY_VERSION=3.14.0
# torchvision 0.26 is the release made for torch 2.11; it imports PIL (its datasets) at import time.
TORCHVISION_VERSION=0.26.0
PILLOW_VERSION=13.0.0

venv=$FWBENCH_CACHE/pyref
wheels=$FWBENCH_CACHE/wheels
want="torch=$TORCH_VERSION tensorflow=$TF_VERSION numpy=$NUMPY_VERSION safetensors=$SAFETENSORS_VERSION torchvision=$TORCHVISION_VERSION"

log() { printf 'pyenv: %s\n' "$*" >&2; }
die() { printf 'pyenv: error: %s\n' "$*" >&2; exit 1; }

# have: the versions the venv's python really imports, in the format of $want.
have() {
	"$venv/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as md
def v(d):
    try:
        return md.version(d).split("+")[0]
    except md.PackageNotFoundError:
        return "none"
print(f"torch={v('torch')} tensorflow={v('tensorflow-cpu')} numpy={v('numpy')} safetensors={v('safetensors')} "
      f"torchvision={v('torchvision')}")
PY
}

stamp=$venv/.fwbench-pyenv
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/python" ]; then
	echo "$venv/bin/python"
	exit 0
fi
if [ -x "$venv/bin/python" ] && [ "$(have)" = "$want" ]; then
	echo "$want" >"$stamp"
	echo "$venv/bin/python"
	exit 0
fi
[ "${1:-}" = "--check" ] && die "the reference environment in $venv is missing or has other versions (want $want, have $(have || echo none))"

# A venv made before torchvision was pinned: add torchvision and pillow (--no-deps: they must
# not move torch or numpy) instead of making the whole environment again.
if [ -x "$venv/bin/python" ] && [ "$(have)" = "${want% torchvision=*} torchvision=none" ]; then
	log "adding torchvision==$TORCHVISION_VERSION to $venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
		"torchvision==$TORCHVISION_VERSION" "pillow==$PILLOW_VERSION" >&2 ||
		die "pip could not install torchvision==$TORCHVISION_VERSION"
	if [ "$(have)" = "$want" ]; then
		echo "$want" >"$stamp"
		echo "$venv/bin/python"
		exit 0
	fi
fi

py=${PYTHON:-}
if [ -z "$py" ]; then
	py=$(command -v python3.11 || command -v python3) || die "no python3 found"
fi
pyver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "$pyver" = 3.11 ] || log "warning: $py is Python $pyver; the cached wheels are cp311 builds, pip will fetch others"

log "creating $venv ($want) with $py"
rm -rf "$venv"
"$py" -m venv "$venv"
links=()
[ -d "$wheels" ] && links=(--find-links "$wheels")
# Without the stamp (written last) a broken or partial venv is made again on the next call.
"$venv/bin/pip" install --quiet --disable-pip-version-check "${links[@]}" \
	"torch==$TORCH_VERSION" "tensorflow-cpu==$TF_VERSION" \
	"numpy==$NUMPY_VERSION" "safetensors==$SAFETENSORS_VERSION" "h5py==$H5PY_VERSION" \
	"torchvision==$TORCHVISION_VERSION" "pillow==$PILLOW_VERSION" >&2 ||
	die "pip could not install $want"
got=$(have)
[ "$got" = "$want" ] || die "the new environment has $got, want $want"
echo "$want" >"$stamp"
log "ready: $venv"
echo "$venv/bin/python"
