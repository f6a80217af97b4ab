#!/usr/bin/env bash
# setup.sh: provision the pinned native runtimes (libtorch, the TensorFlow C API, gotorch's
# C++ layer) into one cache prefix and build bin/fwbench.
#
#   scripts/setup.sh            provision (idempotent, cached) and build bin/fwbench
#   scripts/setup.sh --check    only report what is provisioned; exit 1 if anything is missing
#
# Inputs (all optional):
#   FWBENCH_CACHE      cache root (default ~/.cache/fwbench); wheels are kept in $FWBENCH_CACHE/wheels
#   LIBTORCH_DIR       an existing libtorch (official archive, Debian, Docker /usr/local): include/ + lib/
#   LIBTENSORFLOW_DIR  an existing libtensorflow (official C archive): include/ + lib/
#   SKIP_BUILD=1       provision only, do not build bin/fwbench
#   FWBENCH_VARIANT=cuda  install the CUDA builds (torch==TORCH_VERSION, tensorflow[and-cuda]==TF_VERSION)
#                      into two venvs in the prefix (their NCCL wheels collide in one) and use them
#                      as LIBTORCH_DIR / LIBTENSORFLOW_DIR (Dockerfile.cuda does this), and build
#                      the NCCL plugin against torch's
#   FWBENCH_NCCL_SITE  the site-packages of a CUDA build of torch==TORCH_VERSION with its nvidia-*
#                      wheels: build torchrun's NCCL plugin (libfwbench_nccl.so, data-parallel on
#                      CUDA) against it, next to libcgotorch.so (scripts/gpu/prepare.sh does this)
#
# Nothing here is needed at `go build`/`go test` time except what it leaves in the prefix:
# those commands never download anything native.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

wheels=$FWBENCH_CACHE/wheels
prefix=$FWBENCH_PREFIX
mkdir -p "$wheels" "$prefix"
jobs=$(nproc 2>/dev/null || echo 2)

# fetch_wheel NAME VERSION: make sure one wheel of NAME==VERSION sits in $wheels; print its path.
fetch_wheel() {
	local name=$1 version=$2 glob
	glob="$wheels/$(echo "$name" | tr - _)-$version-*.whl"
	# shellcheck disable=SC2086
	if ! ls $glob >/dev/null 2>&1; then
		[ $check_only = 1 ] && die "wheel $name==$version is not cached"
		log "downloading $name==$version (pip, cached in $wheels)"
		python3 -m pip download --quiet --no-deps --only-binary=:all: \
			--python-version 3.11 --implementation cp \
			--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
			--platform manylinux_2_25_x86_64 --platform manylinux_2_17_x86_64 \
			--platform manylinux2014_x86_64 \
			-d "$wheels" "$name==$version" >&2 ||
			die "pip could not download $name==$version"
	fi
	# shellcheck disable=SC2086
	ls $glob | head -n 1
}

# unpack WHEEL DEST PATTERN...: extract members of a wheel (a zip) into DEST.
unpack() {
	local whl=$1 dest=$2
	shift 2
	python3 - "$whl" "$dest" "$@" <<'PY'
import fnmatch, os, sys, zipfile
whl, dest, pats = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        if info.is_dir() or not any(fnmatch.fnmatch(info.filename, p) for p in pats):
            continue
        out = os.path.join(dest, info.filename)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out + ".part", "wb") as dst:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                dst.write(b)
        os.replace(out + ".part", out)
PY
}

