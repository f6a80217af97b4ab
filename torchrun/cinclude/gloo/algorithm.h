// Stands in for gloo/algorithm.h, which libtorch does not ship: see gloo/fwbench_decl.h.
#pragma once
#include <gloo/fwbench_decl.h>
