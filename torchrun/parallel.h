// parallel.h: the C++-only interface between shim.cc (the model and its
// training step) and parallel.cc (c10d: the process group and the gradient
// reducer). Go sees tr_group and the tr_group_* functions through shim.h.
#ifndef TORCHRUN_PARALLEL_H
#define TORCHRUN_PARALLEL_H

#include <ATen/ATen.h>

#include <memory>
#include <vector>

#include "shim.h"

#include <string>

namespace trddp {

// message returns s as an error message for tr_free_error (shim.cc).
const char *message(const std::string &s);

// cuda_unavailable loads libtorch_cuda.so (once per process) and returns why
// CUDA cannot be used, or "" (shim.cc).
const std::string &cuda_unavailable();

// Reducer averages the gradients of a set of parameters over the ranks of a
// process group, as torch DDP's Reducer does: buckets in reverse parameter
// order, all-reduced as soon as their last gradient is accumulated during the
// backward pass (in bucket order on every rank), each gradient multiplied by
// 1/world size on its way into the bucket and summed by the all-reduce.
class Reducer;

// make_reducer registers a post-accumulate-grad hook on each of params (the
// trainable parameters, in layer order) that feeds the group's reducer.
std::shared_ptr<Reducer> make_reducer(tr_group *g, const std::vector<at::Tensor> &params);

// begin arms the hooks for one backward pass; finish launches what the
// backward pass left (a bucket with a parameter that got no gradient: zeros
// for it, as DDP's unused parameters), waits for every all-reduce, writes the
// averaged gradients back and returns the seconds it spent waiting. Both
// throw on failure (a peer lost, a timeout).
void begin(Reducer &r);
double finish(Reducer &r);

}  // namespace trddp

#endif