# ---------------------------------------------------------------- libtorch
provision_torch() {
	if [ -n "${LIBTORCH_DIR:-}" ]; then
		[ -f "$LIBTORCH_DIR/include/torch/csrc/api/include/torch/torch.h" ] ||
			die "LIBTORCH_DIR=$LIBTORCH_DIR has no include/torch/csrc/api/include/torch/torch.h"
		[ -e "$LIBTORCH_DIR/lib/libtorch_cpu.so" ] || die "LIBTORCH_DIR=$LIBTORCH_DIR has no lib/libtorch_cpu.so"
		torch_dir=$LIBTORCH_DIR
		log "libtorch: using existing install $torch_dir"
		return
	fi
	torch_dir=$prefix/libtorch
	if [ -f "$torch_dir/.ok" ]; then
		log "libtorch $TORCH_VERSION: cached in $torch_dir"
		return
	fi
	[ $check_only = 1 ] && die "libtorch $TORCH_VERSION is not provisioned in $torch_dir"
	local whl cudart cupti tmp
	whl=$(fetch_wheel torch "$TORCH_VERSION")
	cudart=$(fetch_wheel nvidia-cuda-runtime "$CUDART_VERSION")
	cupti=$(fetch_wheel nvidia-cuda-cupti "$CUPTI_VERSION")
	tmp=$prefix/.torch.tmp
	rm -rf "$tmp" && mkdir -p "$tmp"
	log "libtorch $TORCH_VERSION: unpacking headers and CPU libraries"
	unpack "$whl" "$tmp" 'torch/include/*' 'torch/lib/libc10.so' 'torch/lib/libtorch_cpu.so' \
		'torch/lib/libtorch.so' 'torch/lib/libgomp.so.1' 'torch/lib/libshm.so'
	unpack "$cudart" "$tmp" '*/lib/libcudart.so.13'
	unpack "$cupti" "$tmp" '*/lib/libcupti.so.13'
	mkdir -p "$tmp/libtorch"
	mv "$tmp/torch/include" "$tmp/libtorch/include"
	mv "$tmp/torch/lib" "$tmp/libtorch/lib"
	find "$tmp/nvidia" -name 'lib*.so.13' -exec mv {} "$tmp/libtorch/lib/" \;
	# The wheel's libtorch.so only adds libtorch_cuda.so (a CUDA build). For linking, -ltorch
	# resolves to this linker script instead; torchrun loads libtorch_cuda.so by name at run
	# time when a CUDA device is asked for.
	mv "$tmp/libtorch/lib/libtorch.so" "$tmp/libtorch/lib/libtorch_cuda_stub.so.orig"
	echo 'INPUT(libtorch_cpu.so)' >"$tmp/libtorch/lib/libtorch.so"
	echo "$TORCH_VERSION" >"$tmp/libtorch/build-version"
	rm -rf "$torch_dir" && mv "$tmp/libtorch" "$torch_dir" && rm -rf "$tmp"
	touch "$torch_dir/.ok"
}

# ---------------------------------------------------------------- TensorFlow C API
tf_symbols=(TF_Version TF_NewGraph TF_SessionRun TF_AddGradientsWithPrefix)

