// Stands in for gloo/context.h, which libtorch does not ship: see gloo/fwbench_decl.h.
#pragma once
#include <gloo/fwbench_decl.h>
