# Sourceable: exports what `go build`, `go test` and bin/fwbench need to find the native
# runtimes that scripts/setup.sh provisioned.   . scripts/env.sh && go test ./...
_fwb_here=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)
. "$_fwb_here/versions.sh"
if [ ! -f "$FWBENCH_CACHE/env.current" ]; then
	echo "env.sh: the native runtimes are not provisioned; run scripts/setup.sh first" >&2
	return 1 2>/dev/null || exit 1
fi
. "$FWBENCH_CACHE/env.current"
export FWBENCH_TORCH_DIR FWBENCH_TF_DIR FWBENCH_CGOTORCH_DIR
export CGO_ENABLED=1
export CGO_CFLAGS="-I$FWBENCH_TF_DIR/include -I$FWBENCH_CGOTORCH_DIR/include ${FWBENCH_EXTRA_CFLAGS:-}"
export CGO_CXXFLAGS="-std=c++17 -O2 -D_GLIBCXX_USE_CXX11_ABI=1 -I$FWBENCH_TORCH_DIR/include -I$FWBENCH_TORCH_DIR/include/torch/csrc/api/include -I$FWBENCH_CGOTORCH_DIR/include -w"
export CGO_LDFLAGS="-L$FWBENCH_TF_DIR/lib -Wl,-rpath,$FWBENCH_TF_DIR/lib -L$FWBENCH_TORCH_DIR/lib -Wl,-rpath,$FWBENCH_TORCH_DIR/lib -L$FWBENCH_CGOTORCH_DIR -Wl,-rpath,$FWBENCH_CGOTORCH_DIR"
export LD_LIBRARY_PATH="$FWBENCH_TF_DIR/lib:$FWBENCH_TORCH_DIR/lib:$FWBENCH_CGOTORCH_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
unset _fwb_here