provision_tf() {
	if [ -n "${LIBTENSORFLOW_DIR:-}" ]; then
		[ -f "$LIBTENSORFLOW_DIR/include/tensorflow/c/c_api.h" ] ||
			die "LIBTENSORFLOW_DIR=$LIBTENSORFLOW_DIR has no include/tensorflow/c/c_api.h"
		if [ -f "$LIBTENSORFLOW_DIR/libtensorflow_cc.so.2" ]; then
			# An installed tensorflow Python package: give it the archive layout in the prefix.
			tf_dir=$prefix/libtensorflow-view
			mkdir -p "$tf_dir/lib"
			ln -sfn "$LIBTENSORFLOW_DIR/include" "$tf_dir/include"
			ln -sf "$LIBTENSORFLOW_DIR"/libtensorflow_*.so.2 "$tf_dir/lib/"
			echo 'INPUT(libtensorflow_cc.so.2 libtensorflow_framework.so.2)' >"$tf_dir/lib/libtensorflow.so"
			log "libtensorflow: using the Python package in $LIBTENSORFLOW_DIR"
			return
		fi
		ls "$LIBTENSORFLOW_DIR"/lib/libtensorflow.so* >/dev/null 2>&1 ||
			die "LIBTENSORFLOW_DIR=$LIBTENSORFLOW_DIR has no lib/libtensorflow.so*"
		tf_dir=$LIBTENSORFLOW_DIR
		log "libtensorflow: using existing install $tf_dir"
		return
	fi
	tf_dir=$prefix/libtensorflow
	if [ -f "$tf_dir/.ok" ]; then
		log "libtensorflow $TF_VERSION: cached in $tf_dir"
		return
	fi
	[ $check_only = 1 ] && die "libtensorflow $TF_VERSION is not provisioned in $tf_dir"
	local whl tmp sym
	whl=$(fetch_wheel tensorflow-cpu "$TF_VERSION")
	tmp=$prefix/.tf.tmp
	rm -rf "$tmp" && mkdir -p "$tmp"
	log "libtensorflow $TF_VERSION: unpacking the C API from the tensorflow-cpu wheel"
	unpack "$whl" "$tmp" 'tensorflow/include/*' 'tensorflow/libtensorflow_cc.so.2' 'tensorflow/libtensorflow_framework.so.2'
	mkdir -p "$tmp/libtensorflow/lib"
	mv "$tmp/tensorflow/include" "$tmp/libtensorflow/include"
	mv "$tmp"/tensorflow/libtensorflow_*.so.2 "$tmp/libtensorflow/lib/"
	# The wheel's libraries export the C API (TF Java builds on them): most of it in
	# libtensorflow_cc.so.2, the TF_Status/TF_Tensor basics in libtensorflow_framework.so.2.
	# The Go binding links -ltensorflow, so that name is a linker script naming both.
	nm -D --defined-only "$tmp"/libtensorflow/lib/libtensorflow_*.so.2 >"$tmp/symbols"
	for sym in "${tf_symbols[@]}"; do
		grep -q " T $sym@" "$tmp/symbols" ||
			die "libtensorflow_cc.so.2 from tensorflow-cpu $TF_VERSION does not export $sym"
	done
	echo 'INPUT(libtensorflow_cc.so.2 libtensorflow_framework.so.2)' >"$tmp/libtensorflow/lib/libtensorflow.so"
	echo "$TF_VERSION" >"$tmp/libtensorflow/build-version"
	rm -rf "$tf_dir" && mv "$tmp/libtensorflow" "$tf_dir" && rm -rf "$tmp"
	touch "$tf_dir/.ok"
}

