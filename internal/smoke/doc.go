// Package smoke holds the foundation's smoke tests: one real backward pass through
// libtorch (via gotorch), one real SGD step through the TensorFlow C API (via the galeone Go
// binding), and a check that both runtimes can share one process, in either order.
//
// It needs both native libraries (scripts/setup.sh, then . scripts/env.sh). It has no code of
// its own beyond the tests; fwbench's drivers live in torchrun and tfrun.
package smoke