# ---------------------------------------------------------------- gotorch's C++ layer
build_cgotorch() {
	local src key out objs f
	(cd "$root" && go mod download github.com/wangkuiyi/gotorch)
	src=$(cd "$root" && go list -m -f '{{.Dir}}' github.com/wangkuiyi/gotorch)/cgotorch
	[ -d "$src" ] || die "gotorch sources not found in the Go module cache ($src)"
	# The library depends on the gotorch version, the libtorch it is compiled against and our patch.
	key=$( (echo "$GOTORCH_VERSION"; cat "$torch_dir/build-version" 2>/dev/null || echo "$torch_dir"; cat "$here/cgotorch.patch.h") | sha256sum | cut -c1-12)
	cgotorch_dir=$prefix/cgotorch-$key
	if [ -f "$cgotorch_dir/libcgotorch.so" ]; then
		log "gotorch C++ layer: cached in $cgotorch_dir"
		return
	fi
	[ $check_only = 1 ] && die "gotorch's C++ layer is not built in $cgotorch_dir"
	out=$cgotorch_dir.tmp
	rm -rf "$out" && mkdir -p "$out/include/cgotorch"
	cp "$src"/*.h "$out/include/cgotorch/"
	chmod -R u+w "$out"
	log "gotorch C++ layer: compiling $(ls "$src"/*.cc | wc -l) files against libtorch (-std=c++17, $jobs jobs)"
	objs=()
	for f in "$src"/*.cc; do
		objs+=("$out/$(basename "${f%.cc}").o")
		g++ -std=c++17 -O2 -fPIC -w -D_GLIBCXX_USE_CXX11_ABI=1 \
			-include "$here/cgotorch.patch.h" \
			-I "$out/include" -I "$torch_dir/include" -I "$torch_dir/include/torch/csrc/api/include" \
			-c "$f" -o "$out/$(basename "${f%.cc}").o" &
		while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
	done
	wait
	for f in "${objs[@]}"; do [ -f "$f" ] || die "compiling gotorch's $(basename "${f%.o}").cc failed"; done
	g++ -shared -o "$out/libcgotorch.so" "${objs[@]}" \
		-L "$torch_dir/lib" -Wl,-rpath,"$torch_dir/lib" -lc10 -ltorch_cpu
	rm -f "$out"/*.o
	rm -rf "$cgotorch_dir" && mv "$out" "$cgotorch_dir"
}

# ---------------------------------------------------------------- torchrun's NCCL plugin
# build_nccl_plugin SITE: compile torchrun/nccl/plugin.cc against the CUDA torch in SITE into
# $cgotorch_dir/libfwbench_nccl.so (see torchrun/ncclplugin.h). Its libraries are linked by name
# and resolve, at run time, to those libtorch_cuda.so has already loaded.
build_nccl_plugin() {
	local site=$1 key hdr tmp f pin
	for f in torch/include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp torch/lib/libtorch_cuda.so \
		nvidia/cu13/include/cuda_runtime_api.h nvidia/cu13/include/cublas_v2.h nvidia/nccl/include/nccl.h; do
		[ -e "$site/$f" ] || die "FWBENCH_NCCL_SITE=$site has no $f: it must hold torch==$TORCH_VERSION (CUDA 13) with its nvidia-* wheels"
	done
	grep -q "^__version__ = '$TORCH_VERSION" "$site/torch/version.py" ||
		die "FWBENCH_NCCL_SITE=$site holds torch $(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$site/torch/version.py"), not $TORCH_VERSION"
	# The NCCL headers must be those torch was built with: the nvidia-nccl-cu13 it pins, alone.
	pin=$(sed -n 's/^Requires-Dist: nvidia-nccl-cu13==\([0-9.]*\).*/\1/p' "$site"/torch-*.dist-info/METADATA | head -n 1)
	[ -n "$pin" ] && [ -d "$site/nvidia_nccl_cu13-$pin.dist-info" ] ||
		die "FWBENCH_NCCL_SITE=$site: torch pins nvidia-nccl-cu13==${pin:-?}, the site has $(cd "$site" && echo nvidia_nccl_cu1*.dist-info)"
	if ls -d "$site"/nvidia_nccl_cu12-*.dist-info >/dev/null 2>&1; then
		die "FWBENCH_NCCL_SITE=$site also holds nvidia-nccl-cu12 (tensorflow[and-cuda]'s), whose nccl.h and libnccl.so.2 overwrite torch's: use a venv with torch alone"
	fi
	key=$( (cat "$root/torchrun/nccl/plugin.cc" "$root/torchrun/ncclplugin.h" "$site/nvidia/nccl/include/nccl.h" "$site/torch/version.py"; echo "$CUDA_CRT_VERSION $CUDA_CCCL_VERSION") | sha256sum | cut -c1-12)
	if [ "$(cat "$cgotorch_dir/nccl.key" 2>/dev/null)" = "$key" ]; then
		log "NCCL plugin: cached in $cgotorch_dir"
		return
	fi
	[ $check_only = 1 ] && die "the NCCL plugin is not built in $cgotorch_dir"
	hdr=$prefix/cuda-headers-crt$CUDA_CRT_VERSION-cccl$CUDA_CCCL_VERSION
	if [ ! -f "$hdr/.ok" ]; then
		tmp=$hdr.tmp
		rm -rf "$tmp" && mkdir -p "$tmp"
		unpack "$(fetch_wheel nvidia-cuda-crt "$CUDA_CRT_VERSION")" "$tmp" 'nvidia/cu13/include/*'
		unpack "$(fetch_wheel nvidia-cuda-cccl "$CUDA_CCCL_VERSION")" "$tmp" 'nvidia/cu13/include/*'
		rm -rf "$hdr" && mv "$tmp/nvidia/cu13/include" "$hdr" && rm -rf "$tmp"
		touch "$hdr/.ok"
	fi
	log "NCCL plugin: compiling against $site"
	g++ -std=c++17 -O2 -fPIC -shared -w -D_GLIBCXX_USE_CXX11_ABI=1 -fvisibility=hidden \
		-I "$site/torch/include" -I "$site/torch/include/torch/csrc/api/include" \
		-I "$site/nvidia/cu13/include" -I "$hdr" -I "$hdr/cccl" -I "$site/nvidia/nccl/include" \
		-o "$cgotorch_dir/libfwbench_nccl.so.tmp" "$root/torchrun/nccl/plugin.cc" \
		-L "$site/torch/lib" -L "$site/nvidia/nccl/lib" -ltorch_cuda -lc10_cuda -ltorch_cpu -lc10 -l:libnccl.so.2 ||
		die "compiling the NCCL plugin failed"
	mv "$cgotorch_dir/libfwbench_nccl.so.tmp" "$cgotorch_dir/libfwbench_nccl.so"
	echo "$key" >"$cgotorch_dir/nccl.key"
}

# ---------------------------------------------------------------- HDF5 (package keras)
# keras/ links the HDF5 C library through cgo (`#cgo pkg-config: hdf5`): Debian's and Ubuntu's
# libhdf5-dev, found with pkg-config. As root on Debian/Ubuntu it is installed with apt-get.
provision_hdf5() {
	if pkg-config --exists hdf5 2>/dev/null; then
		log "HDF5 $(pkg-config --modversion hdf5): found by pkg-config"
		return
	fi
	[ $check_only = 1 ] && die "the HDF5 C library is not installed (Debian/Ubuntu: apt-get install libhdf5-dev pkg-config)"
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		log "HDF5: installing libhdf5-dev and pkg-config (apt-get)"
		apt-get install -y -q --no-install-recommends libhdf5-dev pkg-config >/dev/null 2>&1 ||
			(apt-get update -q >/dev/null 2>&1 &&
				apt-get install -y -q --no-install-recommends libhdf5-dev pkg-config >/dev/null) ||
			die "apt-get could not install libhdf5-dev and pkg-config"
	else
		die "the HDF5 C library is missing: install libhdf5-dev and pkg-config (Debian/Ubuntu, as root) and run setup.sh again"
	fi
	pkg-config --exists hdf5 || die "libhdf5-dev is installed but pkg-config does not find hdf5"
}

# cuda_venv NAME REQUIREMENT...: a venv $prefix/cuda-venv-NAME holding REQUIREMENT...; prints
# its site-packages.
cuda_venv() {
	local venv=$prefix/cuda-venv-$1
	shift
	if [ ! -f "$venv/.ok" ]; then
		[ $check_only = 1 ] && die "the CUDA venv is not provisioned in $venv"
		log "CUDA variant: installing $* into $venv"
		python3 -m venv "$venv"
		"$venv/bin/pip" install --quiet "$@" >&2 || die "pip could not install $* into $venv"
		touch "$venv/.ok"
	fi
	"$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

if [ "${FWBENCH_VARIANT:-cpu}" = cuda ]; then
	# One venv each: torch's nvidia-nccl-cu13 and tensorflow[and-cuda]'s nvidia-nccl-cu12 both
	# install nvidia/nccl/include/nccl.h and nvidia/nccl/lib/libnccl.so.2, so in one venv the
	# second overwrites the first's (and torch would load an NCCL it was not built with).
	torch_site=$(cuda_venv torch "torch==$TORCH_VERSION")
	tf_site=$(cuda_venv tf "tensorflow[and-cuda]==$TF_VERSION")
	LIBTORCH_DIR=$torch_site/torch
	LIBTENSORFLOW_DIR=$tf_site/tensorflow
	FWBENCH_NCCL_SITE=${FWBENCH_NCCL_SITE:-$torch_site}
fi

provision_hdf5
provision_torch
provision_tf
build_cgotorch
[ -n "${FWBENCH_NCCL_SITE:-}" ] && build_nccl_plugin "$FWBENCH_NCCL_SITE"

# Record what env.sh exports: one small file, so sourcing it costs nothing.
cat >"$FWBENCH_CACHE/env.current" <<EOF
FWBENCH_TORCH_DIR=$torch_dir
FWBENCH_TF_DIR=$tf_dir
FWBENCH_CGOTORCH_DIR=$cgotorch_dir
EOF

if [ $check_only = 1 ]; then
	log "everything is provisioned"
	exit 0
fi

if [ "${SKIP_BUILD:-0}" != 1 ]; then
	# shellcheck source=env.sh
	. "$here/env.sh"
	log "building bin/fwbench"
	(cd "$root" && go build -o bin/fwbench ./cmd/fwbench)
fi
log "done: libtorch=$torch_dir libtensorflow=$tf_dir"
